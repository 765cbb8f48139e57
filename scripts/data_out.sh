#!/usr/bin/env bash
# Prints every record on the output Kinesis stream, reading all shards to the end and decoding
# the data: one JSON object per line,
#   {"partitionKey": "123", "sequenceNumber": "...", "data": {"model": ..., "prediction": ...}}
# (`data` is the prediction event; a record that is not JSON is shown as a string).
#
# Usage: scripts/data_out.sh
# Environment: OUTPUT_STREAM (default bike-predictions); AWS settings from the usual variables,
# so it reads the local Kinesis after `eval "$(scripts/local/services.sh env)"`, AWS otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/local/setup-tools.sh"
stream=${OUTPUT_STREAM:-bike-predictions}

# An empty page is not the end of a shard: AWS can answer one while the reader is still behind
# the tip (bike_local.streams reads until MillisBehindLatest is 0).
"$root/.venv/tools/bin/python" -m bike_local.streams "$stream"
