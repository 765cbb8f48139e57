"""The Kinesis event Lambda's event source mapping passes to the function.

One event holds records of one shard, each with its data in base64 and the fields Lambda adds
(sequence number, partition key, the stream's ARN, ...); an invocation's payload is at most
6 MB, so Lambda fills a batch up to that size rather than to the batch size alone. Used by
scripts/local/poller.py (events from records read off a stream) and scripts/make-event.py
(an event of reference rows, with made-up sequence numbers).
"""

import base64
import json

from bike_local import reference

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's limit on a synchronous invocation's payload."""
ROLE_NAME = "lambda-kinesis"
"""The execution role named in `invokeIdentityArn`, in the stream's account."""
SAMPLE_STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/passenger_events"
"""The input stream of the sample events (events/sample.json, `sample_event`)."""
SAMPLE_SHARD = "shardId-000000000000"
SAMPLE_ARRIVAL = 1665200574.31
"""The arrival time of every record of `sample_event` (seconds since the epoch)."""


def role_arn(stream_arn: str) -> str:
    """The `invokeIdentityArn` Lambda gives for `stream_arn`: a role in the stream's account."""
    return f"arn:aws:iam::{stream_arn.split(':')[4]}:role/{ROLE_NAME}"


def record(data: bytes, partition_key: str, sequence_number: str, arrival: float,
           shard_id: str, stream_arn: str, role: str) -> dict:
    """One record of the event, as Lambda writes it (in Lambda's order of fields)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": role,
        "awsRegion": stream_arn.split(":")[3],
        "eventSourceARN": stream_arn,
    }


def from_records(records: list[dict], shard_id: str, stream_arn: str, role: str) -> list[dict]:
    """The event's records for GetRecords records (boto3's: `Data` in bytes, the arrival time
    a datetime) of one shard."""
    return [record(r["Data"], r["PartitionKey"], r["SequenceNumber"],
                   round(r["ApproximateArrivalTimestamp"].timestamp(), 3), shard_id,
                   stream_arn, role)
            for r in records]


def fitting_payload(items: list[dict]) -> tuple[int, bytes]:
    """How many of the event's records `items` fit in one invocation's payload, from the
    first, and that event's JSON. A record alone over the limit still goes, and fails as it
    would on Lambda."""
    encoded = [json.dumps(item) for item in items]
    # json.dumps({"Records": items}) is exactly this text, so its size adds up item by item.
    size, count = len('{"Records": []}'), 0
    for item in encoded:
        added = len(item) + (len(", ") if count else 0)  # ASCII: characters are bytes
        if count and size + added > MAX_PAYLOAD_BYTES:
            break
        size, count = size + added, count + 1
    return count, ('{"Records": [' + ", ".join(encoded[:count]) + "]}").encode()


def sample_event(count: int) -> dict:
    """An event of `count` records of reference rows: record i has pred_id i, partition key
    "i" and row i mod 2000 (reference.feature_record), on the sample stream. Byte for byte
    what the benches build (benches/common/mod.rs, `kinesis_event`)."""
    items = []
    for index in range(count):
        data, key = reference.feature_record(index % len(reference.rows()), index)
        sequence_number = f"49633930873543048396023173467440720160140773540{index:010d}"
        items.append(record(data, key, sequence_number, SAMPLE_ARRIVAL, SAMPLE_SHARD,
                            SAMPLE_STREAM_ARN, role_arn(SAMPLE_STREAM_ARN)))
    return {"Records": items}
