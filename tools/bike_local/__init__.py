"""The local stack of bike-prediction: what runs the pipeline and its tests on one machine.

What the scripts (scripts/), the end-to-end tests (tests/e2e) and the benchmarks know about
the world outside the function lives here, once:

- `events`: the Kinesis event Lambda passes to the function, and the 6 MB payload it fits in.
- `streams`: reading a Kinesis stream to its end (every shard, until MillisBehindLatest is 0).
- `reference`: the reference rows with their onnxruntime predictions, and the feature records
  producers write from them.
- `producer`: putting records on a stream (500 per call, refused entries resent).
- `mlflow_layout`: where MLflow keeps a model in S3 (MLflow 2 runs, MLflow 3 logged models),
  and the run id used locally.
- `lambda_env`: the environment Lambda gives the function (its name, memory size, ...).
- `accounting`: checking that every record put on the input stream came out.
- `kinesis_server`: a Kinesis Data Streams stand-in (the AWS wire protocol, shards by MD5 hash
  key ranges, per-shard write limits, configurable latency), run by scripts/local/services.sh.
- `tls_relay`: HTTPS in front of a local plain-HTTP server, with a test certificate authority
  made at start (services.sh with LOCAL_TLS=on).

The modules with a command (`python -m bike_local.<module>`) are what the shell scripts call.
Installed (editable) into .venv/tools by scripts/local/setup-tools.sh.
"""
