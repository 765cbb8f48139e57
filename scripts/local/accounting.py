#!/usr/bin/env python3
"""Checks, end to end, that every record put on the input stream came out.

The records are those scripts/data_in.sh N puts (pred_id i carries reference row i mod 2000),
so what the output stream must hold is known without trusting the function: one prediction
event per pred_id 0..N-1, each with the prediction the Python onnxruntime gives for its row
(tests/fixtures/reference.json, within a relative 1e-4). Delivery is at-least-once, so an
event may come out more than once: duplicates are counted, not errors. A missing pred_id, an
event for a pred_id that was never put, or a wrong prediction is an error.

The function's log adds its side of the accounting: one "batch handled" line per invocation,
whose counts must balance (records = published + rejected + reported for re-delivery, as no
dead-letter stream is used here) and whose times give the function's own handling time.

Usage: accounting.py --stream OUTPUT_STREAM --count N [--function-log PATH]
Prints one JSON report on stdout; exit status 1 if anything is missing, unexpected or wrong.
Importable: tests/e2e use `read_stream`, `batch_reports` and `account`.
"""

import argparse
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests/fixtures/reference.json"
REL_TOL = 1e-4
SAMPLE = 10  # ids listed in the report when some are missing or unexpected


def read_stream(kinesis, stream: str) -> list[tuple[str, bytes]]:
    """Every record on `stream`, all shards read from the start to the end: (partition key,
    data)."""
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records += [(r["PartitionKey"], r["Data"]) for r in page["Records"]]
            # An empty page with the reader not behind the tip is the end of an open shard.
            more = page["Records"] or page.get("MillisBehindLatest", 0) > 0
            iterator = page.get("NextShardIterator") if more else None
    return records


def batch_reports(log: str) -> list[dict]:
    """The function's "batch handled" log lines (JSON), in order."""
    reports = []
    for line in log.splitlines():
        if '"batch handled"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "batch handled":
            reports.append(entry)
    return reports


def account(count: int, output: list[tuple[str, bytes]], batches: list[dict]) -> dict:
    """The end-to-end accounting of pred_ids 0..count-1 against the output stream's records and
    the function's batch reports; `ok` says whether nothing is missing, unexpected or wrong."""
    reference = json.loads(REFERENCE.read_text())
    expected = reference["models"]["bike-demand"]
    seen = [0] * count
    unexpected, wrong = [], []
    for key, data in output:
        try:
            event = json.loads(data)
            pred_id = event["prediction"]["pred_id"]
            cnt = event["prediction"]["cnt"]
        except (ValueError, KeyError, TypeError):
            unexpected.append(key)
            continue
        if not isinstance(pred_id, int) or not 0 <= pred_id < count or key != str(pred_id):
            unexpected.append(key)
            continue
        seen[pred_id] += 1
        if not math.isclose(cnt, expected[pred_id % len(expected)], rel_tol=REL_TOL):
            wrong.append(pred_id)
    missing = [pred_id for pred_id, times in enumerate(seen) if times == 0]

    totals = {name: sum(batch.get(name, 0) for batch in batches)
              for name in ("records", "predicted", "published", "rejected", "redeliver",
                           "put_records_calls", "put_records_resent", "put_records_throttled")}
    times = {name: round(sum(batch.get(name, 0.0) for batch in batches), 3)
             for name in ("decode_ms", "inference_ms", "publish_ms", "total_ms")}
    unbalanced = [b for b in batches
                  if b["records"] != b["published"] + b["rejected"] + b["redeliver"]]

    return {
        "records_in": count,
        "on_output_stream": len(output),
        "predicted_ids": count - len(missing),
        "duplicates": sum(times - 1 for times in seen if times > 1),
        "missing": len(missing),
        "missing_sample": missing[:SAMPLE],
        "unexpected": len(unexpected),
        "unexpected_sample": unexpected[:SAMPLE],
        "wrong_predictions": len(wrong),
        "function": {"batches": len(batches), **totals, **times,
                     "unbalanced_batches": len(unbalanced)},
        "ok": not (missing or unexpected or wrong or unbalanced),
    }


def main() -> int:
    import boto3  # only the command needs AWS; the tests bring their own client

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", required=True, help="the output stream")
    parser.add_argument("--count", type=int, required=True, help="N, as given to data_in.sh")
    parser.add_argument("--function-log", type=pathlib.Path,
                        help="the function's log (function.log of scripts/local/function.sh)")
    args = parser.parse_args()
    output = read_stream(boto3.client("kinesis"), args.stream)
    batches = batch_reports(args.function_log.read_text()) if args.function_log else []
    report = account(args.count, output, batches)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
