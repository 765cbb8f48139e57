#!/usr/bin/env bash
# Load: N records through the whole local stack, every one of them accounted for at the end.
#
#   data_in.sh N -> input stream (SHARDS shards) -> poller (batches of up to BATCH_SIZE records
#     within Lambda's 6 MB payload) -> bike-prediction under the Lambda emulator (model from S3)
#     -> output stream
#
# Then bike_local.accounting reads the whole output stream back: every pred_id 0..N-1
# must have a prediction event with the reference prediction (duplicates are counted, none may
# be missing), and every batch the function logged must balance (records = published +
# rejected + reported for re-delivery). Prints the figures, then the same as one JSON line
# (`load: {...}`); exit status 1 if the accounting fails.
#
# Times: `put` is data_in.sh, `deliver` is the poller from its start until every record is
# processed, `run` is both (records/s of the whole run); `invocations` is the sum of the
# invocations' round trips as the poller timed them (the rest of `deliver` is the poller
# reading the input stream and building events); `function` is the sum of the function's own
# per-batch total_ms from its log (decode, inference, encoding, publishing); `wall` is
# everything after the build: services, streams, model upload, cold start, run, and reading
# the output back.
#
# Usage: scripts/perf/load.sh [N]          (default 100000)
# Environment: SHARDS (default 4, both streams), BATCH_SIZE (10000), DELIVERY_TIMEOUT (seconds
# for the poller, default 1200), RUN_ID (default the one the local tools lay the bundled model out under),
# FUNCTION_BINARY (default: the release build, made first).
# Starts its own local services and function, in its own state directory, and stops them on
# exit, also on failure (then the logs stay in that directory). The poller processes one batch
# at a time, as one function instance would: Lambda runs one instance per shard in parallel.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
count=${1:-100000}
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N]   (N a positive integer)" >&2; exit 2; }
shards=${SHARDS:-4}
batch_size=${BATCH_SIZE:-10000}
suffix=$$
export INPUT_STREAM=load-in-$suffix OUTPUT_STREAM=load-out-$suffix MODEL_BUCKET=load-models-$suffix
python=$root/.venv/tools/bin/python
aws=$root/.venv/tools/bin/aws

step() { echo "load: $*" >&2; }
# Seconds since the epoch, with microseconds (bash's own clock: no process per reading).
now() { echo "$EPOCHREALTIME"; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.3f", end - start }'; }

bash scripts/setup-ort.sh >/dev/null
bash scripts/local/setup-tools.sh
# The function as the image builds it, unless FUNCTION_BINARY names another build (the e2e
# tests give theirs).
if [[ -z ${FUNCTION_BINARY:-} ]]; then
  cargo build --release --locked --quiet
  export FUNCTION_BINARY=$root/target/release/bike-prediction
fi
RUN_ID=${RUN_ID:-$("$python" -m bike_local.mlflow_layout run-id)}
export RUN_ID

# This run's own servers and state directory, stopped and cleaned up when the script exits.
# shellcheck source=scripts/local/own-stack.sh
source scripts/local/own-stack.sh
own_local_stack load

wall_start=$(now)
bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
# The local streams are ACTIVE at once; on AWS, wait with `aws kinesis wait stream-exists`.
"$aws" kinesis create-stream --stream-name "$INPUT_STREAM" --shard-count "$shards"
"$aws" kinesis create-stream --stream-name "$OUTPUT_STREAM" --shard-count "$shards"
"$python" -m bike_local.mlflow_layout upload models/bike-demand --bucket "$MODEL_BUCKET" \
  --run-id "$RUN_ID" >/dev/null
# The function's configuration as it would be on AWS; nothing left over from the caller's shell.
unset MODEL_URI MODEL_ID TEST_RUN MLFLOW_EXPERIMENT_ID MODEL_ARTIFACT_PATH DEAD_LETTER_STREAM \
  RUST_LOG AWS_LAMBDA_LOG_LEVEL
bash scripts/local/function.sh start
eval "$(bash scripts/local/function.sh env)"

step "putting $count records on $INPUT_STREAM ($shards shards)"
put_start=$(now)
bash scripts/data_in.sh "$count"
put_s=$(since "$put_start")

step "delivering them to the function, batches of up to $batch_size"
deliver_start=$(now)
"$python" scripts/local/poller.py --stream "$INPUT_STREAM" --batch-size "$batch_size" \
  --max-records "$count" --timeout "${DELIVERY_TIMEOUT:-1200}" \
  2>"$LOCAL_STATE_DIR/poller.log" || { tail -n 5 "$LOCAL_STATE_DIR/poller.log" >&2; exit 1; }
deliver_s=$(since "$deliver_start")

step "reading $OUTPUT_STREAM back and checking the accounting"
status=0
"$python" -m bike_local.accounting --stream "$OUTPUT_STREAM" --count "$count" \
  --function-log "$LOCAL_STATE_DIR/function.log" >"$LOCAL_STATE_DIR/accounting.json" || status=$?
wall_s=$(since "$wall_start")

"$python" scripts/perf/load_report.py "$LOCAL_STATE_DIR" --shards "$shards" \
  --batch-size "$batch_size" --put-s "$put_s" --deliver-s "$deliver_s" --wall-s "$wall_s"
if [[ $status != 0 ]]; then
  step "the accounting failed: $(<"$LOCAL_STATE_DIR/accounting.json")"
fi
exit "$status"
