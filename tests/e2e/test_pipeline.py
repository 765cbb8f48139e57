"""The whole pipeline through its real pieces: records put on the input stream, the poller,
the built binary under the Lambda emulator loading its model from S3, the output stream.

Predictions are compared with the Python onnxruntime's predictions for the same rows
(tests/fixtures/reference.json), within a relative tolerance of 1e-4.
"""

import json
import math
import os
import subprocess

from bike_local import reference
from bike_local.mlflow_layout import RUN_ID, model_prefix, run_prefix
from bike_local.reference import REL_TOL, feature_record

from stack import ROOT, script


def assert_predictions(events: list[dict], pred_ids: list[int], version: str) -> None:
    """`events` are exactly one prediction event per pred_id (record i carries reference row
    i mod 2000), with the reference prediction, keyed by str(pred_id)."""
    by_id = {event["data"]["prediction"]["pred_id"]: event for event in events}
    assert len(events) == len(by_id), "an event came out more than once"
    assert sorted(by_id) == sorted(pred_ids)
    for pred_id, event in by_id.items():
        assert event["partitionKey"] == str(pred_id)
        assert event["data"]["model"] == "bike-demand"
        assert event["data"]["version"] == version
        expected = reference.expected(pred_id)
        assert math.isclose(event["data"]["prediction"]["cnt"], expected, rel_tol=REL_TOL), (
            pred_id, event, expected)


def test_records_put_with_data_in_come_out_as_prediction_events(stack):
    stack.create_streams(shards=2)
    stack.upload_model(run_prefix(RUN_ID))
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID)
    assert started.returncode == 0, started.stderr
    count = 250

    script("scripts/data_in.sh", str(count), env=stack.env)
    status, batches, summary = stack.poll("--max-records", str(count), "--batch-size", "100")

    assert status == 0, summary
    assert summary["predictions"] == count and summary["rejected"] == 0
    assert {b["shard"] for b in batches} == {"shardId-000000000000", "shardId-000000000001"}
    assert all(b["records"] <= 100 for b in batches)
    out = script("scripts/data_out.sh", env=stack.env).stdout.splitlines()
    assert_predictions([json.loads(line) for line in out], list(range(count)), RUN_ID)


def test_a_bad_record_is_rejected_and_the_others_come_out(stack):
    stack.create_streams(shards=1)
    stack.upload_model(run_prefix(RUN_ID))
    assert stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID).returncode == 0
    good = [feature_record(row, row) for row in range(10)]
    stack.put(good[:5] + [(b"this is not json", "bad")] + good[5:])

    status, batches, summary = stack.poll("--max-records", "11")

    assert status == 0, summary
    assert summary["rejected"] == 1 and summary["predictions"] == 10
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0
    assert_predictions(stack.output(), list(range(10)), RUN_ID)


def test_kpl_aggregated_records_come_out_as_one_prediction_per_user_record(stack):
    # Put the way a KPL producer puts them: user records aggregated by aws-kinesis-agg.
    from aws_kinesis_agg.aggregator import RecordAggregator

    stack.create_streams(shards=1)
    stack.upload_model(run_prefix(RUN_ID))
    assert stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID).returncode == 0
    aggregator = RecordAggregator()
    for pred_id in range(40):
        aggregator.add_user_record(*reversed(feature_record(pred_id, pred_id)))
    key, _, aggregated = aggregator.clear_and_get().get_contents()
    corrupt = aggregated[:-1]
    stack.put([feature_record(40, 40), (aggregated, key), (corrupt, "corrupt"),
               feature_record(41, 41)])

    status, _, summary = stack.poll("--max-records", "4")

    assert status == 0, summary
    assert summary["predictions"] == 42 and summary["rejected"] == 1
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0
    assert_predictions(stack.output(), list(range(42)), RUN_ID)


def test_test_run_returns_predictions_but_publishes_nothing(stack):
    stack.create_streams(shards=1)
    stack.upload_model(run_prefix(RUN_ID))
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID, TEST_RUN="True")
    assert started.returncode == 0, started.stderr
    stack.put([feature_record(row, row) for row in range(20)])

    status, _, summary = stack.poll("--max-records", "20")

    assert status == 0, summary
    assert summary["predictions"] == 20
    assert stack.output() == []


def test_model_loads_by_model_id_from_the_mlflow_3_layout(stack):
    model_id = "m-0123456789abcdef0123456789abcdef"
    stack.create_streams(shards=1)
    stack.upload_model(model_prefix(model_id))
    started = stack.start_function(MODEL_BUCKET=stack.bucket, MODEL_ID=model_id)
    assert started.returncode == 0, started.stderr
    stack.put([feature_record(row, row) for row in range(1990, 2000)])

    status, _, summary = stack.poll("--max-records", "10")

    assert status == 0, summary
    assert_predictions(stack.output(), list(range(1990, 2000)), model_id)


def test_a_wrong_run_id_fails_the_cold_start_naming_the_s3_uri_tried(stack):
    stack.create_streams(shards=1)
    stack.upload_model(run_prefix(RUN_ID))
    wrong = "0" * 32

    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=wrong)

    assert started.returncode != 0
    assert "cold start failed" in started.stderr
    assert f"s3://{stack.bucket}/{run_prefix(wrong)}" in stack.function_log()


def test_the_readme_first_command_prints_predictions_read_back_from_the_output_stream():
    """scripts/pipeline.sh, exactly as the README gives it: its own services, started and
    stopped by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCAL_STATE_DIR"))}
    result = subprocess.run(["bash", "scripts/pipeline.sh", "3"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert_predictions(events, [0, 1, 2], RUN_ID)
