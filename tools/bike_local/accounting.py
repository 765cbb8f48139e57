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

Usage: python -m bike_local.accounting --stream OUTPUT_STREAM --count N [--function-log PATH]
Prints one JSON report on stdout; exit status 1 if anything is missing, unexpected or wrong.
The tests (tests/e2e) use `batch_reports` and `account`, with streams.read_stream.
"""

import argparse
import json
import math
import pathlib
import sys

from bike_local import reference, streams

SAMPLE = 10  # ids listed in the report when some are missing or unexpected


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


def account(count: int, output: list[dict], batches: list[dict]) -> dict:
    """The end-to-end accounting of pred_ids 0..count-1 against the output stream's records
    (as streams.read_stream gives them) and the function's batch reports; `ok` says whether
    nothing is missing, unexpected or wrong."""
    seen = [0] * count
    unexpected, wrong = [], []
    for record in output:
        key = record["PartitionKey"]
        try:
            event = json.loads(record["Data"])
            pred_id = event["prediction"]["pred_id"]
            cnt = event["prediction"]["cnt"]
        except (ValueError, KeyError, TypeError):
            unexpected.append(key)
            continue
        if not isinstance(pred_id, int) or not 0 <= pred_id < count or key != str(pred_id):
            unexpected.append(key)
            continue
        seen[pred_id] += 1
        if not math.isclose(cnt, reference.expected(pred_id), rel_tol=reference.REL_TOL):
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
    output = streams.read_stream(boto3.client("kinesis"), args.stream)
    batches = batch_reports(args.function_log.read_text()) if args.function_log else []
    report = account(args.count, output, batches)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
