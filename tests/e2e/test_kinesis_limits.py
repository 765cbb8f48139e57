"""Publishing at scale through the runtime path, against the Kinesis stand-in's latency and
per-shard write limits (bike_local.kinesis_server): every record published, rejected or
re-delivered, and the invocation done within its publishing time.

The emulator gives the function no deadline, so PUBLISH_BUDGET_SECONDS plays the deadline's
part here: publishing ends at the earlier of the two, in the same code (tests/accounting.rs
and the handler's unit tests check the deadline itself).
"""

from bike_local import accounting, streams
from bike_local.mlflow_layout import RUN_ID, run_prefix
from bike_local.reference import feature_record

MODEL_PREFIX = run_prefix(RUN_ID)
NO_LIMITS = {"records_per_second": None, "bytes_per_second": None}


def start(stack, input_shards: int, output_shards: int, **config: str) -> None:
    """Streams (the input without write limits, so that a test fills it at once), the model on
    S3 and the function with `config`."""
    stack.kinesis.create_stream(StreamName=stack.input_stream, ShardCount=input_shards)
    stack.kinesis.create_stream(StreamName=stack.output_stream, ShardCount=output_shards)
    stack.configure_stream(stack.input_stream, **NO_LIMITS)
    stack.upload_model(MODEL_PREFIX)
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID, **config)
    assert started.returncode == 0, started.stderr


def account(stack, count: int) -> dict:
    reports = accounting.batch_reports(stack.function_log())
    report = accounting.account(count, streams.read_stream(stack.kinesis, stack.output_stream),
                                reports)
    assert report["ok"], report
    assert report["missing"] == 0 and report["unexpected"] == 0, report
    return report


def throttled(stack) -> int:
    return sum(report.get("put_records_throttled", 0)
               for report in accounting.batch_reports(stack.function_log()))


def test_calls_with_latency_publish_every_record_once(stack, figures):
    count = 3000
    start(stack, input_shards=1, output_shards=2)
    stack.configure_stream(stack.output_stream, latency_ms=20, **NO_LIMITS)
    stack.put([feature_record(pred_id % 2000, pred_id) for pred_id in range(count)])

    status, batches, summary = stack.poll("--max-records", str(count), "--batch-size", "10000")

    assert status == 0, summary
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0, summary
    report = account(stack, count)
    assert report["on_output_stream"] == count and report["duplicates"] == 0, report
    assert throttled(stack) == 0
    calls = stack.stream_counters(stack.output_stream)
    figures(f"Kinesis with 20 ms per call: {count:,} records in {len(batches)} invocations, "
            f"{max(batch['ms'] for batch in batches):.0f} ms the longest; stand-in counters "
            f"{calls.get('counters', calls)}")


def test_four_shards_at_kinesis_limits_take_a_10000_record_batch_without_redelivery(
        stack, figures):
    count = 10_000
    start(stack, input_shards=1, output_shards=4, PUBLISH_BUDGET_SECONDS="60")
    stack.put([feature_record(pred_id % 2000, pred_id) for pred_id in range(count)])

    status, batches, summary = stack.poll("--max-records", str(count), "--batch-size", "10000",
                                          "--invoke-timeout", "90", "--timeout", "110")

    assert status == 0, summary
    # 10,000 records are more than 4 shards take in a second (4,000): entries are throttled,
    # resent, and all get through within the budget.
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0, summary
    report = account(stack, count)
    assert report["duplicates"] == 0, report
    assert throttled(stack) > 0
    took = ", ".join(f"{batch['ms']:.0f}" for batch in batches)
    figures(f"Kinesis limits, 4 shards: {count:,} records in {len(batches)} invocations "
            f"({', '.join(str(b['records']) for b in batches)} records) took {took} ms; "
            f"{throttled(stack):,} entries throttled and resent, 0 re-deliveries, "
            f"{report['duplicates']} duplicates")


def test_a_shard_too_slow_for_the_deadline_gets_what_it_can_and_the_rest_redelivered(
        stack, figures):
    count, budget_s = 10_000, 4
    start(stack, input_shards=1, output_shards=1, PUBLISH_BUDGET_SECONDS=str(budget_s))
    stack.put([feature_record(pred_id % 2000, pred_id) for pred_id in range(count)])

    status, batches, summary = stack.poll("--max-records", str(count), "--batch-size", "10000",
                                          "--max-retries", "20", "--invoke-timeout", "30",
                                          "--timeout", "110")

    assert status == 0, summary
    # At 1,000 records a second, an invocation publishes some 5,000 in its 4 s and reports the
    # rest: it answers in time, and Lambda re-delivers from the lowest record reported.
    assert summary["redeliveries"] >= 1, summary
    first = batches[0]
    assert 0 < first["batchItemFailures"] < first["records"], first
    # Without the budget, publishing would take 10 s. Beyond the 4 s budget, an invocation
    # decodes and predicts up to 10,000 records on the dev build, beside other test suites on
    # the same cores: 3 s of slack.
    assert all(batch["ms"] < budget_s * 1000 + 3000 for batch in batches), batches
    # Every record before a re-delivery's checkpoint was on the stream (none is missing at the
    # end: those records were never delivered again); the re-delivered ones may be twice.
    report = account(stack, count)
    assert report["on_output_stream"] == count + report["duplicates"], report
    figures(f"Kinesis limits, 1 shard, {budget_s} s budget: {count:,} records in "
            f"{len(batches)} invocations ({', '.join(str(b['records']) for b in batches)} "
            f"records, {', '.join(str(b['batchItemFailures']) for b in batches)} reported), "
            f"{summary['redeliveries']} re-deliveries, {report['duplicates']} duplicates, "
            f"0 missing")
