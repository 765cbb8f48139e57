#!/usr/bin/env bash
# Fuzzes the event decoder and the tree kernel for a bounded time (see fuzz/README.md):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default: 600 s each: event, payload, typed, aggregate, trees
#
# Runs each target in turn, one process on one core, for SECONDS. New inputs the fuzzer finds
# go to fuzz/target/corpus/<target>; the committed seeds in fuzz/corpus/<target> are only read.
# Exits non-zero if a target crashes, printing the input that crashed it (fuzz/artifacts/...).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

cd "$(dirname "$0")/../fuzz"
seconds=${1:-600}
if [[ $# -gt 0 ]]; then
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(event payload typed aggregate trees)
fi

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
export RUSTC_BOOTSTRAP=1
# The `trees` target runs ONNX Runtime's kernel beside the service's.
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash ../scripts/setup-ort.sh)}

crashed=()
for target in "${targets[@]}"; do
    work_corpus=target/corpus/$target
    log=target/logs/$target.log
    mkdir -p "$work_corpus" "$(dirname "$log")"
    echo "fuzz.sh: $target for ${seconds}s (log: fuzz/$log)" >&2
    if ! cargo fuzz run "$target" "$work_corpus" "corpus/$target" -- \
        -max_total_time="$seconds" -dict=json.dict -print_final_stats=1 2>&1 | tee "$log"; then
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        echo "fuzz.sh: $target crashed on ${artifact:-an input in fuzz/artifacts/$target/ (see fuzz/$log)}" >&2
        crashed+=("$target")
    fi
done

if [[ ${#crashed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashes in: ${crashed[*]}; replay one with (in fuzz/):" >&2
    echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${seconds}s each)" >&2
