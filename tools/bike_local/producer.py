"""Putting records on a Kinesis stream as a producer must: 500 entries per PutRecords call,
and the entries a call refuses (a shard over its write limit refuses entries with
ProvisionedThroughputExceededException) sent again, in their original order, after a growing
pause. Used by the end-to-end tests and, as a command, by scripts/data_in.sh N:

    python -m bike_local.producer --stream passenger_events N

puts reference.feature_records(N) (record i: pred_id i, partition key "i", reference row
i mod 2000), with one process making every call: the AWS CLI starts a new interpreter for each
call, which costs more than the call itself. An entry still refused after --max-attempts sends
is an error; one JSON summary line goes to stderr. It uses boto3 with the standard AWS
configuration (AWS_ENDPOINT_URL_KINESIS for local servers).
"""

import argparse
import json
import sys
import time

from bike_local import reference

MAX_RECORDS_PER_CALL = 500  # PutRecords' limit
BASE_DELAY_SECONDS = 0.1  # before the first resend of refused entries; doubled for each later one
DEFAULT_MAX_ATTEMPTS = 6  # about 3 s of pauses: a shard's buckets refill in one


class NotAccepted(RuntimeError):
    """Entries still refused after the last attempt."""


def put_chunk(kinesis, stream: str, entries: list[dict],
              max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Puts one call's worth of PutRecords entries, resending refused ones; returns the
    resends. Raises NotAccepted naming the error codes if some are refused every time."""
    resent = 0
    for attempt in range(1, max_attempts + 1):
        response = kinesis.put_records(StreamName=stream, Records=entries)
        if response["FailedRecordCount"] == 0:
            return resent
        refused = [entry for entry, result in zip(entries, response["Records"])
                   if "ErrorCode" in result]
        if attempt == max_attempts:
            errors = sorted({result["ErrorCode"] for result in response["Records"]
                             if "ErrorCode" in result})
            raise NotAccepted(f"{len(refused)} records not accepted by {stream} after "
                              f"{max_attempts} sends ({', '.join(errors)})")
        resent += len(refused)
        entries = refused
        time.sleep(BASE_DELAY_SECONDS * 2 ** (attempt - 1))
    return resent


def put_all(kinesis, stream: str, entries: list[dict],
            max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Puts every entry, in calls of up to 500, each resending what it had refused; returns
    the resends."""
    return sum(put_chunk(kinesis, stream, entries[start:start + MAX_RECORDS_PER_CALL],
                         max_attempts)
               for start in range(0, len(entries), MAX_RECORDS_PER_CALL))


def main() -> int:
    import boto3  # only the command needs AWS; the tests bring their own client

    parser = argparse.ArgumentParser(description="Puts N feature records on a Kinesis stream.")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                        help=f"sends of one entry before giving up (default {DEFAULT_MAX_ATTEMPTS})")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    if args.count < 1:
        parser.error("N must be a positive integer")

    started = time.monotonic()
    entries = [{"Data": data, "PartitionKey": key}
               for data, key in reference.feature_records(args.count)]
    try:
        resent = put_all(boto3.client("kinesis"), args.stream, entries, args.max_attempts)
    except NotAccepted as error:
        print(f"producer: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"stream": args.stream, "records": args.count, "resent": resent,
                      "seconds": round(time.monotonic() - started, 3)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
