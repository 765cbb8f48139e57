#!/usr/bin/env bash
# Cold start of the release build: process start -> ready to serve, and the first invocation.
#
# The function is started RUNS times as Lambda starts it (no arguments: the Runtime API loop)
# under a local stub of the Runtime API (scripts/perf/runtime-api-stub.py), which times:
#   ready_ms         spawn -> the first `GET /runtime/invocation/next` (Lambda's Init Duration)
#   startup_ms       the function's own "ready" log figure (ONNX Runtime + model + AWS clients)
#   first_invoke_ms  the first event handed over -> its response received (Lambda's Duration)
# with the model
#   local     from the bundled directory (MODEL_URI=models/bike-demand)
#   s3        from the local S3 server (moto) by MODEL_BUCKET + RUN_ID, into a new empty
#             MODEL_CACHE_DIR each run, as a new Lambda instance whose /tmp is empty
#   s3-cached the same location with the model already in MODEL_CACHE_DIR (a restarted process)
#   publish   from the bundled directory, publishing to a Kinesis stream on the local server
#             (OUTPUT_STREAM, no TEST_RUN), as deployed: the cold start also loads the AWS
#             configuration and builds the Kinesis client, and the first invocation's
#             PutRecords opens the first connection
# and, for scale, `bike-prediction --version` under hyperfine: exec'ing the binary and nothing else.
#
# Usage: scripts/perf/cold-start.sh [RUNS] [EVENT]   (defaults: 20, events/sample.json)
# Builds the release binary first (cargo build --release --locked) so it measures the current
# source. Starts its own moto server and stops it on exit. Installs the local tools
# (scripts/local/setup-tools.sh) for the stub; hyperfine is optional
# (apt-get install hyperfine).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

runs=${1:-20}
event=${2:-events/sample.json}
binary=$root/target/release/bike-prediction
python=$root/.venv/tools/bin/python
stub=("$python" "$root/scripts/perf/runtime-api-stub.py" --repeat "$runs" --event "$event")

cargo build --release --locked --quiet
bash scripts/local/setup-tools.sh
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
# The function's settings come only from what is set below, not from the caller's shell.
unset MODEL_URI MODEL_BUCKET MODEL_ID MLFLOW_EXPERIMENT_ID MODEL_ARTIFACT_PATH MODEL_CACHE_DIR \
  OUTPUT_STREAM RUST_LOG AWS_LAMBDA_LOG_LEVEL
export TEST_RUN=True MODEL_NAME=bike-demand

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
echo "binary:  $binary ($(stat -c %s "$binary") bytes)"
# Other work on the machine slows every figure below: say how busy it was.
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo

if command -v hyperfine >/dev/null; then
  hyperfine --shell=none --warmup 3 --runs "$runs" --style basic "$binary --version"
  echo
fi

RUN_ID=perf-local MODEL_URI=$root/models/bike-demand "${stub[@]}" --label local "$binary"
echo

# The local S3 server: our own moto, in our own state directory, so that a moto someone else
# started is neither reused nor stopped.
export LOCAL_STATE_DIR
LOCAL_STATE_DIR=$(mktemp -d -t perf-services-XXXXXX)
cache=$(mktemp -d -t perf-model-cache-XXXXXX)
cleanup() {
  bash scripts/local/services.sh stop || true
  rm -rf "$LOCAL_STATE_DIR" "$cache"
}
trap cleanup EXIT
bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"

bucket=perf-models
run_id=perf-s3
aws=$root/.venv/tools/bin/aws
# Where the function looks the run's model up (the MLflow 2 layout).
"$python" -m bike_local.mlflow_layout upload models/bike-demand --bucket "$bucket" \
  --run-id "$run_id" >/dev/null

MODEL_BUCKET=$bucket RUN_ID=$run_id "${stub[@]}" --fresh-dir-env MODEL_CACHE_DIR \
  --label "s3 (new empty cache each run: downloads the model)" "$binary"
echo

# One run fills the cache; every measured run then finds the model there.
MODEL_BUCKET=$bucket RUN_ID=$run_id MODEL_CACHE_DIR=$cache \
  "$python" scripts/perf/runtime-api-stub.py --repeat 1 --event "$event" "$binary" >/dev/null
MODEL_BUCKET=$bucket RUN_ID=$run_id MODEL_CACHE_DIR=$cache "${stub[@]}" \
  --label "s3-cached (model already in MODEL_CACHE_DIR)" "$binary"
echo

stream=perf-predictions
"$aws" kinesis create-stream --stream-name "$stream" --shard-count 1
"$aws" kinesis wait stream-exists --stream-name "$stream"
RUN_ID=perf-publish MODEL_URI=$root/models/bike-demand TEST_RUN=False OUTPUT_STREAM=$stream \
  "${stub[@]}" --label "publish (local model, OUTPUT_STREAM on the local Kinesis server)" "$binary"
