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
timed "build" cargo test --locked --lib --bins --tests --no-run
wait "$mlflow_start"
eval "$(bash scripts/local/mlflow.sh env)"

# Most integration tests wait on the local servers rather than compute: four at a time.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
timed "cargo test" cargo test --locked --lib --bins --tests "$@"

# The Kinesis stand-in's own tests, against the server it runs, while the end-to-end tests
# run, through the real pieces: their own local services, the Lambda emulator, the
# function's binary (the dev build cargo test made), the poller. The tools tests print once
# the e2e tests are done.
tools_log=$LOCAL_STATE_DIR/tools-tests.log
(
  timed "tools tests" env PYTHONDONTWRITEBYTECODE=1 .venv/tools/bin/pytest -p no:cacheprovider \
    -q tools/tests
) >"$tools_log" 2>&1 &
tools_tests=$!
timed "e2e tests" bash scripts/local/e2e.sh --durations=8
tools_status=0
wait "$tools_tests" || tools_status=$?
cat "$tools_log" >&2
[[ $tools_status == 0 ]] || exit "$tools_status"
step "all tests passed in $((SECONDS - started)) s"
