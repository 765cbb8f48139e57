"""The pieces an end-to-end test drives: its own streams, bucket and function instance.

Everything goes through the real scripts (scripts/local/*.sh, the poller) and real local
servers; boto3 only sets up and reads the streams and the bucket.
"""

import json
import pathlib
import subprocess
import uuid

import boto3

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv/tools/bin/python"
MODEL_DIR = ROOT / "models/bike-demand"
BINARY = ROOT / "target/release/bike-prediction"
REFERENCE = json.loads((ROOT / "tests/fixtures/reference.json").read_text())


def script(path: str, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Runs one of the repository's scripts with `env`, capturing its output."""
    return subprocess.run(
        ["bash", str(ROOT / path), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        check=check, timeout=300,
    )


class Stack:
    """One test's streams, bucket and function, with helpers to drive them."""

    def __init__(self, env: dict, state: pathlib.Path):
        suffix = uuid.uuid4().hex[:10]
        self.input_stream, self.output_stream = f"in-{suffix}", f"out-{suffix}"
        self.bucket = f"models-{suffix}"
        self.env = {**env, "LOCAL_STATE_DIR": str(state),
                    "INPUT_STREAM": self.input_stream, "OUTPUT_STREAM": self.output_stream}
        for name in ("MODEL_URI", "MODEL_ID", "RUN_ID", "MODEL_BUCKET", "TEST_RUN"):
            self.env.pop(name, None)
        self.state = state
        self.kinesis = boto3.client("kinesis")
        self.s3 = boto3.client("s3")

    def create_streams(self, shards: int = 2) -> None:
        for stream in (self.input_stream, self.output_stream):
            self.kinesis.create_stream(StreamName=stream, ShardCount=shards)

    def upload_model(self, prefix: str) -> None:
        """Copies the bundled model directory to s3://<bucket>/<prefix>/."""
        try:
            self.s3.create_bucket(Bucket=self.bucket)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        for path in MODEL_DIR.iterdir():
            self.s3.upload_file(str(path), self.bucket, f"{prefix}/{path.name}")

    def start_function(self, **config: str) -> subprocess.CompletedProcess:
        """Starts the function with `config` added to its environment; does not raise."""
        self.env.update(config)
        return script("scripts/local/function.sh", "start", env=self.env, check=False)

    def function_log(self) -> str:
        return (self.state / "function.log").read_text()

    def stop_function(self) -> None:
        script("scripts/local/function.sh", "stop", env=self.env, check=False)

    def put(self, records: list[tuple[bytes, str]]) -> None:
        """Puts (data, partition key) records, in order, on the input stream."""
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            response = self.kinesis.put_records(
                StreamName=self.input_stream,
                Records=[{"Data": data, "PartitionKey": key} for data, key in chunk],
            )
            assert response["FailedRecordCount"] == 0

    def poll(self, *args: str, invoke_url: str | None = None) -> tuple[int, list[dict], dict]:
        """Runs the poller on the input stream; returns its exit status, its per-batch log
        lines and its final summary."""
        if invoke_url is None:
            invoke_url = script("scripts/local/function.sh", "env", env=self.env).stdout
            invoke_url = invoke_url.strip().split("=", 1)[1]
        process = subprocess.run(
            [str(PYTHON), str(ROOT / "scripts/local/poller.py"), "--stream", self.input_stream,
             "--invoke-url", invoke_url, "--timeout", "60", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        lines = [json.loads(line) for line in process.stderr.splitlines() if line.startswith("{")]
        assert lines and lines[-1].get("final"), process.stderr
        return process.returncode, [line for line in lines[:-1] if "records" in line], lines[-1]

    def output(self) -> list[dict]:
        """Every record on the output stream: partition key and decoded JSON data."""
        records = []
        for shard in self.kinesis.list_shards(StreamName=self.output_stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=self.output_stream, ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            while iterator:
                page = self.kinesis.get_records(ShardIterator=iterator, Limit=10000)
                records += [{"partitionKey": r["PartitionKey"], "data": json.loads(r["Data"])}
                            for r in page["Records"]]
                iterator = page.get("NextShardIterator") if page["Records"] else None
        return records


def feature_record(row: int, pred_id: int) -> tuple[bytes, str]:
    """A record with the features of reference row `row`, as data_in.sh writes them."""
    features = dict(zip(REFERENCE["columns"], REFERENCE["rows"][row]))
    data = json.dumps({"features": features, "pred_id": pred_id}).encode()
    return data, str(pred_id)


def reference_prediction(row: int) -> float:
    """The prediction of the Python onnxruntime for reference row `row` (independent of us)."""
    return REFERENCE["models"]["bike-demand"][row]
