"""Write ONNX models in MLflow's model-directory layout without depending on MLflow.

The files follow what ``mlflow.onnx.save_model`` writes: an ``MLmodel`` YAML file with an
``onnx`` and a ``python_function`` flavor, the ``model.onnx`` it points to, and the
environment files ``requirements.txt``, ``python_env.yaml`` and ``conda.yaml``. So the
directories load with ``mlflow.pyfunc.load_model`` as well as in the Rust service.

Everything written is a function of its inputs, so re-running the training reproduces the
files byte for byte: ``utc_time_created`` is left out and ``model_uuid`` is derived from the
ONNX bytes.
"""

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import yaml

MLFLOW_VERSION = "3.17.2"
"""MLflow release whose layout these files follow (loading was checked with it)."""

ONNX_FILE = "model.onnx"
"""Name of the ONNX file inside a model directory."""

EXECUTION_PROVIDERS = ["CPUExecutionProvider"]
"""onnxruntime providers recorded in the onnx flavor: the service runs on CPU only."""


def column_schema(names):
    """MLflow's JSON for a column-based schema of required float32 columns, in order."""
    return json.dumps([{"type": "float", "name": name, "required": True} for name in names])


def tensor_schema(shape):
    """MLflow's JSON for a schema holding one float32 tensor of the given shape (-1 = any)."""
    return json.dumps(
        [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": list(shape)}}]
    )


def signature(input_columns, output_shape=(-1, 1)):
    """The ``signature`` entry of an MLmodel file: named float columns in, one tensor out."""
    return {
        "inputs": column_schema(input_columns),
        "outputs": tensor_schema(output_shape),
        "params": None,
    }


def mlmodel(onnx_bytes, model_signature):
    """The content of an MLmodel file for ``onnx_bytes``; ``model_signature`` may be None."""
    document = {
        "flavors": {
            "onnx": {
                "code": None,
                "data": ONNX_FILE,
                "onnx_session_options": None,
                "onnx_version": metadata.version("onnx"),
                "providers": EXECUTION_PROVIDERS,
            },
            "python_function": {
                "data": ONNX_FILE,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.onnx",
                "python_version": platform.python_version(),
            },
        },
        "mlflow_version": MLFLOW_VERSION,
        "model_size_bytes": len(onnx_bytes),
        "model_uuid": hashlib.sha256(onnx_bytes).hexdigest()[:32],
    }
    if model_signature is not None:
        document["signature"] = model_signature
    return document


def write_model(directory, onnx_bytes, model_signature):
    """Write ``model.onnx`` and its ``MLmodel`` into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ONNX_FILE).write_bytes(onnx_bytes)
    _write_yaml(directory / "MLmodel", mlmodel(onnx_bytes, model_signature))


def write_environment(directory):
    """Write the pip, virtualenv and conda descriptions of the environment that serves the model."""
    directory = Path(directory)
    requirements = [
        f"mlflow=={MLFLOW_VERSION}",
        f"onnx=={metadata.version('onnx')}",
        f"onnxruntime=={metadata.version('onnxruntime')}",
    ]
    (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = platform.python_version()
    python_env = {
        "python": python,
        "build_dependencies": [
            _pinned_if_installed(name) for name in ("pip", "setuptools", "wheel")
        ],
        "dependencies": ["-r requirements.txt"],
    }
    _write_yaml(directory / "python_env.yaml", python_env, sort_keys=False)
    conda = {
        "channels": ["conda-forge"],
        "dependencies": [
            f"python={python}",
            f"pip<={metadata.version('pip')}",
            {"pip": requirements},
        ],
        "name": "mlflow-env",
    }
    _write_yaml(directory / "conda.yaml", conda)


def _pinned_if_installed(name):
    """``name==version`` for an installed distribution, the bare name otherwise (as MLflow does)."""
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def _write_yaml(path, document, sort_keys=True):
    """Dump ``document`` as block-style YAML, the way MLflow formats its files."""
    path.write_text(yaml.safe_dump(document, default_flow_style=False, sort_keys=sort_keys))
