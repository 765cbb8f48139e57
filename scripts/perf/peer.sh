#!/usr/bin/env bash
# The whole process against a well-written Python peer (scripts/perf/python_peer.py: Python
# onnxruntime, one batched inference) on the same model and event: each runs RUNS times as
# a fresh process (start, model load, one event of RECORDS records, the response written), and
# the median and fastest wall times are printed, for the service with its tree kernel, with
# TREE_KERNEL=onnxruntime, and for the peer.
# Usage: scripts/perf/peer.sh [RECORDS] [RUNS]   (defaults 10000, 11)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

records=${1:-10000}
runs=${2:-11}
cargo build --release --locked --quiet --bin bike-prediction
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
# Python onnxruntime, numpy and PyYAML: the environment the model fixtures are made in.
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
ensure_venv kinds "$root/models/kinds-requirements.txt" -c 'import numpy, onnxruntime, yaml'
python=$root/.venv/kinds/bin/python
event=$(mktemp)
trap 'rm -f "$event"' EXIT
python3 scripts/make-event.py "$records" >"$event"

# Prints "LABEL: median M ms, fastest F ms" over `runs` runs of COMMAND.
measure() {
  local label=$1
  shift
  local times=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    times+=($(((end - start) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v label="$label" '
    { t[NR] = $1 } END { printf "%s: median %.1f ms, fastest %.1f ms\n", label, t[int((NR + 1) / 2)] / 1000, t[1] / 1000 }'
}

service() {
  TEST_RUN=True RUN_ID=peer MODEL_URI=$root/models/bike-demand INFERENCE_THREADS=1 \
    TREE_KERNEL=$1 target/release/bike-prediction invoke --event "$event"
}
echo "$records records, $runs runs each, whole process"
measure "service, tree kernel native" service native
measure "service, TREE_KERNEL=onnxruntime" service onnxruntime
measure "Python peer (onnxruntime $("$python" -c 'import onnxruntime; print(onnxruntime.__version__)'))" \
  "$python" scripts/perf/python_peer.py models/bike-demand "$event"
