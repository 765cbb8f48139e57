"""Train the bike-demand regressor and export it for the Rust service.

Reads the Capital Bikeshare hourly data (ISLP/data/Bikeshare.csv) straight out of the ISLP
wheel, maps it to the service's four inputs (t1, t2, hum, weather_code), trains several
scikit-learn pipelines, converts each one whole to ONNX (so all preprocessing lives in the
graph and the model takes the four raw inputs) and compares them on held-out rows.

Writes, relative to the repository root:
  models/bike-demand/            the most accurate candidate under the size limit, with README.md
  models/bike-linear/            the linear-regression candidate (to measure service cost)
  tests/fixtures/reference.json  onnxruntime predictions of both models on 2,000 real rows

Run it through ``bash models/train.sh``, which prepares the environment and the data.
"""

import argparse
import json
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures

import model_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
REFERENCE_FILE = REPO_ROOT / "tests" / "fixtures" / "reference.json"

DATA_MEMBER = "ISLP/data/Bikeshare.csv"
EXPECTED_ROWS = 8645
TARGET = "bikers"

FEATURES = ("t1", "t2", "hum", "weather_code")
"""The model's input columns, in the order of the ONNX input tensor."""

WEATHER_CODES = {"clear": 1, "cloudy/misty": 2, "light rain/snow": 3, "heavy rain/snow": 4}
"""weathersit category -> weather_code, numbered as in the UCI bike-sharing data set."""

INPUT_NAME = "input"
OUTPUT_NAME = "prediction"
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
"""ONNX opsets for the export; onnxruntime 1.31 runs both."""

SEED = 42
HOLDOUT_FRACTION = 0.2
MAX_ONNX_BYTES = 5_000_000
"""Candidates whose ONNX file is larger are not bundled with the service."""

REFERENCE_ROWS = 2000
CHOSEN_MODEL = "bike-demand"
LINEAR_MODEL = "bike-linear"
LINEAR_CANDIDATE = "linear_regression"


@dataclass(frozen=True)
class Dataset:
    """The service's inputs and the target for every row, and the fixed split."""

    source: str
    weather_counts: dict
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    holdout: np.ndarray


@dataclass(frozen=True)
class Metrics:
    """Accuracy of predictions on the held-out rows."""

    r2: float
    mae: float
    rmse: float

    @classmethod
    def of(cls, truth, predicted):
        """Score ``predicted`` against ``truth``."""
        return cls(
            r2=float(r2_score(truth, predicted)),
            mae=float(mean_absolute_error(truth, predicted)),
            rmse=float(root_mean_squared_error(truth, predicted)),
        )


@dataclass(frozen=True)
class Candidate:
    """One trained and exported pipeline with its held-out scores."""

    name: str
    estimator: str
    onnx_bytes: bytes
    metrics: Metrics
    onnx_metrics: Metrics
    onnx_predictions: np.ndarray
    """onnxruntime's predictions on the held-out rows."""
    max_abs_diff: float
    """Largest |scikit-learn - onnxruntime| prediction on the held-out rows."""


def load_dataset(wheel_path):
    """Read Bikeshare.csv out of the ISLP wheel and split its rows."""
    wheel_path = Path(wheel_path)
    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(DATA_MEMBER) as csv:
        frame = pd.read_csv(csv)
    if len(frame) != EXPECTED_ROWS:
        raise SystemExit(f"{DATA_MEMBER} has {len(frame)} rows, expected {EXPECTED_ROWS}")
    version = wheel_path.name.split("-")[1]
    train, holdout = train_test_split(
        np.arange(len(frame)), test_size=HOLDOUT_FRACTION, random_state=SEED
    )
    return Dataset(
        source=f"ISLP {version} wheel, {DATA_MEMBER}",
        weather_counts=frame["weathersit"].value_counts().to_dict(),
        x=service_inputs(frame),
        y=frame[TARGET].to_numpy(dtype=np.float64),
        train=np.sort(train),
        holdout=np.sort(holdout),
    )


def service_inputs(frame):
    """The four service inputs as float32 in ``FEATURES`` order, in the service's units.

    Bikeshare.csv stores temperatures and humidity normalised: deg C = temp x 41,
    feels-like deg C = atemp x 50, humidity % = hum x 100.
    """
    unknown = set(frame["weathersit"]) - set(WEATHER_CODES)
    if unknown:
        raise SystemExit(f"unexpected weathersit categories: {sorted(unknown)}")
    columns = {
        "t1": frame["temp"] * 41,
        "t2": frame["atemp"] * 50,
        "hum": frame["hum"] * 100,
        "weather_code": frame["weathersit"].map(WEATHER_CODES),
    }
    return np.column_stack([columns[name] for name in FEATURES]).astype(np.float32)


def preprocessing():
    """The features every candidate sees, computed in the graph from the four raw inputs.

    weather_code is one-hot encoded (codes 1-4; any other code encodes as all zeros),
    t1 and t2 are joined by their product t1t2 = t1 * t2, and hum passes through.
    """
    column = FEATURES.index
    weather = OneHotEncoder(
        categories=[[float(code) for code in WEATHER_CODES.values()]],
        handle_unknown="ignore",
        sparse_output=False,
    )
    temperatures = PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)
    return ColumnTransformer(
        [
            ("weather", weather, [column("weather_code")]),
            ("temperatures", temperatures, [column("t1"), column("t2")]),
            ("humidity", "passthrough", [column("hum")]),
        ]
    )


def candidate_estimators():
    """The regressors compared, by name.

    The forests are limited to leaves of at least 20 rows, which keeps their ONNX files
    small; the unlimited forest is kept in the comparison to show what that costs.
    """
    return {
        LINEAR_CANDIDATE: LinearRegression(),
        "random_forest_unlimited": RandomForestRegressor(
            n_estimators=100, random_state=SEED, n_jobs=-1
        ),
        "random_forest": RandomForestRegressor(
            n_estimators=100, min_samples_leaf=20, random_state=SEED, n_jobs=-1
        ),
        "extra_trees": ExtraTreesRegressor(
            n_estimators=100, min_samples_leaf=20, random_state=SEED, n_jobs=-1
        ),
        "hist_gradient_boosting": HistGradientBoostingRegressor(random_state=SEED),
        "gradient_boosting": GradientBoostingRegressor(
            n_estimators=300, learning_rate=0.05, min_samples_leaf=20, random_state=SEED
        ),
    }


def train_and_export(name, estimator, data):
    """Fit one pipeline, export it to ONNX and score both on the held-out rows."""
    pipeline = Pipeline([("features", preprocessing()), ("regressor", estimator)])
    pipeline.fit(data.x[data.train], data.y[data.train])
    holdout_x, holdout_y = data.x[data.holdout], data.y[data.holdout]
    sklearn_predictions = pipeline.predict(holdout_x)
    metrics = Metrics.of(holdout_y, sklearn_predictions)
    description = " ".join(repr(estimator).split())
    onnx_bytes = to_onnx(name, pipeline, training_summary(description, data, metrics))
    onnx_predictions = onnx_predict(onnx_bytes, holdout_x)
    return Candidate(
        name=name,
        estimator=description,
        onnx_bytes=onnx_bytes,
        metrics=metrics,
        onnx_metrics=Metrics.of(holdout_y, onnx_predictions),
        onnx_predictions=onnx_predictions,
        max_abs_diff=float(np.max(np.abs(onnx_predictions - sklearn_predictions))),
    )


def training_summary(estimator, data, metrics):
    """Key-value facts about a trained model, stored in its ONNX ``metadata_props``."""
    return {
        "inputs": f"{INPUT_NAME}: float32 [N, {len(FEATURES)}] columns {','.join(FEATURES)}",
        "output": f"{OUTPUT_NAME}: float32 [N, 1] predicted bike rentals in the hour",
        "estimator": estimator,
        "training_data": f"{data.source}, {len(data.train)} training rows (seed {SEED})",
        "holdout_metrics": (
            f"R2 {metrics.r2:.4f}, MAE {metrics.mae:.2f}, RMSE {metrics.rmse:.2f}"
            f" on {len(data.holdout)} held-out rows"
        ),
    }


def to_onnx(name, pipeline, summary):
    """Convert the whole fitted pipeline to serialized ONNX with the service's input contract."""
    model = skl2onnx.convert_sklearn(
        pipeline,
        name=name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURES)]))],
        final_types=[(OUTPUT_NAME, FloatTensorType([None, 1]))],
        target_opset=TARGET_OPSET,
        doc_string="Predicted hourly bike rentals from t1, t2, hum, weather_code.",
    )
    # skl2onnx lists the opsets in set order, which changes with Python's hash seed.
    opsets = sorted((opset.domain, opset.version) for opset in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(
        onnx.helper.make_opsetid(domain, version) for domain, version in opsets
    )
    onnx.helper.set_model_props(model, summary)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def onnx_predict(onnx_bytes, rows):
    """Run an ONNX model on float32 ``rows`` with onnxruntime's CPU provider.

    One intra-op thread fixes the order in which tree outputs are summed, so repeated runs
    give bit-identical predictions.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    (predictions,) = session.run(None, {INPUT_NAME: rows})
    return predictions.reshape(-1)


def named(candidates, name):
    """The candidate called ``name``."""
    return next(c for c in candidates if c.name == name)


def small_enough(candidate):
    """Whether a candidate's ONNX file fits the size limit for bundling."""
    return len(candidate.onnx_bytes) <= MAX_ONNX_BYTES


def choose(candidates):
    """The most accurate candidate (held-out R^2) whose ONNX file fits the size limit."""
    return max(filter(small_enough, candidates), key=lambda c: c.metrics.r2)


def bootstrap_r2_error(truth, predicted, resamples=1000):
    """Standard error of the held-out R^2, from resampling the held-out rows (fixed seed)."""
    rng = np.random.default_rng(SEED)
    scores = []
    for _ in range(resamples):
        rows = rng.integers(0, len(truth), len(truth))
        scores.append(r2_score(truth[rows], predicted[rows]))
    return float(np.std(scores))


def comparison_table(candidates):
    """Markdown table of the held-out scores and ONNX sizes of all candidates."""
    lines = [
        "| candidate | R^2 | MAE | RMSE | ONNX size | max abs diff sklearn vs ONNX |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in candidates:
        lines.append(
            f"| {c.name} | {c.metrics.r2:.4f} | {c.metrics.mae:.2f} | {c.metrics.rmse:.2f}"
            f" | {format_size(len(c.onnx_bytes))} | {c.max_abs_diff:.1e} |"
        )
    return "\n".join(lines)


def format_size(size):
    """A byte count as KB or MB."""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"


def save_model(name, candidate):
    """Write a candidate as an MLflow model directory under ``models/<name>``."""
    directory = MODELS_DIR / name
    model_dir.write_model(directory, candidate.onnx_bytes, model_dir.signature(FEATURES))
    model_dir.write_environment(directory)
    return directory


def reference_order(data):
    """Indices of the reference rows: all held-out rows, then training rows, in file order."""
    return np.concatenate([data.holdout, data.train])[:REFERENCE_ROWS]


def write_reference(data, model_dirs):
    """Write onnxruntime's predictions of the saved models on the reference rows."""
    rows = data.x[reference_order(data)]
    predictions = {
        name: exact_floats(onnx_predict((directory / model_dir.ONNX_FILE).read_bytes(), rows))
        for name, directory in model_dirs.items()
    }
    reference = {
        "columns": list(FEATURES),
        "rows": [exact_floats(row) for row in rows],
        "models": predictions,
        "source": (
            f"models/train.py: {len(data.holdout)} held-out then"
            f" {REFERENCE_ROWS - len(data.holdout)} training rows of {data.source};"
            f" predictions by Python onnxruntime {onnxruntime.__version__}"
            " (CPUExecutionProvider) on each model's model.onnx"
        ),
    }
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_FILE.write_text(to_json(reference) + "\n")


def exact_floats(values):
    """float32 values as Python floats that print as numbers parsing back to the same float32."""
    return [float(np.float32(v)) for v in values]


def to_json(value, indent=""):
    """JSON with one line per list of numbers, so the fixture stays readable and diffable."""
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        items = [f"{inner}{to_json(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value)


def model_card(data, candidates, chosen):
    """The README.md of the chosen model's directory."""
    train_x = data.x[data.train]
    decimals = {"t1": 2, "t2": 2, "hum": 0, "weather_code": 0}
    ranges = {
        name: f"{low:.{decimals[name]}f} to {high:.{decimals[name]}f}"
        for name, low, high in zip(FEATURES, train_x.min(axis=0), train_x.max(axis=0), strict=True)
    }
    unlimited = named(candidates, "random_forest_unlimited")
    limited = named(candidates, "random_forest")
    linear = named(candidates, LINEAR_CANDIDATE)
    trees = [c.metrics.r2 for c in candidates if c is not linear and small_enough(c)]
    holdout_y = data.y[data.holdout]
    r2_error = bootstrap_r2_error(holdout_y, chosen.onnx_predictions)
    baseline = Metrics.of(holdout_y, np.full(len(holdout_y), data.y[data.train].mean()))
    codes = ", ".join(f"{code} = {category}" for category, code in WEATHER_CODES.items())
    counts = ", ".join(f"{data.weather_counts.get(category, 0):,}" for category in WEATHER_CODES)
    heavy = "heavy rain/snow"
    train_codes = train_x[:, FEATURES.index("weather_code")]
    heavy_in_training = int(np.sum(train_codes == WEATHER_CODES[heavy]))
    estimators = "\n".join(f"- `{c.name}`: `{c.estimator}`" for c in candidates)
    return reflow(f"""# {CHOSEN_MODEL}

Predicts how many bikes are rented in one hour from the weather in that hour. This directory
is an MLflow model directory (`MLmodel`, `model.onnx`, environment files) that the service
loads; `../{LINEAR_MODEL}/` has the same layout and inputs. Both are written by
`models/train.py`: change the script and re-run it rather than editing these files.

## Input and output

`model.onnx` has one input, `{INPUT_NAME}`: float32, shape [N, {len(FEATURES)}]. Its columns, in
order, are declared by the `signature` in `MLmodel`:

| column | meaning | unit | from Bikeshare.csv | range in training |
| --- | --- | --- | --- | --- |
| `t1` | temperature | deg C | `temp` x 41 | {ranges["t1"]} |
| `t2` | feels-like temperature | deg C | `atemp` x 50 | {ranges["t2"]} |
| `hum` | relative humidity | % | `hum` x 100 | {ranges["hum"]} |
| `weather_code` | weather category | code 1-4 | `weathersit` | {ranges["weather_code"]} |

weather_code: {codes} (the UCI bike-sharing numbering of `weathersit`). Rows per code in
the data: {counts}.

The output, `{OUTPUT_NAME}`, is float32 of shape [N, 1]: the predicted number of rentals in the
hour, neither rounded nor clipped.

## Data

{data.source}, {EXPECTED_ROWS:,} rows: Capital Bikeshare, Washington DC, one row per
hour of 2011 (some hours are missing). The target is `{TARGET}`, all rentals in the hour. The
rows are split at random (seed {SEED}) into {len(data.train):,} training and
{len(data.holdout):,} held-out rows.

## Preprocessing, inside the graph

Each candidate is a scikit-learn `Pipeline` converted whole by skl2onnx {skl2onnx.__version__}, so
the ONNX graph takes the four raw inputs and computes its own features:

- `weather_code`: one-hot over the codes 1-4; any other code encodes as all zeros.
- `t1`, `t2` and their product `t1t2 = t1 * t2` (the derived feature of the original service).
- `hum` as is.

## Comparison on the held-out rows

{comparison_table(candidates)}

The last column compares scikit-learn's predictions with onnxruntime's on the exported graph.
For scale: always predicting the training mean gives MAE {baseline.mae:.2f} and
RMSE {baseline.rmse:.2f}.
scikit-learn {sklearn.__version__}, estimators:

{estimators}

## Chosen model

`{chosen.name}`: the highest held-out R^2 among the candidates whose ONNX file stays under
{MAX_ONNX_BYTES / 1e6:.0f} MB; its `model.onnx` is {format_size(len(chosen.onnx_bytes))}. The tree
ensembles within the limit score within {max(trees) - min(trees):.3f} R^2 of each other, less than
the standard error of the chosen model's held-out R^2 ({r2_error:.3f}, bootstrap over the
held-out rows), so the choice among them matters little.

The size limit rules out only `random_forest_unlimited` ({format_size(len(unlimited.onnx_bytes))},
R^2 {unlimited.metrics.r2:.4f}). With leaves of at least 20 rows the same forest takes
{format_size(len(limited.onnx_bytes))} and scores R^2 {limited.metrics.r2:.4f}: deep trees mostly
memorise noise that four weather inputs cannot explain.

`{LINEAR_MODEL}` is the `{LINEAR_CANDIDATE}` candidate. It costs almost nothing to evaluate,
which makes it the model to measure the service's own overhead with.

## Known limits

- The input contract has no hour of day, weekday or season, which drive most of the variation in
  hourly rentals, so even the best model explains only {chosen.metrics.r2:.0%} of it (held-out
  R^2 {chosen.metrics.r2:.2f}); expect errors of about {chosen.metrics.mae:.0f} rentals per hour.
- One year of one city: outside the training ranges above, the tree models predict flat and
  the linear model extrapolates.
- `{LINEAR_MODEL}` can predict fewer than zero rentals (down to {linear.onnx_predictions.min():.0f}
  on the held-out rows).
- {heavy.capitalize()} (code {WEATHER_CODES[heavy]}) appears in
  {data.weather_counts.get(heavy, 0)} row(s) of the data, {heavy_in_training} of them in the
  training rows, so the models have not learned its effect.
- The graph casts `weather_code` to an integer before one-hot encoding, truncating a
  fractional code (2.5 encodes as 2) where scikit-learn would treat it as unknown.
- Hours of the same day fall on both sides of the random split, and the held-out rows
  also picked the model, so the held-out scores are slightly optimistic.

## Reproduce

```sh
bash models/train.sh
```

It installs `models/requirements.txt` into `.venv/train`, downloads the ISLP wheel into
`.cache/`, and rewrites both model directories, `tests/fixtures/reference.json` and the broken
model directories under `tests/fixtures/models/`; a re-run reproduces them byte for byte.
""")


def reflow(markdown, width=96):
    """Re-wrap the paragraphs and list items of ``markdown``; headings, tables and code stay."""
    blocks = []
    for block in markdown.strip("\n").split("\n\n"):
        if block.startswith(("#", "|", "```")):
            blocks.append(block)
        elif block.startswith("- "):
            items = ("\n" + block).split("\n- ")[1:]
            blocks.append("\n".join(wrap(item, width, "- ", "  ") for item in items))
        else:
            blocks.append(wrap(block, width))
    return "\n\n".join(blocks) + "\n"


def wrap(text, width, first_indent="", indent=""):
    """Fill ``text`` to ``width`` columns, never breaking at hyphens."""
    return textwrap.fill(
        " ".join(text.split()),
        width,
        initial_indent=first_indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def print_report(candidates, chosen):
    """Print the comparison and how closely onnxruntime reproduces scikit-learn."""
    print(comparison_table(candidates))
    for c in candidates:
        metric_diff = max(
            abs(c.metrics.r2 - c.onnx_metrics.r2),
            abs(c.metrics.mae - c.onnx_metrics.mae),
            abs(c.metrics.rmse - c.onnx_metrics.rmse),
        )
        print(
            f"{c.name}: max abs diff sklearn vs onnxruntime: predictions {c.max_abs_diff:.2e},"
            f" metrics {metric_diff:.2e}"
        )
    print(f"chosen: {chosen.name} ({format_size(len(chosen.onnx_bytes))})")


def main():
    """Train, compare, export and write the reference predictions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-wheel", required=True, type=Path, help="path of the ISLP wheel")
    args = parser.parse_args()

    data = load_dataset(args.data_wheel)
    candidates = [
        train_and_export(name, estimator, data)
        for name, estimator in candidate_estimators().items()
    ]
    chosen = choose(candidates)
    print_report(candidates, chosen)

    model_dirs = {
        CHOSEN_MODEL: save_model(CHOSEN_MODEL, chosen),
        LINEAR_MODEL: save_model(LINEAR_MODEL, named(candidates, LINEAR_CANDIDATE)),
    }
    (model_dirs[CHOSEN_MODEL] / "README.md").write_text(model_card(data, candidates, chosen))
    write_reference(data, model_dirs)
    print(
        f"wrote {', '.join(str(d.relative_to(REPO_ROOT)) for d in model_dirs.values())}"
        f" and {REFERENCE_FILE.relative_to(REPO_ROOT)}"
    )


if __name__ == "__main__":
    main()
