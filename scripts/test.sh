#!/usr/bin/env bash
# The test command: installs and starts what the tests need (ONNX Runtime, the local AWS
# services), runs every test, and stops what it started. Idempotent and fast when installed.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo "test: $*" >&2; }
# Runs a stage and then says how long it took: `timed LABEL COMMAND...`.
timed() {
  local label=$1 start=$SECONDS
  shift
  "$@"
  step "$label: $((SECONDS - start)) s"
}
started=$SECONDS

bash scripts/setup-ort.sh >/dev/null
timed "local tools" bash scripts/local/setup-tools.sh
# MLflow, for the registry tests, installs while the tests build; the build takes the cores,
# the install mostly waits on downloads. The build is the dev profile's, on the dependencies
# scripts/pipeline.sh built.
timed "MLflow (.venv/mlflow)" bash scripts/local/setup-mlflow.sh &
mlflow_setup=$!
timed "build" cargo test --locked --all-targets --no-run
wait "$mlflow_setup"

# Our own local services (moto for S3, the Kinesis stand-in, MLflow tracking servers), stopped
# on exit; the tests only ever talk to them.
export LOCAL_STATE_DIR=${LOCAL_STATE_DIR:-$PWD/.cache/test-services}
trap 'bash scripts/local/mlflow.sh stop; bash scripts/local/services.sh stop' EXIT
timed "local AWS services" bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
# Real MLflow tracking servers with the two models registered, for tests/registry.rs.
timed "MLflow tracking servers" bash scripts/local/mlflow.sh start
eval "$(bash scripts/local/mlflow.sh env)"

timed "cargo test" cargo test --locked --all-targets "$@"

# The Kinesis stand-in's own tests, against the server it runs.
timed "tools tests" env PYTHONDONTWRITEBYTECODE=1 .venv/tools/bin/pytest -p no:cacheprovider -q tools/tests

# End to end, through the real pieces: the local services, the Lambda emulator, the function's
# binary (the dev build cargo test made), the poller.
timed "e2e tests" bash scripts/local/e2e.sh
step "all tests passed in $((SECONDS - started)) s"
