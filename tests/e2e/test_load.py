"""Load, at a size every test run can afford: thousands of records through the real pieces,
each one accounted for at the end.

The full-size run is scripts/perf/load.sh (100,000 records by default); the first test here
makes the same end-to-end check with bad records mixed in, the second runs the script itself
on a few records, as the README's readers would, and checks it leaves nothing running.
"""

import json
import os
import re
import socket
import subprocess

from bike_local import accounting, streams
from bike_local.mlflow_layout import RUN_ID, run_prefix
from bike_local.reference import feature_record

from stack import ROOT

MODEL_PREFIX = run_prefix(RUN_ID)

# Records that can never be predicted, one of each kind the function must reject (and keep).
BAD_RECORDS = [
    b"this is not JSON",
    b"\xff\xfe not UTF-8",
    b'["an", "array"]',
    b'{"pred_id": 1}',
    b'{"features": {"t1": 2, "t2": 3, "hum": 50}, "pred_id": "no-weather-code"}',
    b'{"features": {"t1": "warm", "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": "t1-text"}',
    b'{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}}',
]


def test_every_record_of_a_load_is_published_or_rejected_and_none_is_missing(stack, figures):
    count, bad_every = 5000, 100
    stack.create_streams(shards=4)
    stack.upload_model(MODEL_PREFIX)
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID)
    assert started.returncode == 0, started.stderr
    records = []
    for pred_id in range(count):
        records.append(feature_record(pred_id % 2000, pred_id))
        if pred_id % bad_every == 0:
            bad = len(records)
            records.append((BAD_RECORDS[bad % len(BAD_RECORDS)], f"bad-{bad}"))
    rejected = len(records) - count
    stack.put(records)

    # Batches as large as Lambda allows: up to 10,000 records within its 6 MB payload.
    status, batches, summary = stack.poll("--max-records", str(len(records)),
                                          "--batch-size", "10000")

    assert status == 0, summary
    assert summary["processed"] == len(records)
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0
    assert summary["predictions"] == count and summary["rejected"] == rejected
    reports = accounting.batch_reports(stack.function_log())
    report = accounting.account(count, streams.read_stream(stack.kinesis, stack.output_stream),
                                reports)
    assert report["ok"], report
    # No fault: every prediction exactly once, and the function's counts add up to the input.
    assert report["on_output_stream"] == count and report["duplicates"] == 0, report
    function = report["function"]
    assert function["records"] == len(records), function
    assert function["published"] == count and function["rejected"] == rejected, function
    assert function["redeliver"] == 0 and function["unbalanced_batches"] == 0, function
    warnings = stack.function_log().count('"message":"record rejected"')
    assert warnings == rejected
    figures(f"Load (e2e): {len(records):,} records ({rejected} bad) in {len(batches)} "
            f"invocations of up to {max(b['records'] for b in batches):,}: {count:,} published, "
            f"{rejected} rejected, {report['missing']} missing, {report['duplicates']} "
            f"duplicates; function {function['total_ms']:.0f} ms in all "
            f"({len(records) / function['total_ms'] * 1e3:,.0f} records/s)")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_load_script_accounts_for_every_record_and_stops_what_it_started():
    count = 2000
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCAL_STATE_DIR"))}
    result = subprocess.run(["bash", "scripts/perf/load.sh", str(count)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    figures = json.loads(result.stdout.splitlines()[-1].removeprefix("load: "))
    assert figures["ok"] and figures["records"] == count
    assert figures["missing"] == 0 and figures["duplicates"] == 0
    assert figures["published"] == count and figures["unbalanced_batches"] == 0
    # The ports its moto, its Kinesis stand-in and its emulator listened on are closed again.
    ports = [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", result.stderr)]
    assert len(set(ports)) == 3, result.stderr
    assert not any(port_open(port) for port in ports), ports
