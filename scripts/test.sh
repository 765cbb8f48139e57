#!/usr/bin/env bash
# The test command: installs and starts what the tests need (ONNX Runtime, the local AWS
# services), runs every test, and stops what it started. Idempotent and fast when installed.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-ort.sh >/dev/null
bash scripts/local/setup-tools.sh

# Our own local services (moto for S3, the Kinesis stand-in, MLflow tracking servers), stopped
# on exit; the tests only ever talk to them.
export LOCAL_STATE_DIR=${LOCAL_STATE_DIR:-$PWD/.cache/test-services}
trap 'bash scripts/local/mlflow.sh stop; bash scripts/local/services.sh stop' EXIT
bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
# Real MLflow tracking servers with the two models registered, for tests/registry.rs.
bash scripts/local/mlflow.sh start
eval "$(bash scripts/local/mlflow.sh env)"

cargo test --locked --all-targets "$@"

# The Kinesis stand-in's own tests, against the server it runs.
PYTHONDONTWRITEBYTECODE=1 .venv/tools/bin/pytest -p no:cacheprovider -q tools/tests

# End to end, through the real pieces: the local services, the Lambda emulator, the release
# binary, the poller.
bash scripts/local/e2e.sh
