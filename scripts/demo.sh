#!/usr/bin/env bash
# The main job on this machine: predicts the sample Kinesis event with the bundled model, as the
# Lambda would, and prints the response. Installs what it needs first (idempotent).
# Usage: scripts/demo.sh [event.json]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

event=${1:-events/sample.json}
bash scripts/setup-ort.sh >/dev/null
echo "event: $event" >&2
RUST_LOG=${RUST_LOG:-warn} cargo run --locked --quiet -- invoke --event "$event" | python3 -m json.tool
