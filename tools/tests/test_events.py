"""bike_local.events: the event Lambda builds, read back the way the function reads it."""

import base64
import datetime
import json

from bike_local import events, reference

STREAM_ARN = "arn:aws:kinesis:eu-west-1:111122223333:stream/in"


def get_records_record(data: bytes, key: str, sequence_number: str) -> dict:
    """A record as boto3's GetRecords gives it."""
    arrival = datetime.datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=datetime.timezone.utc)
    return {"Data": data, "PartitionKey": key, "SequenceNumber": sequence_number,
            "ApproximateArrivalTimestamp": arrival}


def test_an_event_of_read_records_carries_each_records_bytes_key_and_sequence_number():
    read = [get_records_record(b"\x00\xffnot text", "a", "1"),
            get_records_record(b'{"pred_id": 2}', "b", "2")]

    items = events.from_records(read, "shardId-000000000003", STREAM_ARN,
                                events.role_arn(STREAM_ARN))

    decoded = [(base64.b64decode(item["kinesis"]["data"]), item["kinesis"]["partitionKey"],
                item["kinesis"]["sequenceNumber"]) for item in items]
    assert decoded == [(b"\x00\xffnot text", "a", "1"), (b'{"pred_id": 2}', "b", "2")]
    first = items[0]
    assert first["eventID"] == "shardId-000000000003:1"
    assert first["eventSourceARN"] == STREAM_ARN and first["awsRegion"] == "eu-west-1"
    assert first["invokeIdentityArn"] == "arn:aws:iam::111122223333:role/lambda-kinesis"
    assert first["kinesis"]["approximateArrivalTimestamp"] == 1767268800.25


def test_the_payload_holds_as_many_records_as_fit_in_6_mb_and_is_their_event():
    # Records of 1 MiB of data: about 1.4 MB each in base64, so four fit and the fifth not.
    read = [get_records_record(b"x" * 2**20, str(i), str(i)) for i in range(6)]
    items = events.from_records(read, "shardId-000000000000", STREAM_ARN, "role")

    count, payload = events.fitting_payload(items)

    assert count == 4
    assert len(payload) <= events.MAX_PAYLOAD_BYTES
    assert json.loads(payload) == {"Records": items[:4]}
    assert len(json.dumps({"Records": items[:5]})) > events.MAX_PAYLOAD_BYTES


def test_a_record_alone_over_the_payload_limit_still_goes():
    read = [get_records_record(b"x" * 5 * 2**20, "big", "1")]
    items = events.from_records(read, "shardId-000000000000", STREAM_ARN, "role")

    count, payload = events.fitting_payload(items)

    assert count == 1 and len(payload) > events.MAX_PAYLOAD_BYTES


def test_the_sample_event_holds_reference_rows_in_turn():
    rows = len(reference.rows())
    event = events.sample_event(rows + 2)

    records = event["Records"]
    assert len(records) == rows + 2
    last = json.loads(base64.b64decode(records[-1]["kinesis"]["data"]))
    assert last == {"features": reference.features(1), "pred_id": rows + 1}
    assert records[-1]["kinesis"]["partitionKey"] == str(rows + 1)
    numbers = [int(r["kinesis"]["sequenceNumber"]) for r in records]
    assert numbers == sorted(set(numbers))
    assert {r["eventSourceARN"] for r in records} == {events.SAMPLE_STREAM_ARN}
