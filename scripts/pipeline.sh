#!/usr/bin/env bash
# The whole pipeline on this machine, against local servers that speak the AWS protocols:
#
#   data_in.sh -> Kinesis input stream -> poller (Lambda's event source mapping)
#     -> bike-prediction under the Lambda emulator (model from S3) -> Kinesis output stream
#     -> data_out.sh
#
# Installs what it needs (idempotent), builds the function (the dev build), starts the local services and the
# emulator, puts N records on the input stream, feeds them to the function, prints the
# prediction events read back from the output stream on stdout (one JSON per line), and stops
# everything it started, also on failure. Progress goes to stderr.
#
# Usage: scripts/pipeline.sh [N]          N records of real rows (default 5)
# Environment: RUN_ID (default the one the local tools lay the bundled model out under,
# `python -m bike_local.mlflow_layout run-id`), INPUT_STREAM (passenger_events),
# OUTPUT_STREAM (bike-predictions), MODEL_BUCKET (bike-prediction-models), BATCH_SIZE (100).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
count=${1:-5}
export INPUT_STREAM=${INPUT_STREAM:-passenger_events}
export OUTPUT_STREAM=${OUTPUT_STREAM:-bike-predictions}
export MODEL_BUCKET=${MODEL_BUCKET:-bike-prediction-models}
aws=$root/.venv/tools/bin/aws
python=$root/.venv/tools/bin/python

started=$SECONDS
STAGES=pipeline
# shellcheck source=scripts/stages.sh
source scripts/stages.sh

# This run's own servers and state directory, stopped and cleaned up when the script exits.
# shellcheck source=scripts/local/own-stack.sh
source scripts/local/own-stack.sh
own_local_stack pipeline

# The Python tools install while the function builds; the build takes the cores, the
# installs mostly wait on downloads.
step "setup: ONNX Runtime and the local tools (in the background), the build"
setup_start=$SECONDS
install_tools() {
  timed "ONNX Runtime" bash scripts/setup-ort.sh >/dev/null
  timed "local tools (.venv/tools)" bash scripts/local/setup-tools.sh
}
install_tools &
tools=$!
# MLflow is for the test command (the README's second), not for the pipeline: it installs
# here, beside the rest, in time the build leaves, so that the tests find it in place.
timed "MLflow, for the tests (.venv/mlflow)" bash scripts/local/setup-mlflow.sh &
mlflow=$!
# The dev profile: the build `cargo test` (the README's second command) reuses, with the
# dependencies the Lambda image optimises left unoptimised (docs/BUILD.md).
timed "build" cargo build --locked --bin bike-prediction
wait "$tools"
wait "$mlflow"
step "setup: $((SECONDS - setup_start)) s"
RUN_ID=${RUN_ID:-$("$python" -m bike_local.mlflow_layout run-id)}
export RUN_ID

timed "local AWS services" bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"

step "streams $INPUT_STREAM, $OUTPUT_STREAM"
# The local streams are ACTIVE at once; on AWS, wait with `aws kinesis wait stream-exists`.
"$aws" kinesis create-stream --stream-name "$INPUT_STREAM" --shard-count 1
"$aws" kinesis create-stream --stream-name "$OUTPUT_STREAM" --shard-count 1
# Where the function looks the run's model up (the MLflow 2 layout).
uri=$("$python" -m bike_local.mlflow_layout upload models/bike-demand --bucket "$MODEL_BUCKET" \
  --run-id "$RUN_ID")
step "model of run $RUN_ID at $uri"

# The function's configuration as it would be on AWS; nothing left over from the caller's shell.
unset MODEL_URI MODEL_ID TEST_RUN MLFLOW_EXPERIMENT_ID MODEL_ARTIFACT_PATH
bash scripts/local/function.sh start
eval "$(bash scripts/local/function.sh env)"

step "putting $count records on $INPUT_STREAM"
bash scripts/data_in.sh "$count"

step "delivering them to the function"
# Stops when all records are processed, or the stream has been idle for 2 s, or after 120 s.
"$python" scripts/local/poller.py --stream "$INPUT_STREAM" \
  --batch-size "${BATCH_SIZE:-100}" --max-records "$count" --until-idle --timeout 120 \
  2>"$LOCAL_STATE_DIR/poller.log" || { cat "$LOCAL_STATE_DIR/poller.log" >&2; exit 1; }
tail -n 1 "$LOCAL_STATE_DIR/poller.log" >&2

step "prediction events on $OUTPUT_STREAM:"
bash scripts/data_out.sh
step "done in $((SECONDS - started)) s"
