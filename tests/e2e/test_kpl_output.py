"""OUTPUT_AGGREGATION=kpl through the real pieces: the prediction events come out of the
output stream as KPL aggregated records that the PyPI `aws-kinesis-agg` deaggregator (an
implementation independent of ours) reads back to one event per record, each on the shard of
its own partition key."""

import base64
import hashlib
import json

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from bike_local.mlflow_layout import RUN_ID, run_prefix
from bike_local.reference import REL_TOL, feature_record, prediction

MODEL_PREFIX = run_prefix(RUN_ID)


def shard_of(shards: list[dict], partition_key: str) -> str:
    """The shard Kinesis puts `partition_key` on: the one whose hash-key range holds its MD5."""
    hash_key = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    (shard,) = [shard["ShardId"] for shard in shards
                if int(shard["HashKeyRange"]["StartingHashKey"]) <= hash_key
                <= int(shard["HashKeyRange"]["EndingHashKey"])]
    return shard


def test_aggregated_predictions_read_back_with_the_kpl_deaggregator(stack, figures):
    count = 3000
    stack.create_streams(shards=4)
    stack.upload_model(MODEL_PREFIX)
    started = stack.start_function(MODEL_BUCKET=stack.bucket, RUN_ID=RUN_ID,
                                   OUTPUT_AGGREGATION="kpl")
    assert started.returncode == 0, started.stderr
    # pred_ids repeat (each three times), so that each key's events must stay in order.
    stack.put([feature_record(row % 2000, row % 1000) for row in range(count)])

    status, batches, summary = stack.poll("--max-records", str(count), "--batch-size", "10000")
    assert status == 0, summary
    assert summary["redeliveries"] == 0 and summary["functionErrors"] == 0, summary

    shards = stack.kinesis.list_shards(StreamName=stack.output_stream)["Shards"]
    aggregates, events = 0, {}
    for shard in shards:
        iterator = stack.kinesis.get_shard_iterator(
            StreamName=stack.output_stream, ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = stack.kinesis.get_records(ShardIterator=iterator, Limit=10000)
            aggregates += len(page["Records"])
            # The library's reading of GetRecords' records, as boto3 returns them.
            for user_record in iter_deaggregate_records(page["Records"], data_format="Boto3"):
                key = user_record["kinesis"]["partitionKey"]
                event = json.loads(base64.b64decode(user_record["kinesis"]["data"]))
                assert str(event["prediction"]["pred_id"]) == key
                assert shard_of(shards, key) == shard["ShardId"], key
                events.setdefault(key, []).append(event["prediction"]["cnt"])
            iterator = page.get("NextShardIterator") if page["Records"] else None

    assert sum(len(values) for values in events.values()) == count
    assert aggregates < count / 100, aggregates
    # Each pred_id's three events, in the order of their records (rows k, k+1000, k+2000).
    for pred_id in range(1000):
        expected = [prediction((pred_id + 1000 * n) % 2000) for n in range(3)]
        actual = events[str(pred_id)]
        assert len(actual) == 3, pred_id
        assert all(abs(a - e) <= REL_TOL * max(abs(e), 1) for a, e in zip(actual, expected)), \
            (pred_id, actual, expected)
    figures(f"KPL output: {count:,} prediction events in {aggregates} aggregated records on "
            f"{len(shards)} shards, read back by aws-kinesis-agg, each on its key's shard")
