#!/usr/bin/env bash
# What publishing adds to a served invocation: a 10,000-record event handled by the release
# binary under the Lambda Runtime API stub (scripts/perf/runtime-api-stub.py), with its
# predictions published to the Kinesis stand-in answering every PutRecords call after LATENCY ms
# (a realistic round trip to Kinesis; write limits off, so that only the latency counts),
# against the same event with TEST_RUN (nothing published).
#
# For each setting, RUNS processes each serve INVOCATIONS invocations of the event; the figure
# is the median warm invocation (Lambda's Duration, from the event handed over to the response
# received). Printed: TEST_RUN, then PUBLISH_CONCURRENCY from 1 to 32, then
# OUTPUT_AGGREGATION=kpl, each with its ratio to TEST_RUN.
#
# Usage: scripts/perf/publish.sh [RECORDS] [LATENCY] [RUNS] [INVOCATIONS]
#        (defaults: 10000, 20, 3, 6)
# Builds the release binary first. Starts its own local services and stops them on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

records=${1:-10000}
latency=${2:-20}
runs=${3:-3}
invocations=${4:-6}
binary=$root/target/release/bike-prediction
python=$root/.venv/tools/bin/python

cargo build --release --locked --quiet
bash scripts/local/setup-tools.sh
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
unset MODEL_BUCKET MODEL_ID MLFLOW_EXPERIMENT_ID MODEL_ARTIFACT_PATH MODEL_CACHE_DIR \
  OUTPUT_STREAM DEAD_LETTER_STREAM RUST_LOG AWS_LAMBDA_LOG_LEVEL PUBLISH_CONCURRENCY \
  OUTPUT_AGGREGATION PUBLISH_BUDGET_SECONDS
export RUN_ID=perf-publish MODEL_NAME=bike-demand MODEL_URI=$root/models/bike-demand

export LOCAL_STATE_DIR
LOCAL_STATE_DIR=$(mktemp -d -t perf-publish-XXXXXX)
event=$LOCAL_STATE_DIR/event.json
cleanup() {
  bash scripts/local/services.sh stop || true
  rm -rf "$LOCAL_STATE_DIR"
}
trap cleanup EXIT
KINESIS_LIMITS=off KINESIS_LATENCY_MS=$latency bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
"$python" scripts/make-event.py "$records" >"$event"
stream=perf-predictions
"$root/.venv/tools/bin/aws" kinesis create-stream --stream-name "$stream" --shard-count 4

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs);" \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "event:   $records records; PutRecords answered after $latency ms"
echo

# The median warm invocation, in ms, of the stub's summary.
warm() {
  "$python" scripts/perf/runtime-api-stub.py --repeat "$runs" --invocations "$invocations" \
    --event "$event" --label "$1" "$binary" | tee /dev/stderr |
    awk '$1 == "warm_invoke_ms" { print $2 }'
}

base=$(TEST_RUN=True warm "TEST_RUN")
results=("TEST_RUN $base")
for concurrency in 1 4 8 16 32; do
  ms=$(TEST_RUN=False OUTPUT_STREAM=$stream PUBLISH_CONCURRENCY=$concurrency \
    warm "PUBLISH_CONCURRENCY=$concurrency")
  results+=("PUBLISH_CONCURRENCY=$concurrency $ms")
done
ms=$(TEST_RUN=False OUTPUT_STREAM=$stream OUTPUT_AGGREGATION=kpl warm "OUTPUT_AGGREGATION=kpl")
results+=("OUTPUT_AGGREGATION=kpl $ms")

echo
printf '%-26s %10s %8s\n' setting "warm ms" ratio
for result in "${results[@]}"; do
  read -r name ms <<<"$result"
  printf '%-26s %10.1f %8.2f\n' "$name" "$ms" "$(python3 -c "print($ms / $base)")"
done
