#!/usr/bin/env bash
# Peak resident memory (RSS) of the release build while it handles a 10,000-record event, for
# the bundled gradient-boosting model and the linear model.
#
# Two ways, RUNS times each (median, min, max):
#   invoke  `/usr/bin/time -v bike-prediction invoke --event <10k event>`: "Maximum resident set
#           size" of the whole process (ONNX Runtime, model, the event file read into memory,
#           decode, inference, response written to stdout)
#   served  the function serving the same event through the Lambda Runtime API loop
#           (scripts/perf/runtime-api-stub.py, 3 invocations per process): VmHWM after the last
#           response. This is the path Lambda runs, where the event also passes through the HTTP
#           client and lambda_runtime's deserialization.
# plus `invoke` on the 1-record sample event: what the process holds before any batch.
#
# Usage: scripts/perf/memory.sh [RUNS]   (default 5)
# Builds the release binary first (cargo build --release --locked) so it measures the current
# source.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

runs=${1:-5}
binary=$root/target/release/bike-prediction
python=$root/.venv/tools/bin/python

cargo build --release --locked --quiet
bash scripts/local/setup-tools.sh
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
unset MODEL_URI MODEL_BUCKET MODEL_ID MODEL_CACHE_DIR OUTPUT_STREAM RUST_LOG AWS_LAMBDA_LOG_LEVEL
export TEST_RUN=True RUN_ID=perf

work=$(mktemp -d -t perf-memory-XXXXXX)
trap 'rm -rf "$work"' EXIT
event=$work/event-10000.json
"$python" scripts/make-event.py 10000 >"$event"
echo "10,000-record event: $(stat -c %s "$event") bytes (scripts/make-event.py 10000)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo

# Median, min and max of the numbers on stdin, one per line.
summary() {
  sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "median %.0f KB (%.1f MB), min %d, max %d KB\n", m, m / 1024, v[1], v[NR] }'
}

# Peak RSS in KB of `bike-prediction invoke --event $2` with model $1, once.
invoke_peak_kb() {
  MODEL_URI=$root/models/$1 MODEL_NAME=$1 /usr/bin/time -v "$binary" invoke --event "$2" \
    2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}

for model in bike-demand bike-linear; do
  for input in events/sample.json "$event"; do
    label=$([[ $input == "$event" ]] && echo "10,000 records" || echo "1 record")
    printf '%-12s invoke, %-15s ' "$model" "$label:"
    for _ in $(seq "$runs"); do invoke_peak_kb "$model" "$input"; done | summary
  done
done
echo

for model in bike-demand bike-linear; do
  MODEL_URI=$root/models/$model MODEL_NAME=$model "$python" scripts/perf/runtime-api-stub.py \
    --repeat "$runs" --invocations 3 --event "$event" \
    --label "$model served, 10,000 records" "$binary"
done
