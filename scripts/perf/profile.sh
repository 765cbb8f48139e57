#!/usr/bin/env bash
# Where the time goes, in instructions: callgrind profiles of the hot path and of the cold start.
#
# Wall-clock benches move with the load of this shared 2-core machine; callgrind counts the
# instructions executed (Ir), which do not. For each stage, examples/perf_profile.rs runs it
# ROUNDS times on the benches' RECORDS-record event after one warm-up call, and callgrind
# collects only those calls (`--toggle-collect`, set-up and warm-up excluded):
#   floor            serde_json into borrowed `data` + `sequenceNumber` (benches: floor/N)
#   decode           raw event -> [N, F] buffer (decode/total/N)
#   runtime-in       the body into `KinesisBatch` through serde_path_to_error, as lambda_runtime
#                    hands `serve` its payload (lambda_runtime/event_in/N)
#   handler-linear   Handler::handle_bytes with bike-linear (handler/bike-linear/N)
#   handler-demand   Handler::handle_bytes with bike-demand (handler/bike-demand/N)
#   publish-linear   handler-linear, with every event published to a local Kinesis server that
#                    answers at once (publish/*/N); its difference from handler-linear is what
#                    publishing costs the function (the server's own work, on another thread,
#                    is not counted)
# and, whole process, `bike-prediction invoke --event events/sample.json` with the bundled
# model (startup: what the cold start executes).
#
# Prints Ir per record and the top functions by their own instructions (exclusive) for each
# stage, the crate's functions by inclusive cost for the handler, and keeps the callgrind files
# in OUT for `callgrind_annotate` (e.g. `--inclusive=yes`, `--tree=caller`). The release build
# has symbols but no line tables, so inlined code is counted in the function it was inlined
# into.
#
# Usage: scripts/perf/profile.sh [RECORDS] [ROUNDS]   (defaults 10000, 3)
# Environment: OUT (default target/perf/callgrind), TOP (functions listed, default 15).
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

records=${1:-10000}
rounds=${2:-3}
out=${OUT:-$root/target/perf/callgrind}
top=${TOP:-15}
mkdir -p "$out"

cargo build --release --locked --quiet --example perf_profile --bin bike-prediction
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
driver=$root/target/release/examples/perf_profile

# Total instructions collected in a callgrind file.
collected() { awk '/^summary:/ { print $2 }' "$1"; }

# The first `top` lines of callgrind_annotate's function table (options and file after FILTER)
# that match the regular expression FILTER, without the table's header and the objects' paths.
functions() {
  local filter=$1
  shift
  callgrind_annotate "$@" 2>/dev/null | awk '/file:function/ { on = 1; getline; next } on && NF' |
    sed 's/ \[[^]]*\]$//' | grep -E -- "$filter" | head -n "$top" || true
}

profile_stage() {
  local name=$1 file=$out/$1.callgrind
  shift
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect='perf_profile::measured*' \
    --callgrind-out-file="$file" "$driver" "$@" >"$out/$name.txt" 2>"$out/$name.log"
  local ir
  ir=$(collected "$file")
  echo "== $name: $ir Ir for $rounds x $records records = $((ir / rounds / records)) Ir per record"
  # The driver counts the allocator calls of the measured rounds (the hot path should not
  # allocate per record).
  grep '^allocations' "$out/$name.txt" | sed 's/^/-- /'
  echo "-- top functions, own instructions:"
  functions . "$file"
  echo
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs);" \
  "callgrind files in $out"
echo
profile_stage floor floor "$records" "$rounds"
profile_stage decode decode "$records" "$rounds"
profile_stage runtime-in runtime-in "$records" "$rounds"
profile_stage handler-linear handler "$records" "$rounds" bike-linear
echo "-- handler-linear, the crate's functions, inclusive:"
functions 'bike_prediction::' --inclusive=yes "$out/handler-linear.callgrind"
echo
profile_stage handler-demand handler "$records" "$rounds" bike-demand
profile_stage publish-linear publish "$records" "$rounds" bike-linear
echo "-- publish-linear, inclusive:"
functions . --inclusive=yes "$out/publish-linear.callgrind"
echo

# The cold start, whole process: what loading ONNX Runtime and the model executes.
file=$out/startup.callgrind
RUN_ID=perf TEST_RUN=True MODEL_URI=$root/models/bike-demand \
  valgrind --tool=callgrind --callgrind-out-file="$file" target/release/bike-prediction invoke \
  --event events/sample.json >/dev/null 2>"$out/startup.log"
echo "== startup (invoke on events/sample.json, whole process): $(collected "$file") Ir"
echo "-- the crate's and ort's functions, inclusive:"
functions 'bike_prediction::|ort::' --inclusive=yes "$file"
echo "-- top functions, own instructions:"
functions . "$file"
