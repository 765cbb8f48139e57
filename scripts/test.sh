#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent, fast when already done), then runs
# every test. Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-ort.sh >/dev/null
cargo test --locked --all-targets "$@"
