"""moto_server, with Kinesis PutRecords in constant time per record.

moto 5.2's Kinesis shard finds the sequence number of its last record by copying every key of
the shard into a list, once for each record put: putting N records costs O(N^2), and 100,000
records on a 4-shard stream take 96 s of moto's time instead of 15 s. A load test would then
measure moto's list copies, not the pipeline. The shard's records are an insertion-ordered dict
keyed by increasing sequence numbers, so its last key is the same answer in O(1); nothing else
changes. Should a moto upgrade drop that method, moto runs as it is (and says so).

Usage: python moto_server.py [moto_server arguments]   (scripts/local/services.sh runs it)
"""

import sys

from moto.kinesis.models import Shard
from moto.server import main


def last_sequence_number(shard: Shard) -> int:
    return next(reversed(shard.records), 0)


if hasattr(Shard, "get_max_sequence_number"):
    Shard.get_max_sequence_number = last_sequence_number
else:
    print("moto_server.py: moto's Shard has no get_max_sequence_number; running moto unpatched",
          file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
