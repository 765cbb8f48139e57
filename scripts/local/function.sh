#!/usr/bin/env bash
# Runs the built function (FUNCTION_BINARY, default target/debug/bike-prediction: the build the
# README's commands and `cargo test` share) as Lambda would, on this machine:
# `cargo lambda watch --only-lambda-apis` serves the Lambda Runtime API and the invoke endpoint,
# and our binary, started here with the Lambda environment, polls it for invocations.
#
# Usage: scripts/local/function.sh start|stop|env|status
#   start   (re)start the emulator and the function; returns once the function's cold start is
#           done and it waits for invocations, or fails with the tail of the function's log
#   stop    stop both
#   env     print `export FUNCTION_INVOKE_URL=...`, the endpoint to POST events to
#   status  exit 0 if both run
# The function gets the caller's environment: its configuration (MODEL_BUCKET, RUN_ID,
# OUTPUT_STREAM, TEST_RUN, ...) and the AWS settings (eval "$(scripts/local/services.sh env)").
# Environment: FUNCTION_BINARY (default target/debug/bike-prediction; the load run sets
# target/release/bike-prediction), LAMBDA_PORT (default: a free port), FUNCTION_START_TIMEOUT (seconds, default 60),
# LOCAL_STATE_DIR (default .cache/local; logs are emulator.log and function.log there).
set -euo pipefail
# shellcheck source=scripts/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

binary=${FUNCTION_BINARY:-$root/target/debug/bike-prediction}
# With --only-lambda-apis, cargo-lambda serves one function named `_` (its default function):
# the invoke URL names it, and the Runtime API for it lives under /.rt (both in cargo-lambda's
# docs/commands/watch.md and printed by the emulator at start).
FUNCTION=_

stop() {
  stop_background function
  stop_background emulator
}

case ${1:-} in
  start)
    stop
    [[ -x $binary ]] || { echo "function: $binary missing: cargo build --locked" >&2; exit 1; }
    bash "$root/scripts/local/setup-tools.sh"
    port=${LAMBDA_PORT:-$(free_port)}
    # The emulator logs at debug level the first time a function polls for work: that line
    # is how we know the cold start is over. Its own RUST_LOG, not the function's.
    # `cargo-lambda lambda watch` is what `cargo lambda watch` runs; calling it directly leaves
    # no cargo process in between, so the PID recorded is the emulator's. It reads Cargo.toml
    # in the working directory for the package's binaries.
    cd "$root"
    RUST_LOG=cargo_lambda=info,cargo_lambda_watch::state=debug \
      start_background emulator "$tools/cargo-lambda" lambda watch --only-lambda-apis \
      --ignore-changes -A 127.0.0.1 -P "$port"
    for _ in $(seq 100); do
      port_open "$port" && break
      running_pid emulator >/dev/null || break
      sleep 0.1
    done
    if ! port_open "$port"; then
      echo "function: the Lambda emulator did not start; its log ($state/emulator.log):" >&2
      tail -n 20 "$state/emulator.log" >&2
      stop
      exit 1
    fi
    echo "$port" >"$state/emulator.port"

    # What Lambda sets for every function (its name, memory size, ...), with the emulator as
    # its Runtime API.
    eval "$("$tools/python" -m bike_local.lambda_env --runtime-api "http://127.0.0.1:$port/.rt")"
    export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash "$root/scripts/setup-ort.sh")}
    # Like Lambda's /tmp, the model cache starts empty with each new function instance.
    export MODEL_CACHE_DIR=${MODEL_CACHE_DIR:-$state/model-cache}
    rm -rf "$MODEL_CACHE_DIR"
    start_background function "$binary"

    timeout=${FUNCTION_START_TIMEOUT:-60}
    for _ in $(seq $((timeout * 10))); do
      grep -q 'request stack initialized in first lambda connection' "$state/emulator.log" && break
      running_pid function >/dev/null || break
      sleep 0.1
    done
    if ! running_pid function >/dev/null; then
      echo "function: cold start failed; its log ($state/function.log):" >&2
      tail -n 20 "$state/function.log" >&2
      stop
      exit 1
    fi
    if ! grep -q 'request stack initialized in first lambda connection' "$state/emulator.log"; then
      echo "function: not polling for invocations after ${timeout} s; see $state/function.log" >&2
      stop
      exit 1
    fi
    echo "function: ready, invoke with POST http://127.0.0.1:$port/2015-03-31/functions/$FUNCTION/invocations" >&2
    ;;
  stop)
    stop
    ;;
  env)
    running_pid function >/dev/null || { echo "function: not running (scripts/local/function.sh start)" >&2; exit 1; }
    echo "export FUNCTION_INVOKE_URL=http://127.0.0.1:$(<"$state/emulator.port")/2015-03-31/functions/$FUNCTION/invocations"
    ;;
  status)
    running_pid function >/dev/null && running_pid emulator >/dev/null
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
