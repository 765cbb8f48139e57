#!/usr/bin/env python3
"""Feeds a Kinesis stream to a Lambda function the way Lambda's event source mapping does.

Locally there is no Lambda service to read the input stream, so this plays that part: it reads
every shard (from TRIM_HORIZON, or after the sequence numbers saved in --checkpoint), builds the
Kinesis event exactly as Lambda builds it, invokes the function at --invoke-url (the
`/2015-03-31/functions/<name>/invocations` endpoint of `cargo lambda watch` or of any Lambda
emulator), and acts on the answer as Lambda does with ReportBatchItemFailures:

- `batchItemFailures` lists sequence numbers: the shard is checkpointed just before the lowest
  one and re-read from there, so that record and all after it are delivered again;
- a function error (HTTP error, X-Amz-Function-Error, a timeout, or a failure id that is not in
  the batch) re-delivers the whole batch;
- after --max-retries re-deliveries of the same position it stops with an error, where Lambda
  would keep retrying (or discard the records, with MaximumRetryAttempts).

It stops when --max-records records are processed, when the stream is idle (--until-idle), or
at --timeout, whichever is first: it never runs forever. One JSON line per batch and a final
summary line go to stderr. Exit status: 0 done, 1 retries exhausted or function unreachable,
3 timed out before --max-records were processed.

Uses boto3 with the standard AWS configuration (AWS_ENDPOINT_URL_KINESIS for local servers).
Usage: poller.py --stream passenger_events --invoke-url URL [--batch-size 100] [--until-idle]
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

import boto3

from bike_local import events

MAX_BATCH_SIZE = 10_000  # the largest BatchSize Lambda accepts for Kinesis
POLL_INTERVAL_SECONDS = 0.2  # pause after a round in which no shard had records


class FunctionError(Exception):
    """The function failed on the batch as a whole: Lambda retries the whole batch."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", default=os.environ.get("INPUT_STREAM", "passenger_events"),
                        help="input stream name (default: $INPUT_STREAM or passenger_events)")
    parser.add_argument("--invoke-url", default=os.environ.get("FUNCTION_INVOKE_URL"),
                        help="the function's invoke URL (default: $FUNCTION_INVOKE_URL)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help=f"most records per invocation, 1..{MAX_BATCH_SIZE} (default 100)")
    parser.add_argument("--until-idle", action="store_true",
                        help="stop once no shard has had new records for --idle-seconds")
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument("--max-records", type=int, help="stop after processing this many records")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="stop after this many seconds in any case (default 300)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="re-deliveries of the same position before giving up (default 3)")
    parser.add_argument("--invoke-timeout", type=float, default=60.0,
                        help="seconds to wait for one invocation (default 60)")
    parser.add_argument("--checkpoint", help="JSON file of the last processed sequence number "
                        "per shard: read at start if present, written after each batch")
    parser.add_argument("--role-arn", help="invokeIdentityArn in the event (default: "
                        "arn:aws:iam::<stream's account>:role/lambda-kinesis)")
    args = parser.parse_args()
    if not args.invoke_url:
        parser.error("--invoke-url (or FUNCTION_INVOKE_URL) is required")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        parser.error(f"--batch-size must be within 1..{MAX_BATCH_SIZE}")
    return args


def log(**fields) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


def fitting_event(records: list, shard_id: str, stream_arn: str,
                  role_arn: str) -> tuple[list, bytes]:
    """The longest prefix of `records` whose event fits in one invocation's payload, and that
    event's JSON: Lambda fills a batch up to the payload limit rather than the batch size alone."""
    count, payload = events.fitting_payload(
        events.from_records(records, shard_id, stream_arn, role_arn))
    return records[:count], payload


def invoke(url: str, payload: bytes, timeout: float) -> dict:
    """Invokes the function synchronously and returns its JSON response."""
    request = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            # Real Lambda answers 200 and flags function errors with this header; the
            # cargo-lambda emulator answers them with HTTP 500 instead (handled below).
            if response.headers.get("X-Amz-Function-Error"):
                raise FunctionError(body.decode("utf-8", "replace")[:1000])
    except urllib.error.HTTPError as error:
        raise FunctionError(f"HTTP {error.code}: {error.read().decode('utf-8', 'replace')[:1000]}")
    except (TimeoutError, socket.timeout):
        raise FunctionError(f"no response within {timeout} s")
    try:
        return json.loads(body)
    except ValueError:
        raise FunctionError(f"response is not JSON: {body[:200]!r}")


def first_failure(response: dict, records: list) -> int | None:
    """Index in `records` from which to re-deliver, or None if the batch succeeded.

    As Lambda does: the lowest reported sequence number wins; an empty or unknown id fails
    the whole batch.
    """
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return None
    index = {record["SequenceNumber"]: i for i, record in enumerate(records)}
    positions = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in index:
            raise FunctionError(f"batchItemFailures names {identifier!r}, not in the batch")
        positions.append(index[identifier])
    return min(positions)


class Shard:
    """Reading position in one shard: the last processed sequence number and an iterator."""

    def __init__(self, kinesis, stream: str, shard_id: str, checkpoint: str | None):
        self.kinesis, self.stream, self.id = kinesis, stream, shard_id
        self.checkpoint = checkpoint
        self.iterator = None
        self.finished = False  # a closed shard read to its end
        self.pending = []  # records fetched but not yet delivered
        self.failed = None  # sequence number of the record that failed last, to re-deliver
        self.failures = 0  # deliveries in a row that failed at self.failed

    def rewind(self, sequence_number: str | None) -> None:
        """Reads from just after `sequence_number` (from the start if None)."""
        if sequence_number is None:
            kwargs = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                      "StartingSequenceNumber": sequence_number}
        self.iterator = self.kinesis.get_shard_iterator(
            StreamName=self.stream, ShardId=self.id, **kwargs
        )["ShardIterator"]
        self.pending = []
        self.finished = False

    def fetch(self, limit: int) -> tuple[list, bool]:
        """Up to `limit` records to deliver next, and whether the shard may hold more now
        (AWS can return an empty page while the reader is still behind the tip)."""
        behind = False
        if len(self.pending) < limit and not self.finished:
            if self.iterator is None:
                self.rewind(self.checkpoint)
            page = self.kinesis.get_records(ShardIterator=self.iterator, Limit=limit)
            self.pending.extend(page["Records"])
            self.iterator = page.get("NextShardIterator")
            self.finished = self.iterator is None
            behind = page.get("MillisBehindLatest", 0) > 0
        return self.pending[:limit], behind


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    kinesis = boto3.client("kinesis")
    stream_arn = kinesis.describe_stream_summary(StreamName=args.stream)[
        "StreamDescriptionSummary"]["StreamARN"]
    role_arn = args.role_arn or events.role_arn(stream_arn)
    saved = {}
    if args.checkpoint and os.path.exists(args.checkpoint):
        with open(args.checkpoint) as f:
            saved = json.load(f)
    # One ListShards page holds up to 1000 shards: plenty for the streams this is used with.
    shards = [
        Shard(kinesis, args.stream, shard["ShardId"], saved.get(shard["ShardId"]))
        for shard in kinesis.list_shards(StreamName=args.stream)["Shards"]
    ]

    totals = dict(batches=0, records=0, processed=0, predictions=0, rejected=0,
                  batchItemFailures=0, redeliveries=0, functionErrors=0)
    last_records_at = time.monotonic()

    def finish(status: int, reason: str) -> int:
        log(final=True, reason=reason, exit=status,
            seconds=round(time.monotonic() - started, 3), **totals)
        return status

    def save_checkpoint() -> None:
        if args.checkpoint:
            with open(args.checkpoint + ".part", "w") as f:
                json.dump({s.id: s.checkpoint for s in shards if s.checkpoint}, f)
            os.replace(args.checkpoint + ".part", args.checkpoint)

    while True:
        if args.max_records is not None and totals["processed"] >= args.max_records:
            return finish(0, "max-records")
        if time.monotonic() - started >= args.timeout:
            if args.max_records is not None:
                return finish(3, "timeout")
            return finish(0, "timeout")
        if args.until_idle and time.monotonic() - last_records_at >= args.idle_seconds:
            return finish(0, "idle")

        active = False
        for shard in shards:
            limit = args.batch_size
            if args.max_records is not None:
                limit = max(1, min(limit, args.max_records - totals["processed"]))
            records, behind = shard.fetch(limit)
            active = active or behind
            if not records:
                continue
            active = True
            records, payload = fitting_event(records, shard.id, stream_arn, role_arn)

            first = records[0]["SequenceNumber"]
            redelivery = first == shard.failed
            totals["batches"] += 1
            totals["records"] += len(records)
            totals["redeliveries"] += redelivery

            invoked = time.monotonic()
            try:
                response = invoke(args.invoke_url, payload, args.invoke_timeout)
                failed_from = first_failure(response, records)
                error = None
            except FunctionError as failure:
                response, failed_from, error = {}, 0, str(failure)
                totals["functionErrors"] += 1
            except OSError as unreachable:  # refused, reset: the emulator is not there
                log(shard=shard.id, error=f"cannot invoke {args.invoke_url}: {unreachable}")
                return finish(1, "function unreachable")

            predictions = len(response.get("predictions") or [])
            rejected = len(response.get("rejected") or [])
            failures = len(response.get("batchItemFailures") or [])
            totals["predictions"] += predictions
            totals["rejected"] += rejected
            totals["batchItemFailures"] += failures
            done = len(records) if failed_from is None else failed_from
            totals["processed"] += done
            log(shard=shard.id, first=first, last=records[-1]["SequenceNumber"],
                records=len(records), predictions=predictions, rejected=rejected,
                batchItemFailures=failures, redelivery=redelivery,
                ms=round((time.monotonic() - invoked) * 1e3, 1),
                **({"functionError": error} if error else {}))

            if done:
                shard.checkpoint = records[done - 1]["SequenceNumber"]
                save_checkpoint()
            if failed_from is None:
                shard.pending = shard.pending[len(records):]
                shard.failed, shard.failures = None, 0
                continue
            failed = records[failed_from]["SequenceNumber"]
            shard.failures = shard.failures + 1 if failed == shard.failed else 1
            shard.failed = failed
            if shard.failures > args.max_retries:
                log(shard=shard.id, error=f"record {failed} still failing after "
                    f"{args.max_retries} re-deliveries; stopping")
                return finish(1, "retries exhausted")
            # Re-read from the failed record on: the records after it come again too.
            shard.rewind(shard.checkpoint)

        if active:
            last_records_at = time.monotonic()
        else:
            time.sleep(POLL_INTERVAL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
