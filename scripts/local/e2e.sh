#!/usr/bin/env bash
# The end-to-end tests (tests/e2e): the local services, the Lambda emulator, the function's
# binary and the poller, all real, on this machine. Installs what they need first (idempotent),
# builds the binary (the dev build `cargo test` makes too; FUNCTION_BINARY picks another), then
# runs pytest; extra arguments go to pytest (e.g. -k bad_record).
# Two test files run at a time (pytest-xdist), each file's tests in order in one process: the
# tests mostly wait on the servers, and a file's tests may share a fixture (the registry
# tests' tracking server). `-n 0` runs them all in this process.
# Exit status: pytest's, except that "no tests collected" (5) fails like any other failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bash scripts/setup-ort.sh >/dev/null
bash scripts/local/setup-tools.sh
if [[ -z ${FUNCTION_BINARY:-} ]]; then
  cargo build --locked --quiet --bin bike-prediction
  export FUNCTION_BINARY=$root/target/debug/bike-prediction
fi

status=0
# No .pytest_cache or __pycache__ left in the tree.
PYTHONDONTWRITEBYTECODE=1 .venv/tools/bin/pytest -p no:cacheprovider -n 2 --dist loadscope \
  tests/e2e "$@" || status=$?
if [[ $status == 5 ]]; then
  echo "e2e: pytest collected no tests (wrong path or filter?)" >&2
  exit 1
fi
exit "$status"
