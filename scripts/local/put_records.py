#!/usr/bin/env python3
"""Puts N bike-demand feature records on a Kinesis stream, 500 per PutRecords call.

Record i (i = 0..N-1) has pred_id i, partition key "i" and the features of row i mod 2000 of
tests/fixtures/reference.json, whose predictions are known: the records scripts/data_in.sh N
puts. One process making every call is what makes 100,000 records practical; the AWS CLI
starts a new interpreter for each call, which costs more than the call itself.

PutRecords accepts or refuses each entry on its own (a shard over its write limit refuses
entries with ProvisionedThroughputExceededException), so refused entries are sent again, in
their original order, after a growing pause; an entry still refused after --max-attempts sends
is an error. One JSON summary line goes to stderr.

Uses boto3 with the standard AWS configuration (AWS_ENDPOINT_URL_KINESIS for local servers).
Usage: put_records.py --stream passenger_events N
"""

import argparse
import json
import pathlib
import sys
import time

import boto3

from bike_local.producer import DEFAULT_MAX_ATTEMPTS, NotAccepted, put_all

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests/fixtures/reference.json"


def records(count: int) -> list[dict]:
    """The N records, as PutRecords entries, in pred_id order."""
    reference = json.loads(REFERENCE.read_text())
    columns, rows = reference["columns"], reference["rows"]
    return [
        {
            "Data": json.dumps({"features": dict(zip(columns, rows[i % len(rows)])),
                                "pred_id": i}).encode(),
            "PartitionKey": str(i),
        }
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True)
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                        help=f"sends of one entry before giving up (default {DEFAULT_MAX_ATTEMPTS})")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    if args.count < 1:
        parser.error("N must be a positive integer")

    started = time.monotonic()
    kinesis = boto3.client("kinesis")
    entries = records(args.count)
    try:
        resent = put_all(kinesis, args.stream, entries, args.max_attempts)
    except NotAccepted as error:
        print(f"put_records: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"stream": args.stream, "records": args.count, "resent": resent,
                      "seconds": round(time.monotonic() - started, 3)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
