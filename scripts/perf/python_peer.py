"""A well-written Python Lambda handler doing the service's job, for the whole-process
comparison of scripts/perf/peer.sh: one batched Python onnxruntime inference per event.

It reads the Lambda Kinesis event in EVENT, decodes every record (base64, then JSON), fills one
float32 [N, F] array in the model's column order, runs the bundled model once, and writes the
response the service writes with TEST_RUN (the prediction events) to stdout. Startup, imports
and the model load are part of what it costs, as they are of a Lambda cold start.

Usage: python_peer.py MODEL_DIR EVENT
"""

import base64
import json
import sys

import numpy as np
import onnxruntime
import yaml


def main():
    model_dir, event_path = sys.argv[1], sys.argv[2]
    with open(f"{model_dir}/MLmodel") as file:
        signature = yaml.safe_load(file)["signature"]
    columns = [column["name"] for column in json.loads(signature["inputs"])]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name

    with open(event_path, "rb") as file:
        records = json.load(file)["Records"]
    rows = np.empty((len(records), len(columns)), dtype=np.float32)
    ids = []
    for i, record in enumerate(records):
        payload = json.loads(base64.b64decode(record["kinesis"]["data"]))
        features = payload["features"]
        rows[i] = [features[column] for column in columns]
        ids.append(payload["pred_id"])
    predictions = session.run(None, {input_name: rows})[0].reshape(-1)
    events = [
        {
            "model": "bike-demand",
            "version": "peer",
            "prediction": {"cnt": float(value), "pred_id": pred_id},
        }
        for value, pred_id in zip(predictions, ids)
    ]
    json.dump({"predictions": events}, sys.stdout)


if __name__ == "__main__":
    main()
