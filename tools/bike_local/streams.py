"""Reading a Kinesis stream to its end: every shard, from TRIM_HORIZON to the tip.

An empty GetRecords page is not the end of a shard: AWS may answer one while the reader is
still behind the tip (`MillisBehindLatest` > 0), so a shard is read until a page is empty
with the reader at the tip, or until the shard is closed (no `NextShardIterator`).

As a command, `python -m bike_local.streams STREAM` prints every record of STREAM, one JSON
object per line, `{"partitionKey": ..., "sequenceNumber": ..., "data": ...}`, with `data`
decoded from JSON (a string if it is not JSON): scripts/data_out.sh. It uses boto3 with the
standard AWS configuration (AWS_ENDPOINT_URL_KINESIS for local servers).
"""

import argparse
import json
import sys

PAGE_LIMIT = 10_000
"""Records per GetRecords call: the most Kinesis gives."""


def at_end(page: dict) -> bool:
    """Whether a GetRecords answer ends the reading of its shard."""
    if not page.get("NextShardIterator"):
        return True  # a closed shard, read to its end
    return not page["Records"] and page.get("MillisBehindLatest", 0) == 0


def read_shard(kinesis, stream: str, shard_id: str, limit: int = PAGE_LIMIT) -> list[dict]:
    """Every record of one shard, from the start to the end, as GetRecords gives them."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        records += page["Records"]
        if at_end(page):
            return records
        iterator = page["NextShardIterator"]


def shard_ids(kinesis, stream: str) -> list[str]:
    """The stream's shards, in ListShards order (every page)."""
    ids, token = [], None
    while True:
        page = (kinesis.list_shards(NextToken=token) if token
                else kinesis.list_shards(StreamName=stream))
        ids += [shard["ShardId"] for shard in page["Shards"]]
        token = page.get("NextToken")
        if not token:
            return ids


def read_stream(kinesis, stream: str) -> list[dict]:
    """Every record on `stream`, shard after shard, each from the start to the end, as
    GetRecords gives them (`PartitionKey`, `SequenceNumber`, `Data` in bytes, ...)."""
    return [record for shard_id in shard_ids(kinesis, stream)
            for record in read_shard(kinesis, stream, shard_id)]


def decoded(record: dict) -> dict:
    """A record as data_out.sh prints it: its data decoded from JSON where it is JSON."""
    data = record["Data"].decode("utf-8", "replace")
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return {"partitionKey": record["PartitionKey"], "sequenceNumber": record["SequenceNumber"],
            "data": data}


def main() -> int:
    import boto3  # only the command needs AWS; the tests bring their own client

    parser = argparse.ArgumentParser(description="Prints every record on a Kinesis stream.")
    parser.add_argument("stream")
    args = parser.parse_args()
    for record in read_stream(boto3.client("kinesis"), args.stream):
        print(json.dumps(decoded(record)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
