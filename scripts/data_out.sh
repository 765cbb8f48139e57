#!/usr/bin/env bash
# Prints every record on the output Kinesis stream, like the original data_out.sh, but reading
# all shards to the end and decoding the data: one JSON object per line,
#   {"partitionKey": "123", "sequenceNumber": "...", "data": {"model": ..., "prediction": ...}}
# (`data` is the prediction event; a record that is not JSON is shown as a string).
#
# Usage: scripts/data_out.sh
# Environment: OUTPUT_STREAM (default bike-predictions); AWS settings from the usual variables,
# so it reads the local Kinesis after `eval "$(scripts/local/services.sh env)"`, AWS otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/local/setup-tools.sh"
aws=$root/.venv/tools/bin/aws
python=$root/.venv/tools/bin/python
stream=${OUTPUT_STREAM:-bike-predictions}
page=$(mktemp)
trap 'rm -f "$page"' EXIT

print_records() {
  "$python" -c '
import base64, json, sys
for record in json.load(open(sys.argv[1]))["Records"]:
    data = base64.b64decode(record["Data"]).decode("utf-8", "replace")
    try:
        data = json.loads(data)
    except ValueError:
        pass
    print(json.dumps({"partitionKey": record["PartitionKey"],
                      "sequenceNumber": record["SequenceNumber"], "data": data}))
' "$page"
}

# The iterator to read next, or nothing once the shard is read to its end. An empty page alone
# does not mean the end on AWS: it can come while the reader is still behind the tip.
next_iterator() {
  "$python" -c '
import json, sys
page = json.load(open(sys.argv[1]))
if page["Records"] or page.get("MillisBehindLatest", 0) > 0:
    print(page.get("NextShardIterator") or "")
' "$page"
}

for shard in $("$aws" kinesis list-shards --stream-name "$stream" --query 'Shards[].ShardId' --output text); do
  iterator=$("$aws" kinesis get-shard-iterator --stream-name "$stream" --shard-id "$shard" \
    --shard-iterator-type TRIM_HORIZON --query ShardIterator --output text)
  while [[ -n $iterator ]]; do
    "$aws" kinesis get-records --shard-iterator "$iterator" --limit 10000 >"$page"
    print_records
    iterator=$(next_iterator)
  done
done
