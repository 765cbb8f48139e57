#!/usr/bin/env bash
# Puts bike-demand feature records on the input Kinesis stream.
#
# Usage: scripts/data_in.sh        one record, the README's sample record (pred_id 123, partition
#                                  key 1)
#        scripts/data_in.sh N      N records of real rows: record i (i = 0..N-1) has pred_id i,
#                                  partition key "i" and the features of row i mod 2000 of
#                                  tests/fixtures/reference.json, whose predictions are known
# Environment: INPUT_STREAM (default passenger_events); AWS settings from the usual variables,
# so it writes to the local Kinesis after `eval "$(scripts/local/services.sh env)"`, to AWS
# otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/local/setup-tools.sh"
aws=$root/.venv/tools/bin/aws
python=$root/.venv/tools/bin/python
stream=${INPUT_STREAM:-passenger_events}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fileb:// sends the file's bytes as they are with both CLI v1 and v2 (no base64 flag needed).
if [[ $# -eq 0 ]]; then
  cat >"$tmp/record.json" <<'EOF'
{"features": {"t1": 2, "t2": 3, "hum": 50, "weather_code": 2}, "pred_id": 123}
EOF
  "$aws" kinesis put-record --stream-name "$stream" --partition-key 1 --data "fileb://$tmp/record.json"
  exit 0
fi

count=$1
[[ $count =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N]   (N a positive integer)" >&2; exit 2; }

# One process makes every PutRecords call (500 records each, refused entries sent again): the
# CLI would start a new interpreter per call, which takes longer than the call itself.
"$python" -m bike_local.producer --stream "$stream" "$count" 2>"$tmp/summary" ||
  { cat "$tmp/summary" >&2; exit 1; }
echo "data_in: put $count records on $stream" >&2
