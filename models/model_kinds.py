"""Train one small model of each kind the service should serve, saved by MLflow itself.

Uses the rows, the input mapping (t1, t2, hum, weather_code) and the training/held-out split
of models/train.py, trains a small model of each kind below, converts it to ONNX and saves it
with the real ``mlflow.onnx.save_model(onnx_model, path, signature=infer_signature(...))``.
The kinds differ in what the service has to handle: the ONNX converter (skl2onnx,
onnxmltools for LightGBM and XGBoost), one [N, 4] input or one [N, 1] input per column,
float, double, int64 and string inputs, column-based or tensor-based signatures, an optional
column, and classifiers with a ZipMap or with plain tensor outputs.

  lightgbm-regressor    LGBMRegressor, input float [N, 4]; signature: double columns
  columns-float-string  Ridge pipeline, inputs t1, t2, hum float [N, 1], weather string [N, 1]
  columns-int-double    Ridge pipeline, inputs t1, t2 double [N, 1], hum, weather_code int64 [N, 1]
  classifier-zipmap     LogisticRegression, labels low/medium/high, ZipMap probabilities
  classifier-tensor     GradientBoostingClassifier, labels 0/1/2, probabilities float [N, 3]
  tensor-signature      Ridge on a float32 array; signature: tensor float32 [-1, 4], no names
  optional-column       per-column float pipeline imputing hum; signature: hum not required
  xgboost-classifier    XGBClassifier, labels 0/1/2, probabilities float [N, 3]
  lightgbm-large        LGBMRegressor of 100 trees of 31 leaves, input float [N, 4]
  random-forest         RandomForestRegressor of 100 trees of depth 6 at most, input float [N, 4]
  xgboost-regressor     XGBRegressor of 50 trees of depth 4, input float [N, 4]

Writes, relative to the repository root:
  tests/fixtures/model-kinds/<kind>/         each model directory as mlflow.onnx.save_model
                                             writes it (MLmodel, model.onnx, conda.yaml,
                                             python_env.yaml, requirements.txt)
  tests/fixtures/model-kinds/reference.json  per kind, 200 held-out rows: the JSON payload a
                                             producer sends and Python onnxruntime's output

So that a re-run reproduces every file byte for byte, the MLmodel files lose
``utc_time_created`` and get a ``model_uuid`` derived from the ONNX bytes (as
models/model_dir.py does), and the opsets in each model.onnx are listed in sorted order.

Run it through ``bash models/make_model_kinds.sh``, which prepares the environment and the data.
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import warnings
from pathlib import Path

import lightgbm
import mlflow
import mlflow.onnx
import mlflow.pyfunc
import numpy as np
import onnx
import onnxmltools
import onnxruntime
import pandas as pd
import skl2onnx
import xgboost
from mlflow.models import infer_signature
from onnxmltools.convert.common.data_types import FloatTensorType as MlToolsFloatTensorType
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from train import FEATURES, REPO_ROOT, SEED, TARGET_OPSET, WEATHER_CODES, load_dataset

OUTPUT_DIR = REPO_ROOT / "tests" / "fixtures" / "model-kinds"
REFERENCE_FILE = OUTPUT_DIR / "reference.json"
ONNX_FILE = "model.onnx"
"""Name mlflow.onnx.save_model gives the graph inside a model directory."""

REFERENCE_ROWS = 200
"""Held-out rows per kind in reference.json (the first ones in file order)."""

ONNXMLTOOLS_OPSET = 15
"""Opset of the LightGBM and XGBoost conversions: the highest onnxmltools 1.16 supports."""

MAX_ONNX_BYTES = 500_000
"""Largest model.onnx a fixture may be (the large tree models are the largest)."""
PYFUNC_RTOL = 1e-5

WEATHER_NAMES = {code: name for name, code in WEATHER_CODES.items()}
"""weather_code -> weathersit category name (the string column of columns-float-string)."""

DEMAND_LEVELS = ("low", "medium", "high")
"""String labels of classifier-zipmap: bikers below, between and above the training terciles."""

MISSING_HUM_FRACTION = 0.1
"""Share of optional-column's training rows with hum NaN (so the signature marks it optional)."""

MISSING_HUM_EVERY = 4
"""In optional-column's reference records, every 4th row (from the first) omits hum."""


@dataclasses.dataclass
class Kind:
    """One trained model of one kind, converted to ONNX, with the frames that describe it."""

    name: str
    onnx_model: onnx.ModelProto
    signature: object
    frame: pd.DataFrame
    """The reference rows in the dtypes of the signature (or a float32 array for a tensor one)."""
    task: str
    """"regressor" or "classifier"."""
    native: object = None
    """The trained estimator, to compare its own predictions with onnxruntime's."""
    missing: dict = dataclasses.field(default_factory=dict)
    """Column -> boolean mask of the reference rows whose payload omits that column."""


def decimal_columns(data):
    """The four inputs of every row, as the decimals a producer would send.

    train.py holds them as float32; each value here is the shortest decimal that parses back
    to that float32 (9.84, not 9.84000015258789), as float64. So a payload carrying it feeds
    a float32 input exactly train.py's value. hum and weather_code are whole numbers.
    """
    columns = {}
    for i, name in enumerate(FEATURES):
        columns[name] = np.array([float(str(v)) for v in data.x[:, i]], dtype=np.float64)
        if not np.array_equal(columns[name].astype(np.float32), data.x[:, i]):
            raise SystemExit(f"{name}: decimals do not round-trip to train.py's float32 values")
    for name in ("hum", "weather_code"):
        if not np.array_equal(columns[name], np.rint(columns[name])):
            raise SystemExit(f"{name}: expected whole numbers")
    return pd.DataFrame(columns)


def demand_levels(y, train):
    """0, 1 or 2 for each row: bikers below, between or above the terciles of the training rows."""
    cuts = np.quantile(y[train], [1 / 3, 2 / 3])
    return np.searchsorted(cuts, y, side="right")


def tidy(model):
    """Check a converted model and list its opsets once each, in sorted order.

    skl2onnx lists the opsets in set order, which changes with Python's hash seed, and
    lists the default domain twice for a bare Ridge.
    """
    opsets = sorted({(opset.domain, opset.version) for opset in model.opset_import})
    domains = [domain for domain, _ in opsets]
    if len(set(domains)) != len(domains):
        raise SystemExit(f"{model.graph.name}: two versions of one opset domain: {opsets}")
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onnx.checker.check_model(model, full_check=True)
    return model


def columns_inputs(frame, types):
    """skl2onnx initial_types with one [N, 1] input per column of ``frame``."""
    return [(name, types[name]([None, 1])) for name in frame.columns]


# --- the kinds --------------------------------------------------------------------------


def lightgbm_regressor(frame, y, train, ref, name="lightgbm-regressor", trees=50, leaves=15):
    """LGBMRegressor on the four inputs; a double-column signature over a float32 [N, 4] input."""
    x = frame[list(FEATURES)]
    model = lightgbm.LGBMRegressor(
        n_estimators=trees,
        num_leaves=leaves,
        random_state=SEED,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(x.iloc[train], y[train])
    onnx_model = onnxmltools.convert_lightgbm(
        model,
        name=name,
        initial_types=[("input", MlToolsFloatTensorType([None, len(FEATURES)]))],
        target_opset=ONNXMLTOOLS_OPSET,
    )
    return Kind(
        name,
        tidy(onnx_model),
        infer_signature(x.iloc[train], y[train]),
        x.iloc[ref],
        "regressor",
        model,
    )


def lightgbm_large(frame, y, train, ref):
    """LGBMRegressor of 100 trees of 31 leaves, LightGBM's default tree size: deep, unbalanced
    trees."""
    return lightgbm_regressor(frame, y, train, ref, name="lightgbm-large", trees=100, leaves=31)


def random_forest(frame, y, train, ref):
    """RandomForestRegressor of 100 trees of depth 6 at most, converted by skl2onnx."""
    x = frame[list(FEATURES)].astype(np.float32)
    model = RandomForestRegressor(
        n_estimators=100, max_depth=6, min_samples_leaf=3, random_state=SEED, n_jobs=1
    )
    model.fit(x.iloc[train].to_numpy(), y[train])
    onnx_model = skl2onnx.convert_sklearn(
        model,
        name="random-forest",
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        target_opset=TARGET_OPSET,
    )
    return Kind(
        "random-forest",
        tidy(onnx_model),
        infer_signature(x.iloc[train], y[train]),
        x.iloc[ref],
        "regressor",
        model,
    )


def xgboost_regressor(frame, y, train, ref):
    """XGBRegressor of 50 trees of depth 4, converted by onnxmltools."""
    model = xgboost.XGBRegressor(
        n_estimators=50,
        max_depth=4,
        learning_rate=0.3,
        random_state=SEED,
        n_jobs=1,
        tree_method="hist",
    )
    return xgboost_kind("xgboost-regressor", model, frame, y, train, ref, "regressor")


def columns_ridge(name, x, category, types, y, train, ref):
    """Ridge on ``x`` (t1, t2, hum scaled, ``category`` one-hot encoded), converted with one
    ONNX input per column of the element types ``types``."""
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["t1", "t2", "hum"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), [category]),
                    ]
                ),
            ),
            ("reg", Ridge()),
        ]
    )
    pipeline.fit(x.iloc[train], y[train])
    onnx_model = skl2onnx.convert_sklearn(
        pipeline,
        name=name,
        initial_types=columns_inputs(x, types),
        target_opset=TARGET_OPSET,
    )
    return Kind(
        name,
        tidy(onnx_model),
        infer_signature(x.iloc[train], y[train]),
        x.iloc[ref],
        "regressor",
        pipeline,
    )


def columns_float_string(frame, y, train, ref):
    """Ridge pipeline on float32 t1, t2, hum and the string weather, one ONNX input per column."""
    x = pd.DataFrame(
        {
            "t1": frame["t1"].astype(np.float32),
            "t2": frame["t2"].astype(np.float32),
            "hum": frame["hum"].astype(np.float32),
            "weather": frame["weather_code"].astype(np.int64).map(WEATHER_NAMES),
        }
    )
    types = {
        "t1": FloatTensorType,
        "t2": FloatTensorType,
        "hum": FloatTensorType,
        "weather": StringTensorType,
    }
    return columns_ridge("columns-float-string", x, "weather", types, y, train, ref)


def columns_int_double(frame, y, train, ref):
    """Ridge pipeline on double t1, t2 and int64 hum, weather_code, one ONNX input per column."""
    x = pd.DataFrame(
        {
            "t1": frame["t1"],
            "t2": frame["t2"],
            "hum": frame["hum"].astype(np.int64),
            "weather_code": frame["weather_code"].astype(np.int64),
        }
    )
    types = {
        "t1": DoubleTensorType,
        "t2": DoubleTensorType,
        "hum": Int64TensorType,
        "weather_code": Int64TensorType,
    }
    return columns_ridge("columns-int-double", x, "weather_code", types, y, train, ref)


def classifier_zipmap(frame, levels, train, ref):
    """LogisticRegression with string labels, skl2onnx's default ZipMap probabilities."""
    x = frame[list(FEATURES)].astype(np.float32)
    labels = np.array(DEMAND_LEVELS)[levels]
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    pipeline.fit(x.iloc[train], labels[train])
    onnx_model = skl2onnx.convert_sklearn(
        pipeline,
        name="classifier-zipmap",
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        target_opset=TARGET_OPSET,
    )
    return Kind(
        "classifier-zipmap",
        tidy(onnx_model),
        infer_signature(x.iloc[train], labels[train]),
        x.iloc[ref],
        "classifier",
        pipeline,
    )


def classifier_tensor(frame, levels, train, ref):
    """GradientBoostingClassifier with labels 0, 1, 2 and no ZipMap: probabilities float [N, 3]."""
    x = frame[list(FEATURES)]
    classifier = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=SEED)
    classifier.fit(x.iloc[train].to_numpy(np.float32), levels[train])
    onnx_model = skl2onnx.convert_sklearn(
        classifier,
        name="classifier-tensor",
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return Kind(
        "classifier-tensor",
        tidy(onnx_model),
        infer_signature(x.iloc[train], levels[train]),
        x.iloc[ref],
        "classifier",
        classifier,
    )


def tensor_signature(frame, y, train, ref):
    """Ridge trained on a float32 array; the signature is a tensor spec without column names."""
    x = frame[list(FEATURES)].to_numpy(np.float32)
    model = Ridge().fit(x[train], y[train])
    onnx_model = skl2onnx.convert_sklearn(
        model,
        name="tensor-signature",
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        target_opset=TARGET_OPSET,
    )
    return Kind(
        "tensor-signature",
        tidy(onnx_model),
        infer_signature(x[train], y[train]),
        x[ref],
        "regressor",
        model,
    )


def optional_column(frame, y, train, ref):
    """Per-column float pipeline imputing hum, trained with some hum missing (NaN)."""
    x = frame[list(FEATURES)].astype(np.float32)
    rng = np.random.default_rng(SEED)
    training = x.iloc[train].copy()
    training.loc[rng.random(len(training)) < MISSING_HUM_FRACTION, "hum"] = np.nan
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["t1", "t2"]),
                        (
                            "hum",
                            Pipeline(
                                [
                                    ("impute", SimpleImputer(strategy="median")),
                                    ("scale", StandardScaler()),
                                ]
                            ),
                            ["hum"],
                        ),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["weather_code"]),
                    ]
                ),
            ),
            ("reg", Ridge()),
        ]
    )
    pipeline.fit(training, y[train])
    onnx_model = skl2onnx.convert_sklearn(
        pipeline,
        name="optional-column",
        initial_types=columns_inputs(x, dict.fromkeys(FEATURES, FloatTensorType)),
        target_opset=TARGET_OPSET,
    )
    signature = infer_signature(training, y[train])
    hum = next(spec for spec in signature.inputs.inputs if spec.name == "hum")
    if hum.required:
        raise SystemExit("optional-column: infer_signature did not mark hum as not required")
    rows = x.iloc[ref].copy()
    missing = np.arange(len(rows)) % MISSING_HUM_EVERY == 0
    rows.loc[missing, "hum"] = np.nan
    return Kind(
        "optional-column",
        tidy(onnx_model),
        signature,
        rows,
        "regressor",
        pipeline,
        missing={"hum": missing},
    )


def xgboost_classifier(frame, levels, train, ref):
    """XGBClassifier with labels 0, 1, 2, converted by onnxmltools."""
    classifier = xgboost.XGBClassifier(
        n_estimators=30,
        max_depth=3,
        learning_rate=0.3,
        random_state=SEED,
        n_jobs=1,
        tree_method="hist",
    )
    return xgboost_kind("xgboost-classifier", classifier, frame, levels, train, ref, "classifier")


def xgboost_kind(name, model, frame, target, train, ref, task):
    """``model`` (an XGBoost estimator) trained on the four inputs as float32 and converted by
    onnxmltools."""
    x = frame[list(FEATURES)].astype(np.float32)
    # Trained on the bare array: onnxmltools maps the trees' features by the names f0, f1, ...
    model.fit(x.iloc[train].to_numpy(), target[train])
    onnx_model = onnxmltools.convert_xgboost(
        model,
        name=name,
        initial_types=[("input", MlToolsFloatTensorType([None, len(FEATURES)]))],
        target_opset=ONNXMLTOOLS_OPSET,
    )
    return Kind(
        name,
        tidy(onnx_model),
        infer_signature(x.iloc[train], target[train]),
        x.iloc[ref],
        task,
        model,
    )


# --- saving -----------------------------------------------------------------------------


def save(kind):
    """Save ``kind`` with mlflow.onnx.save_model, then pin the MLmodel's run-dependent fields."""
    directory = OUTPUT_DIR / kind.name
    shutil.rmtree(directory, ignore_errors=True)
    mlflow.onnx.save_model(kind.onnx_model, directory, signature=kind.signature)
    onnx_bytes = (directory / ONNX_FILE).read_bytes()
    if len(onnx_bytes) > MAX_ONNX_BYTES:
        raise SystemExit(f"{kind.name}: model.onnx is {len(onnx_bytes)} bytes")
    files = sorted(p.name for p in directory.iterdir())
    mlmodel = directory / "MLmodel"
    text = mlmodel.read_text()
    text, dropped = re.subn(r"(?m)^utc_time_created: .*\n", "", text)
    uuid = hashlib.sha256(onnx_bytes).hexdigest()[:32]
    text, replaced = re.subn(r"(?m)^model_uuid: .*$", f"model_uuid: {uuid}", text)
    if (dropped, replaced) != (1, 1):
        raise SystemExit(f"{kind.name}: MLmodel has no utc_time_created or model_uuid line")
    mlmodel.write_text(text)
    return directory, files


# --- reference outputs ------------------------------------------------------------------


def session(directory):
    """onnxruntime's CPU session on a saved model.onnx, one thread for repeatable sums."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"]
    )


ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(string)": object,
}


def feeds(sess, rows):
    """The ONNX inputs for ``rows``, each in the dtype and rank the graph declares.

    One input of width 4 takes the rows whole; one input per column takes an [N, 1] column.
    """
    inputs = sess.get_inputs()
    if isinstance(rows, np.ndarray) or len(inputs) == 1:
        (single,) = inputs
        values = rows if isinstance(rows, np.ndarray) else rows.to_numpy()
        return {single.name: values.astype(ORT_DTYPES[single.type])}
    return {
        i.name: rows[i.name].to_numpy().astype(ORT_DTYPES[i.type]).reshape(-1, 1) for i in inputs
    }


def class_labels(model):
    """The classlabels attribute of the graph's classifier node, and which node holds it."""
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_strings", "classlabels_int64s"):
                values = onnx.helper.get_attribute_value(attribute)
                values = [v.decode() if isinstance(v, bytes) else int(v) for v in values]
                return values, f"{node.op_type} {node.name!r} {attribute.name}"
    raise SystemExit(f"{model.graph.name}: no classifier node with classlabels")


def json_scalar(value):
    """A numpy scalar as the JSON value of its kind: float, int or string."""
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(value)


def expected_outputs(kind, directory):
    """onnxruntime's output for each reference row, in the shape reference.json gives it."""
    sess = session(directory)
    results = sess.run(None, feeds(sess, kind.frame))
    names = [o.name for o in sess.get_outputs()]
    if kind.task == "regressor":
        (values,) = results
        values = values.reshape(len(values), -1)
        return [
            {"value": float(row[0]) if len(row) == 1 else [float(v) for v in row]} for row in values
        ]
    # skl2onnx's ZipMap outputs are output_label and output_probability; without ZipMap
    # skl2onnx and onnxmltools name them label and probabilities.
    labels, probabilities = (
        results[next(names.index(n) for n in candidates if n in names)]
        for candidates in (("output_label", "label"), ("output_probability", "probabilities"))
    )
    classes, _ = class_labels(onnx.load(directory / ONNX_FILE))
    outputs = []
    for label, row in zip(labels, probabilities, strict=True):
        if isinstance(row, dict):
            probs = {str(k): float(v) for k, v in row.items()}
        else:
            probs = {str(c): float(v) for c, v in zip(classes, row, strict=True)}
        outputs.append({"label": json_scalar(label), "probabilities": probs})
    return outputs


def records(kind, pred_ids):
    """The payload a producer sends for each reference row.

    Each value has the JSON type of its signature column: a string, an integer (long) or a
    number (float, double). A float32 value is written as the shortest decimal that parses
    back to it (9.84, not 9.84000015258789), as a producer would send it.
    """
    if isinstance(kind.frame, np.ndarray):
        return [
            {"features": [float(str(v)) for v in row], "pred_id": int(pred_id)}
            for row, pred_id in zip(kind.frame, pred_ids, strict=True)
        ]
    columns = {}
    for name in kind.frame.columns:
        values = kind.frame[name].to_numpy()
        if values.dtype == np.float32:
            columns[name] = [float(str(v)) for v in values]
        else:
            columns[name] = [json_scalar(v) for v in values]
    result = []
    for position, pred_id in enumerate(pred_ids):
        features = {
            name: values[position]
            for name, values in columns.items()
            if not (name in kind.missing and kind.missing[name][position])
        }
        result.append({"features": features, "pred_id": int(pred_id)})
    return result


def check_records(kind, directory, payloads, outputs):
    """Replay the payloads as the service would read them and demand the same outputs.

    Each value is taken from the JSON (a missing one as NaN) and cast to the dtype of the
    ONNX input it feeds, so this checks that the records carry exactly the inputs the
    outputs were computed from.
    """
    payloads = json.loads(json.dumps(payloads))
    if isinstance(payloads[0]["features"], list):
        rows = np.array([p["features"] for p in payloads], dtype=np.float64)
    else:
        rows = pd.DataFrame(
            {
                name: [p["features"].get(name, np.nan) for p in payloads]
                for name in kind.frame.columns
            }
        )
    replayed = expected_outputs(dataclasses.replace(kind, frame=rows), directory)
    if json.dumps(replayed) != json.dumps(outputs):
        raise SystemExit(f"{kind.name}: the records do not reproduce the reference outputs")


def compare_native(kind, outputs):
    """How far onnxruntime's reference outputs are from the trained estimator's own."""
    rows = kind.frame
    if not isinstance(rows, np.ndarray) and not hasattr(kind.native, "feature_names_in_"):
        rows = rows.to_numpy(np.float32)
    if kind.task == "regressor":
        native = np.asarray(kind.native.predict(rows), dtype=np.float64).reshape(-1)
        onnx_values = np.array([o["value"] for o in outputs], dtype=np.float64)
        worst = np.max(np.abs(onnx_values - native) / np.maximum(np.abs(native), 1.0))
        return f"max rel diff {worst:.1e}"
    classes = [json_scalar(c) for c in kind.native.classes_]
    native = kind.native.predict_proba(rows)
    labels = [classes[i] for i in np.argmax(native, axis=1)]
    onnx_probs = np.array([[o["probabilities"][str(c)] for c in classes] for o in outputs])
    mismatches = sum(o["label"] != label for o, label in zip(outputs, labels, strict=True))
    worst = np.max(np.abs(onnx_probs - native))
    return f"{mismatches} labels differ, max abs probability diff {worst:.1e}"


def check_pyfunc(kind, directory, outputs):
    """Check that mlflow.pyfunc predicts a regressor's reference values; return a short note.

    mlflow's ONNX wrapper feeds each column of a DataFrame as a 1-D array, which a graph with
    one [N, 1] input per column rejects (and its schema check refuses a dict of [N, 1]
    arrays), so for those models the note records the failure instead.
    """
    model = mlflow.pyfunc.load_model(str(directory))
    data = kind.frame
    what = "ndarray" if isinstance(data, np.ndarray) else "DataFrame"
    try:
        predicted = model.predict(data)
    except Exception as error:
        if len(session(directory).get_inputs()) == 1:
            raise
        first = str(error).strip().splitlines()[0]
        return f"predict({what}) fails, as expected of [N, 1] inputs: {first[:150]}"
    if isinstance(predicted, pd.DataFrame):
        values = predicted.iloc[:, 0].to_numpy()
    elif isinstance(predicted, dict):
        values = next(iter(predicted.values()))
    else:
        values = predicted
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    expected = np.array([o["value"] for o in outputs], dtype=np.float64)
    worst = np.max(np.abs(values - expected) / np.maximum(np.abs(expected), 1e-12))
    if not np.allclose(values, expected, rtol=PYFUNC_RTOL, atol=0):
        raise SystemExit(f"{kind.name}: pyfunc differs from onnxruntime (rel {worst:.2e})")
    return f"predict({what}) matches onnxruntime (max rel diff {worst:.1e})"


def io_table(kinds_dirs):
    """Lines describing every model's ONNX inputs and outputs (name, type, shape)."""
    lines = [f"{'kind':22} {'':6} {'name':20} {'type':34} shape"]
    for name, directory in kinds_dirs.items():
        sess = session(directory)
        for role, values in (("in", sess.get_inputs()), ("out", sess.get_outputs())):
            for v in values:
                lines.append(f"{name:22} {role:6} {v.name:20} {v.type:34} {v.shape}")
    return "\n".join(lines)


def to_json(reference):
    """reference.json with one line per record and per output, so it stays diffable."""
    parts = []
    for kind, entry in reference.items():
        blocks = []
        for key in ("records", "outputs"):
            lines = ",\n".join("      " + json.dumps(item) for item in entry[key])
            blocks.append(f'    "{key}": [\n{lines}\n    ]')
        parts.append(f"  {json.dumps(kind)}: {{\n" + ",\n".join(blocks) + "\n  }")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main():
    """Train, save and describe every kind, and write the reference outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-wheel", required=True, type=Path, help="path of the ISLP wheel")
    args = parser.parse_args()

    # mlflow warns about the GPU provider it records by default and about the input example
    # it is not given; neither concerns these fixtures.
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")

    data = load_dataset(args.data_wheel)
    frame = decimal_columns(data)
    levels = demand_levels(data.y, data.train)
    train, ref = data.train, data.holdout[:REFERENCE_ROWS]
    kinds = [
        lightgbm_regressor(frame, data.y, train, ref),
        columns_float_string(frame, data.y, train, ref),
        columns_int_double(frame, data.y, train, ref),
        classifier_zipmap(frame, levels, train, ref),
        classifier_tensor(frame, levels, train, ref),
        tensor_signature(frame, data.y, train, ref),
        optional_column(frame, data.y, train, ref),
        xgboost_classifier(frame, levels, train, ref),
        lightgbm_large(frame, data.y, train, ref),
        random_forest(frame, data.y, train, ref),
        xgboost_regressor(frame, data.y, train, ref),
    ]

    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    OUTPUT_DIR.mkdir(parents=True)
    reference, dirs, notes = {}, {}, []
    for kind in kinds:
        directory, files = save(kind)
        dirs[kind.name] = directory
        outputs = expected_outputs(kind, directory)
        payloads = records(kind, ref)
        check_records(kind, directory, payloads, outputs)
        reference[kind.name] = {"records": payloads, "outputs": outputs}
        size = (directory / ONNX_FILE).stat().st_size
        note = f"{kind.name}: {size / 1e3:.0f} KB model.onnx; files {', '.join(files)}"
        note += f"\n  onnxruntime vs {type(kind.native).__name__}: {compare_native(kind, outputs)}"
        if kind.task == "regressor":
            note += f"\n  pyfunc: {check_pyfunc(kind, directory, outputs)}"
        else:
            classes, where = class_labels(onnx.load(directory / ONNX_FILE))
            note += f"\n  classes {classes} from {where}"
        notes.append(note)
    REFERENCE_FILE.write_text(to_json(reference))

    print(io_table(dirs))
    print("\n".join(notes))
    print(
        f"wrote {len(dirs)} model directories and {REFERENCE_FILE.relative_to(REPO_ROOT)}"
        f" (mlflow {mlflow.__version__}, onnxruntime {onnxruntime.__version__})"
    )


if __name__ == "__main__":
    main()
