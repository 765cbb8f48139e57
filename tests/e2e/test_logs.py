"""What the function logs at TRACE, through the real pieces (the local services, the Lambda
emulator, the release binary, the poller): never a record's data (plain or base64, as the raw event and the
dead-letter stream's PutRecords carry it) unless LOG_RECORD_DATA=true, and never credentials.
"""

import base64
import json

from bike_local.mlflow_layout import RUN_ID, run_prefix
from bike_local.reference import feature_record

MARKER = "MARKERthatMUSTnotREACHtheLOGS"
SECRET = "SECRETaccessKEYthatMUSTnotLEAK0123456789"
TOKEN = "SESSIONtokenTHATmustNOTleak9876543210"


def records() -> list[tuple[bytes, str]]:
    """A good record carrying the marker in a feature the model ignores, and a rejected one
    (not JSON) that goes to the dead-letter stream."""
    data, key = feature_record(0, 1)
    good = json.loads(data)
    good["features"]["note"] = MARKER
    return [(json.dumps(good).encode(), key), (f"{MARKER} is not JSON".encode(), "2")]


def run_at_trace(stack, **config: str) -> str:
    """Serves the records at RUST_LOG=trace with a dead-letter stream; returns the log."""
    stack.create_streams(shards=1)
    dead_letters = f"{stack.output_stream}-dlq"
    stack.kinesis.create_stream(StreamName=dead_letters, ShardCount=1)
    stack.upload_model(run_prefix(RUN_ID))
    # The stand-in checks signatures: the function's own credentials, to look for in the log.
    stack.register_credentials("AKIDLOCALTEST", SECRET)
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID, RUST_LOG="trace",
                                   DEAD_LETTER_STREAM=dead_letters,
                                   AWS_ACCESS_KEY_ID="AKIDLOCALTEST",
                                   AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN,
                                   **config)
    assert started.returncode == 0, started.stderr
    stack.put(records())
    status, _, summary = stack.poll("--max-records", "2")
    assert status == 0, summary
    assert summary["predictions"] == 1 and summary["rejected"] == 1, summary
    return stack.function_log()


def secrets() -> list[str]:
    return [MARKER] + [base64.b64encode(data).decode() for data, _ in records()]


def test_record_data_never_reaches_the_logs_even_at_trace(stack):
    # LOG_SIGNABLE_BODY is the AWS SDK's own switch for logging what it signs; without
    # LOG_RECORD_DATA it must not let record data through either.
    log = run_at_trace(stack, LOG_SIGNABLE_BODY="true")

    levels = {json.loads(line).get("level") for line in log.splitlines() if line.startswith("{")}
    # Libraries' TRACE events are dropped; their DEBUG ones show the level was lowered.
    assert "DEBUG" in levels and "TRACE" not in levels, levels
    for secret in secrets():
        assert secret not in log, f"{secret[:20]}... in the logs"
    assert SECRET not in log and TOKEN not in log, "credentials in the logs"


def test_log_record_data_lets_the_libraries_log_it(stack):
    log = run_at_trace(stack, LOG_RECORD_DATA="true")

    assert base64.b64encode(records()[0][0]).decode() in log, "the raw event is logged"
    assert SECRET not in log and TOKEN not in log, "credentials in the logs"
