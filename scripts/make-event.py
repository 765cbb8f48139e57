#!/usr/bin/env python3
"""Writes a Lambda Kinesis event with N records of real bike-sharing rows to stdout.

The rows come from tests/fixtures/reference.json (real data, see models/bike-demand/README.md),
rotated so that a large event holds varied rows. Usage: scripts/make-event.py N > event.json
"""
import base64
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/passenger_events"


def record(index: int, columns: list, row: list) -> dict:
    payload = {"features": dict(zip(columns, row)), "pred_id": index}
    sequence_number = f"49633930873543048396023173467440720160140773540{index:010d}"
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": str(index),
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "approximateArrivalTimestamp": 1665200574.31,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-kinesis",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    reference = json.loads((ROOT / "tests/fixtures/reference.json").read_text())
    columns, rows = reference["columns"], reference["rows"]
    records = [record(i, columns, rows[i % len(rows)]) for i in range(count)]
    json.dump({"Records": records}, sys.stdout)


if __name__ == "__main__":
    main()
