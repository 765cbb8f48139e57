"""Write the broken-on-purpose model directories that the Rust model-loading tests reject.

The service accepts a model only if its graph has exactly one float32 input of shape [N, 4]
and its MLmodel signature names the four columns of that input. Each directory under
tests/fixtures/models/ holds an MLmodel and a model.onnx that break this in one way:

  two-inputs/    two float32 inputs, a and b of shape [N, 2] (the graph adds them)
  int-input/     one int64 input of shape [N, 4]
  no-signature/  the bike-linear model, with no signature in MLmodel
  wrong-width/   the bike-linear model, with a signature naming five columns

and models the service serves that fail on some inputs:

  gather-index/  looks an int64 column `id` up in a table of 10 values: ONNX Runtime fails on
                 an id outside 0..9, on that row alone
  one-row/       the bike-linear graph with its batch fixed to one row ([1, 4])
  fixed-batch/   the same graph with its batch fixed to two rows ([2, 4]): refused

and valid models stored the way ONNX stores large models:

  external-data/ the bike-linear model with its weights in weights.bin beside model.onnx
                 (the S3 download tests)
  zipmap-external-data/  the model-kinds ZipMap classifier with a tensor in weights.bin: the
                 service reads its probabilities map by map (a model with external data is
                 loaded from its file as it is)

Run it after models/train.py, whose bike-linear model two of them reuse; models/train.sh
runs both.
"""

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import model_dir
from train import FEATURES, LINEAR_MODEL, MODELS_DIR, REPO_ROOT, TARGET_OPSET

FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "models"
IR_VERSION = 8
EXTERNAL_WEIGHTS = [1.0, 2.0, 0.5, -3.0]
"""external-data/ predicts t1 + 2 t2 + hum / 2 - 3 weather_code + 10."""
EXTERNAL_BIAS = 10.0
"""The IR version skl2onnx writes for the real models; onnxruntime 1.31 loads it."""


def finish(graph):
    """Check a graph and serialize it as a model the real models' runtime can load."""
    model = helper.make_model(
        graph,
        producer_name="models/make_test_fixtures.py",
        opset_imports=[helper.make_opsetid("", TARGET_OPSET[""])],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def two_inputs_graph():
    """A graph computing a + b from two float32 inputs a and b of shape [N, 2]."""
    return finish(
        helper.make_graph(
            [helper.make_node("Add", ["a", "b"], ["sum"])],
            "two-inputs",
            inputs=[
                helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2]),
            ],
            outputs=[helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 2])],
        )
    )


def int_input_graph():
    """A graph summing each row of an int64 input [N, 4] into a float32 output [N, 1]."""
    return finish(
        helper.make_graph(
            [
                helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT),
                helper.make_node("ReduceSum", ["as_float", "axes"], ["prediction"], keepdims=1),
            ],
            "int-input",
            inputs=[
                helper.make_tensor_value_info("input", TensorProto.INT64, [None, len(FEATURES)])
            ],
            outputs=[helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
            initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
        )
    )


GATHER_TABLE = [float(value) * 1.5 for value in range(10)]
"""gather-index/ predicts GATHER_TABLE[id]."""


def gather_index_graph():
    """A graph returning GATHER_TABLE[id] for an int64 input id of shape [N, 1]."""
    return finish(
        helper.make_graph(
            [
                helper.make_node("Gather", ["table", "id"], ["gathered"], axis=0),
                helper.make_node("Reshape", ["gathered", "shape"], ["prediction"]),
            ],
            "gather-index",
            inputs=[helper.make_tensor_value_info("id", TensorProto.INT64, [None, 1])],
            outputs=[helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
            initializer=[
                numpy_helper.from_array(np.array(GATHER_TABLE, np.float32), "table"),
                numpy_helper.from_array(np.array([-1, 1], np.int64), "shape"),
            ],
        )
    )


def fixed_batch_graph(rows):
    """The bike-linear model with the batch dimension of its input and output fixed."""
    model = onnx.load_from_string((MODELS_DIR / LINEAR_MODEL / model_dir.ONNX_FILE).read_bytes())
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = rows
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def long_signature(names):
    """A signature of required int64 (`long`) columns, one float tensor out."""
    import json

    return {
        "inputs": json.dumps([{"type": "long", "name": name, "required": True} for name in names]),
        "outputs": model_dir.tensor_schema((-1, 1)),
        "params": None,
    }


def external_data_model():
    """A linear graph, input @ weights + bias, whose tensors live in weights.bin beside the
    model file, as ONNX stores models too large for one protobuf: (onnx, weights.bin)."""
    from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors
    import tempfile

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "weights"], ["product"]),
            helper.make_node("Add", ["product", "bias"], ["prediction"]),
        ],
        "external-data",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(FEATURES)])],
        outputs=[helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        initializer=[
            # Only tensors stored as raw bytes can move to an external file.
            numpy_helper.from_array(np.array(EXTERNAL_WEIGHTS, np.float32).reshape(-1, 1), "weights"),
            numpy_helper.from_array(np.array([EXTERNAL_BIAS], np.float32), "bias"),
        ],
    )
    model = onnx.load_from_string(finish(graph))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with tempfile.TemporaryDirectory() as scratch:
        model = write_external_data_tensors(model, scratch)
        weights = (pathlib.Path(scratch) / "weights.bin").read_bytes()
    return model.SerializeToString(), weights


def zipmap_external_data_model():
    """tests/fixtures/model-kinds/classifier-zipmap with an unused initializer kept in
    weights.bin: (onnx, weights.bin, MLmodel text)."""
    from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors
    import tempfile

    source = REPO_ROOT / "tests" / "fixtures" / "model-kinds" / "classifier-zipmap"
    model = onnx.load_from_string((source / model_dir.ONNX_FILE).read_bytes())
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(4, np.float32), "unused"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with tempfile.TemporaryDirectory() as scratch:
        model = write_external_data_tensors(model, scratch)
        weights = (pathlib.Path(scratch) / "weights.bin").read_bytes()
    return model.SerializeToString(), weights, (source / "MLmodel").read_text()


def main():
    """Write the fixture directories."""
    linear_onnx = (MODELS_DIR / LINEAR_MODEL / model_dir.ONNX_FILE).read_bytes()
    fixtures = {
        "two-inputs": (two_inputs_graph(), model_dir.signature(FEATURES)),
        "int-input": (int_input_graph(), model_dir.signature(FEATURES)),
        "no-signature": (linear_onnx, None),
        "wrong-width": (linear_onnx, model_dir.signature(FEATURES + ("windspeed",))),
        "gather-index": (gather_index_graph(), long_signature(["id"])),
        "one-row": (fixed_batch_graph(1), model_dir.signature(FEATURES)),
        "fixed-batch": (fixed_batch_graph(2), model_dir.signature(FEATURES)),
    }
    for name, (onnx_bytes, signature) in fixtures.items():
        model_dir.write_model(FIXTURES_DIR / name, onnx_bytes, signature)
    external_onnx, weights = external_data_model()
    model_dir.write_model(FIXTURES_DIR / "external-data", external_onnx, model_dir.signature(FEATURES))
    (FIXTURES_DIR / "external-data" / "weights.bin").write_bytes(weights)
    zipmap_onnx, zipmap_weights, zipmap_mlmodel = zipmap_external_data_model()
    zipmap_dir = FIXTURES_DIR / "zipmap-external-data"
    zipmap_dir.mkdir(parents=True, exist_ok=True)
    (zipmap_dir / model_dir.ONNX_FILE).write_bytes(zipmap_onnx)
    (zipmap_dir / "weights.bin").write_bytes(zipmap_weights)
    (zipmap_dir / "MLmodel").write_text(zipmap_mlmodel)
    print(f"wrote {len(fixtures) + 2} model directories under {FIXTURES_DIR.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
