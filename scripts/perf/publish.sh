#!/usr/bin/env bash
# What publishing adds to a served invocation: a 10,000-record event handled by the release
# binary under the Lambda Runtime API stub (scripts/perf/runtime-api-stub.py), with its
# predictions published to a local Kinesis answering every PutRecords call after LATENCY ms
# (a realistic round trip to Kinesis; no write limits, so that only the latency counts),
# against the same event with TEST_RUN (nothing published).
#
# Which local Kinesis (KINESIS):
#   endpoint  (default) examples/kinesis_endpoint.rs: answers each call after the latency and
#             keeps nothing, with so little work per entry that the calls in flight are
#             answered together, as Kinesis answers them. This measures the function.
#   standin   the Kinesis stand-in (bike_local.kinesis_server, limits off): a Python process
#             that stores every record, whose calls' work waits on one another, so that 20
#             calls at once are answered one after another; it bounds the figures.
#
# For each setting, RUNS processes each serve INVOCATIONS invocations of the event, the
# settings taking turns; the figure is the median over the runs of each process's median warm
# invocation (Lambda's Duration, from the event handed over to the response received).
# Printed: TEST_RUN, then PUBLISH_CONCURRENCY from 1 to 32, then OUTPUT_AGGREGATION=kpl, each
# with its ratio to TEST_RUN and its runs' figures.
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

kinesis=${KINESIS:-endpoint}
case $kinesis in
  endpoint | standin) ;;
  *) echo "publish.sh: KINESIS must be endpoint or standin, not $kinesis" >&2; exit 2 ;;
esac
cargo build --release --locked --quiet --bin bike-prediction --example kinesis_endpoint
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
endpoint_pid=
cleanup() {
  [[ -n $endpoint_pid ]] && kill "$endpoint_pid" 2>/dev/null
  [[ $kinesis == standin ]] && { bash scripts/local/services.sh stop || true; }
  rm -rf "$LOCAL_STATE_DIR"
}
trap cleanup EXIT
stream=perf-predictions
if [[ $kinesis == standin ]]; then
  KINESIS_LIMITS=off KINESIS_LATENCY_MS=$latency bash scripts/local/services.sh start
  eval "$(bash scripts/local/services.sh env)"
  "$root/.venv/tools/bin/aws" kinesis create-stream --stream-name "$stream" --shard-count 4
else
  # exec: the coproc is the endpoint itself, so that killing it stops the endpoint.
  coproc endpoint { exec "$root/target/release/examples/kinesis_endpoint" --latency-ms "$latency"; }
  endpoint_pid=$endpoint_PID
  read -r -u "${endpoint[0]}" line
  export AWS_ENDPOINT_URL_KINESIS=${line#kinesis_endpoint: }
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing
  unset AWS_PROFILE AWS_SESSION_TOKEN
fi
"$python" scripts/make-event.py "$records" >"$event"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs);" \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "event:   $records records; PutRecords answered after $latency ms by the $kinesis"
echo

# The median warm invocation, in ms, of one process serving the event INVOCATIONS times.
warm() {
  "$python" scripts/perf/runtime-api-stub.py --repeat 1 --invocations "$invocations" \
    --event "$event" --label "$1" "$binary" | tee /dev/stderr |
    awk '$1 == "warm_invoke_ms" { print $2 }'
}

# One process per setting in turn, RUNS rounds: a load that comes and goes on a shared
# machine then weighs on every setting alike. Each setting's figure is the median of its runs.
settings=(TEST_RUN PUBLISH_CONCURRENCY=1 PUBLISH_CONCURRENCY=4 PUBLISH_CONCURRENCY=8
  PUBLISH_CONCURRENCY=16 PUBLISH_CONCURRENCY=32 OUTPUT_AGGREGATION=kpl)
declare -A runs_ms
for ((run = 1; run <= runs; run++)); do
  for setting in "${settings[@]}"; do
    case $setting in
      TEST_RUN) ms=$(TEST_RUN=True warm "$setting") ;;
      PUBLISH_CONCURRENCY=*)
        ms=$(TEST_RUN=False OUTPUT_STREAM=$stream PUBLISH_CONCURRENCY=${setting#*=} \
          warm "$setting") ;;
      OUTPUT_AGGREGATION=kpl)
        ms=$(TEST_RUN=False OUTPUT_STREAM=$stream OUTPUT_AGGREGATION=kpl warm "$setting") ;;
    esac
    runs_ms[$setting]+="$ms "
  done
done

median() { python3 -c 'import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
# shellcheck disable=SC2086 # the runs' figures, one word each
base=$(median ${runs_ms[TEST_RUN]})
echo
printf '%-26s %10s %8s   %s\n' setting "warm ms" ratio "each run"
for setting in "${settings[@]}"; do
  # shellcheck disable=SC2086
  ms=$(median ${runs_ms[$setting]})
  printf '%-26s %10.1f %8.2f   %s\n' "$setting" "$ms" "$(python3 -c "print($ms / $base)")" \
    "${runs_ms[$setting]}"
done
