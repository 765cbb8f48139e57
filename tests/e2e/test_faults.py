"""Outages and bad models, through the real pieces: the local services (moto for S3, the
Kinesis stand-in), the Lambda emulator, the release binary and the poller.

Kinesis unreachable while publishing: the function's Kinesis client goes through a relay
(stack.Relay) that the test breaks after some batches are published and restores after some
invocations have failed, while S3 and the poller's input stream stay on the servers directly.
Broken, the relay either refuses connections (the server is down) or loses the answers (the server
acted, the client cannot know). What must hold: the invocations during the outage report their
records in `batchItemFailures`, the poller delivers them again, and in the end every prediction
is on the output stream (at least once, with the reference value; duplicates are counted).
Breaking a relay, rather than stopping the Kinesis server, keeps the output stream: the server
holds its state in memory, and a restarted one would have lost it.

A Kinesis that accepts connections and never answers (paused, overloaded): the invocation still
answers, with every record in `batchItemFailures`, within its publishing budget.

Cold start: S3 unreachable, the model object missing, a file that is not ONNX, and models whose
inputs the service cannot fill each stop the function before it serves, with one "cold start
failed" log line whose `error` names the cause and the model's S3 URI.
"""

import json
import socket

import pytest
from bike_local import accounting, streams
from bike_local.mlflow_layout import RUN_ID, run_prefix
from bike_local.reference import feature_record

from stack import ROOT

PUBLISH_BUDGET_SECONDS = "2"
MODEL_PREFIX = run_prefix(RUN_ID)  # the MLflow 2 layout, experiment 1
FIXTURES = ROOT / "tests/fixtures/models"


def start_function_publishing_through_a_relay(stack, shards):
    """Starts the function with the model on S3, publishing to Kinesis through a relay to the
    Kinesis stand-in that the test can break, and returns the relay."""
    stack.create_streams(shards=shards)
    stack.upload_model(MODEL_PREFIX)
    relay = stack.relay_to_kinesis()
    # The function resends for as long as its publishing budget allows: 2 s here, so that a
    # failing invocation ends soon (the emulator gives no deadline, and the default is 30 s).
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID,
                                   AWS_ENDPOINT_URL_KINESIS=relay.url,
                                   PUBLISH_BUDGET_SECONDS=PUBLISH_BUDGET_SECONDS)
    assert started.returncode == 0, started.stderr
    return relay


@pytest.mark.parametrize("outage", ["refused", "responses lost"])
def test_kinesis_unreachable_while_publishing_loses_no_prediction(stack, figures, outage):
    count, batch_size = 3000, 100
    relay = start_function_publishing_through_a_relay(stack, shards=2)
    stack.put([feature_record(pred_id % 2000, pred_id) for pred_id in range(count)])

    poller = stack.start_poller("--max-records", str(count), "--batch-size", str(batch_size),
                                "--max-retries", "30", "--timeout", "120")
    try:
        poller.wait_for(lambda batch: batch["predictions"] and not batch["batchItemFailures"],
                        count=3)
        if outage == "refused":
            relay.refuse()
        else:
            relay.lose_responses()
        failed = poller.wait_for(
            lambda batch: batch["batchItemFailures"] or "functionError" in batch, count=3)
        relay.restore()
        status, batches, summary = poller.finish()
    finally:
        poller.stop()
        relay.close()

    assert status == 0, summary
    assert summary["processed"] == count
    # Every record of a batch that could not be published was reported, none silently lost.
    assert all(batch["batchItemFailures"] == batch["records"] for batch in failed), failed
    assert summary["redeliveries"] >= len(failed)

    reports = accounting.batch_reports(stack.function_log())
    # Each invocation that reported failures sent its one call again and again until its
    # publishing budget was spent, then gave all its records up for re-delivery, and said so in
    # an error naming the stream.
    unpublished = [report for report in reports if report["redeliver"]]
    assert len(unpublished) == len([batch for batch in batches if batch["batchItemFailures"]])
    for report in unpublished:
        assert report["put_records_calls"] >= 2, report
        assert (report["put_records_resent"]
                == (report["put_records_calls"] - 1) * report["records"]), report
        assert report["redeliver"] == report["records"] and report["published"] == 0, report
    errors = [line for line in stack.function_errors()
              if line["message"] == "records not published; they are reported for re-delivery"]
    assert len(errors) == len(unpublished)
    assert {line["stream"] for line in errors} == {stack.output_stream}

    report = accounting.account(count, streams.read_stream(stack.kinesis, stack.output_stream),
                                reports)
    assert report["ok"], report
    assert report["missing"] == 0 and report["unexpected"] == 0
    # What the function counted as published is on the stream; more may be: a request whose
    # answer was lost counts as failed, and its records are published again.
    assert report["on_output_stream"] >= report["function"]["published"]
    # Refused, a record comes out twice only if its request was in flight when the relay
    # broke; with answers lost, each failed batch's records reached the stream in the failed
    # invocation (once per send) and again when re-delivered.
    if outage == "responses lost":
        assert report["duplicates"] >= failed[0]["records"], report
    figures(f"Kinesis outage ({outage}): {count} records, {len(unpublished)} invocations "
            f"reported failures, {summary['redeliveries']} re-deliveries, "
            f"{report['on_output_stream']} events on the output stream, "
            f"{report['duplicates']} duplicates, {report['missing']} missing; "
            f"first error: {errors[0]['last_error'][:90]}")


def test_kinesis_that_never_answers_is_reported_within_the_publish_budget(stack):
    relay = start_function_publishing_through_a_relay(stack, shards=1)
    stack.put([feature_record(row, row) for row in range(10)])
    relay.hang()

    # The emulator gives no usable deadline, so publishing has its 30 s budget (README,
    # delivery guarantee); with Lambda's deadline it ends 500 ms before it (tests/accounting.rs
    # checks that with 1,000 records). No re-delivery: the first answer decides.
    _, batches, _ = stack.poll("--max-records", "10", "--invoke-timeout", "45",
                               "--max-retries", "0", "--timeout", "60")

    first = batches[0]
    assert "functionError" not in first, first
    assert first["batchItemFailures"] == first["records"] == 10, first
    assert first["ms"] < 32_000, first


def cold_start_error(stack, **config: str) -> str:
    """Starts the function with `config`, which must fail; returns the `error` field of its
    one "cold start failed" log line."""
    started = stack.start_function(**config)
    assert started.returncode != 0, "the function started"
    assert "cold start failed" in started.stderr
    lines = [json.loads(line) for line in stack.function_log().splitlines()
             if line.startswith("{")]
    (failed,) = [line for line in lines if line.get("message") == "cold start failed"]
    assert failed["level"] == "ERROR"
    return failed["error"]


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that refuses connections: bound by the test, never listening, so
    nothing else can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_s3_unreachable_fails_the_cold_start_naming_the_model_uri(stack, closed_port):
    stack.create_streams(shards=1)
    stack.upload_model(MODEL_PREFIX)

    error = cold_start_error(stack, MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID,
                             AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{closed_port}")

    uri = f"s3://{stack.bucket}/{MODEL_PREFIX}"
    assert f"cannot read {uri}/MLmodel (model at {uri})" in error, error
    assert "connection refused" in error.lower() or "dispatch failure" in error.lower(), error


def test_a_missing_model_object_fails_the_cold_start_naming_it(stack):
    stack.create_streams(shards=1)
    stack.upload_model(MODEL_PREFIX)
    stack.s3.delete_object(Bucket=stack.bucket, Key=f"{MODEL_PREFIX}/model.onnx")

    error = cold_start_error(stack, MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID)

    uri = f"s3://{stack.bucket}/{MODEL_PREFIX}"
    assert f"no model at {uri}: {uri}/model.onnx does not exist" in error, error


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_model_file_that_is_not_onnx_fails_the_cold_start_naming_it(stack, damage):
    stack.create_streams(shards=1)
    stack.upload_model(MODEL_PREFIX)
    onnx = (ROOT / "models/bike-demand/model.onnx").read_bytes()
    # Text where the model should be, or the first half of the model (an interrupted upload).
    body = b"this is not an ONNX model\n" * 100 if damage == "garbage" else onnx[:len(onnx) // 2]
    stack.s3.put_object(Bucket=stack.bucket, Key=f"{MODEL_PREFIX}/model.onnx", Body=body)

    error = cold_start_error(stack, MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID)

    assert f"s3://{stack.bucket}/{MODEL_PREFIX}/model.onnx is not an ONNX model" in error, error


# The fixtures' inputs as models/make_test_fixtures.py builds them, and what the message must
# say about each (a tuple: any one of its spellings).
INCOMPATIBLE_MODELS = {
    # Two float inputs `a` and `b` that no column of the signature names: the message names
    # both inputs and the columns.
    "two-inputs": ["`a` (float32 [-1, 2]), `b` (float32 [-1, 2])", "no column of that name"],
    # One int64 input fed by float columns: the message names the column type and the input.
    "int-input": ["column `t1` is `float`", "`input` (int64 [-1, 4])"],
    # No signature in MLmodel: nothing says which feature feeds which input.
    "no-signature": ["no usable input signature", "infer_signature"],
    # A signature of five columns for a four-column input.
    "wrong-width": ["windspeed", "[N, 5]"],
}


@pytest.mark.parametrize("fixture", INCOMPATIBLE_MODELS)
def test_a_model_whose_inputs_do_not_match_fails_the_cold_start_saying_why(stack, fixture):
    stack.create_streams(shards=1)
    stack.upload_model(MODEL_PREFIX, source=FIXTURES / fixture)

    error = cold_start_error(stack, MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID)

    assert f"s3://{stack.bucket}/{MODEL_PREFIX}" in error, error
    for expected in INCOMPATIBLE_MODELS[fixture]:
        spellings = expected if isinstance(expected, tuple) else (expected,)
        assert any(spelling.lower() in error.lower() for spelling in spellings), (expected, error)
