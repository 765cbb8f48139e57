#!/usr/bin/env bash
# The test command: installs and starts what the tests need (ONNX Runtime, the local AWS
# services), runs every test, and stops what it started. Idempotent and fast when installed.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STAGES=test
# shellcheck source=scripts/stages.sh
source scripts/stages.sh
started=$SECONDS

bash scripts/setup-ort.sh >/dev/null
timed "local tools" bash scripts/local/setup-tools.sh

# Our own local services (moto for S3, the Kinesis stand-in, MLflow tracking servers), stopped
# on exit; the tests only ever talk to them.
export LOCAL_STATE_DIR=${LOCAL_STATE_DIR:-$PWD/.cache/test-services}
trap 'bash scripts/local/mlflow.sh stop; bash scripts/local/services.sh stop' EXIT
timed "local AWS services" bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
# Real MLflow tracking servers with the two models registered, for tests/registry.rs: MLflow
# installs and the servers start while the tests build (the build takes the cores; the
# install mostly waits on downloads, a server on its imports). The build is the dev
# profile's, on the dependencies scripts/pipeline.sh built.
# The e2e tests' server (they move its alias and stop it) starts here too.
export MLFLOW_SERVERS="proxy s3 e2e"
# The servers at the lowest priority: the build is what the next step waits for.
{
  timed "MLflow install" bash scripts/local/setup-mlflow.sh
  timed "MLflow tracking servers" nice -n 19 bash scripts/local/mlflow.sh start
} &
mlflow_start=$!
# The library, the binary and the integration tests; the benches and examples are built (and
# each bench run once) by CI (.ci/run).
timed "build" cargo test --locked --workspace --lib --bins --tests --no-run
wait "$mlflow_start"
eval "$(bash scripts/local/mlflow.sh env)"

# The Rust tests, the end-to-end tests and the Kinesis stand-in's own tests run side by side:
# all three mostly wait on local servers rather than compute. The end-to-end tests go through
# the real pieces: their own local services, the Lambda emulator, the function's binary (the
# dev build cargo test made), the poller. The other two print when they are done.
logs=$LOCAL_STATE_DIR/logs
mkdir -p "$logs"
declare -A jobs
# `beside NAME COMMAND...` starts COMMAND in the background, its output kept for `report NAME`.
beside() {
  local name=$1
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  jobs[$name]=$!
}
# `report NAME` waits for NAME's job, prints its output, and fails as the job did.
report() {
  local status=0
  wait "${jobs[$1]}" || status=$?
  cat "$logs/$1.log" >&2
  [[ $status == 0 ]] || step "$1 tests failed (exit status $status)"
  return "$status"
}
beside e2e timed "e2e tests" bash scripts/local/e2e.sh --durations=8
beside tools timed "tools tests" env PYTHONDONTWRITEBYTECODE=1 .venv/tools/bin/pytest \
  -p no:cacheprovider -q tools/tests

# Most integration tests wait on the local servers rather than compute: four at a time.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
status=0
timed "cargo test" cargo test --locked --workspace --lib --bins --tests "$@" || status=$?
report e2e || status=1
report tools || status=1
[[ $status == 0 ]] || exit "$status"
step "all tests passed in $((SECONDS - started)) s"
