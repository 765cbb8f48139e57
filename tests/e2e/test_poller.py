"""The poller delivers a stream the way Lambda's event source mapping does.

Here the function is a stand-in HTTP server that records each event and answers as told, so
the event's shape and the re-delivery rules are checked without the Rust binary.
"""

import base64
import http.server
import json
import threading

import pytest
from bike_local.reference import feature_record


class FakeFunction:
    """An invoke endpoint that records events and answers with `answer(event)`:
    (HTTP status, JSON body)."""

    def __init__(self, answer):
        self.events = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.events.append(event)
                status, body = answer(event)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/2015-03-31/functions/_/invocations"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[list[str]]:
        """Sequence numbers of each delivery, in order."""
        return [[r["kinesis"]["sequenceNumber"] for r in e["Records"]] for e in self.events]


@pytest.fixture
def fake(request):
    functions = []

    def start(answer):
        functions.append(FakeFunction(answer))
        return functions[-1]

    yield start
    for function in functions:
        function.server.shutdown()


def ok(event):
    return 200, {"predictions": [], "rejected": [], "batchItemFailures": []}


def test_event_has_the_shape_lambda_gives_it(stack, fake):
    stack.create_streams(shards=1)
    record = feature_record(0, 123)
    stack.put([record])
    function = fake(ok)

    status, _, _ = stack.poll("--max-records", "1", invoke_url=function.url)

    assert status == 0
    (event,) = function.events
    (item,) = event["Records"]
    arn = stack.kinesis.describe_stream_summary(StreamName=stack.input_stream)[
        "StreamDescriptionSummary"]["StreamARN"]
    sequence_number = item["kinesis"]["sequenceNumber"]
    assert item == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "123",
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(record[0]).decode(),
            "approximateArrivalTimestamp": item["kinesis"]["approximateArrivalTimestamp"],
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{arn.split(':')[4]}:role/lambda-kinesis",
        "awsRegion": arn.split(":")[3],
        "eventSourceARN": arn,
    }
    assert isinstance(item["kinesis"]["approximateArrivalTimestamp"], float)


def test_batch_item_failures_redeliver_from_the_lowest_reported_record(stack, fake):
    stack.create_streams(shards=1)
    stack.put([feature_record(row, row) for row in range(10)])

    def fail_records_6_and_3_once(event):
        sequence = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        if len(function.events) == 1:
            return 200, {"batchItemFailures": [{"itemIdentifier": sequence[6]},
                                               {"itemIdentifier": sequence[3]}]}
        return ok(event)

    function = fake(fail_records_6_and_3_once)
    status, _, summary = stack.poll("--max-records", "10", invoke_url=function.url)

    assert status == 0, summary
    first, second = function.delivered()
    assert len(first) == 10 and second == first[3:]
    assert summary["redeliveries"] == 1 and summary["processed"] == 10


def test_a_function_error_redelivers_the_whole_batch_then_gives_up(stack, fake):
    stack.create_streams(shards=1)
    stack.put([feature_record(row, row) for row in range(5)])
    function = fake(lambda event: (500, {"errorType": "Boom", "errorMessage": "always"}))

    status, _, summary = stack.poll("--until-idle", "--max-retries", "2", invoke_url=function.url)

    assert status == 1 and summary["reason"] == "retries exhausted"
    deliveries = function.delivered()
    assert len(deliveries) == 3 and all(d == deliveries[0] for d in deliveries)
    assert summary["functionErrors"] == 3 and summary["processed"] == 0


def test_batches_respect_the_batch_size_and_cover_every_shard(stack, fake):
    stack.create_streams(shards=3)
    stack.put([feature_record(row, row) for row in range(95)])
    function = fake(ok)

    status, batches, summary = stack.poll("--until-idle", "--idle-seconds", "0.5",
                                          "--batch-size", "10", invoke_url=function.url)

    assert status == 0, summary
    assert summary["processed"] == 95 and summary["reason"] == "idle"
    assert all(len(d) <= 10 for d in function.delivered())
    assert {b["shard"] for b in batches} == {f"shardId-00000000000{i}" for i in range(3)}
