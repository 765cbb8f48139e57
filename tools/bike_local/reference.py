"""The reference rows and the feature records built from them.

tests/fixtures/reference.json holds 2,000 real rows (models/bike-demand/README.md) with the
predictions the Python onnxruntime gives for them: an independent reference for the function's
predictions. Record `pred_id` i carries the features of row i mod 2000, so what comes out for
any pred_id is known without trusting the function; that is what scripts/data_in.sh N puts,
what scripts/make-event.py N wraps in an event and what the tests check against.
"""

import functools
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
"""The repository (the package is installed editable, so its files stay in tools/)."""
PATH = ROOT / "tests/fixtures/reference.json"
MODEL = "bike-demand"
"""The bundled model, whose predictions the reference holds with those of others."""
REL_TOL = 1e-4
"""How far a prediction may be from the reference, relatively (float32 inference)."""


@functools.cache
def load() -> dict:
    """The reference file: `columns`, `rows` and, per model, `models[name]` predictions."""
    return json.loads(PATH.read_text())


def rows() -> list[list]:
    """The reference rows, each in the order of `load()["columns"]`."""
    return load()["rows"]


def prediction(row: int, model: str = MODEL) -> float:
    """The Python onnxruntime's prediction for reference row `row` (independent of us)."""
    return load()["models"][model][row]


def expected(pred_id: int, model: str = MODEL) -> float:
    """The prediction for the record with `pred_id`, which carries row pred_id mod 2000."""
    predictions = load()["models"][model]
    return predictions[pred_id % len(predictions)]


def features(row: int) -> dict:
    """The features of reference row `row`, by column name."""
    return dict(zip(load()["columns"], rows()[row]))


def feature_record(row: int, pred_id: int) -> tuple[bytes, str]:
    """A record as the producers write it: (data, partition key), the data
    `{"features": {...}, "pred_id": pred_id}` in JSON with the features of row `row`, and
    the partition key str(pred_id)."""
    data = json.dumps({"features": features(row), "pred_id": pred_id}).encode()
    return data, str(pred_id)


def feature_records(count: int) -> list[tuple[bytes, str]]:
    """Records 0..count-1, record i with pred_id i and the features of row i mod 2000: what
    scripts/data_in.sh N puts."""
    return [feature_record(pred_id % len(rows()), pred_id) for pred_id in range(count)]
