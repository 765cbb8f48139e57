"""bike_local.streams: a stream read to its end, by the rule of GetRecords' answers and
against the Kinesis stand-in."""

import threading

import boto3
import pytest
from bike_local import kinesis_server, streams


class ScriptedKinesis:
    """A one-shard stream whose GetRecords answers are the given pages, in turn."""

    def __init__(self, pages: list[dict]):
        self.pages = pages
        self.calls = 0

    def get_shard_iterator(self, **_):
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator, Limit):
        page = self.pages[int(ShardIterator)]
        self.calls += 1
        return {**page, "NextShardIterator": page.get("NextShardIterator",
                                                      str(int(ShardIterator) + 1))}


def page(*records, behind=0, **extra):
    return {"Records": [{"Data": r} for r in records], "MillisBehindLatest": behind, **extra}


def test_an_empty_page_behind_the_tip_is_not_the_end():
    kinesis = ScriptedKinesis([page(b"1"), page(behind=5000), page(behind=10), page(b"2"),
                               page(), page(b"never read")])

    records = streams.read_shard(kinesis, "s", "shardId-000000000000")

    assert [r["Data"] for r in records] == [b"1", b"2"]
    assert kinesis.calls == 5


def test_a_closed_shard_ends_where_its_iterator_does():
    kinesis = ScriptedKinesis([page(b"1", behind=99, NextShardIterator=None)])

    assert [r["Data"] for r in streams.read_shard(kinesis, "s", "x")] == [b"1"]


def test_decoded_shows_json_data_as_json_and_other_data_as_text():
    record = {"PartitionKey": "k", "SequenceNumber": "9"}
    assert streams.decoded({**record, "Data": b'{"a": 1}'})["data"] == {"a": 1}
    assert streams.decoded({**record, "Data": b"\xffnot json"}) == {
        "partitionKey": "k", "sequenceNumber": "9", "data": "\ufffdnot json"}


@pytest.fixture(scope="module")
def kinesis():
    no_limits = kinesis_server.Settings(records_per_second=None, bytes_per_second=None)
    server = kinesis_server.serve("127.0.0.1", 0, kinesis_server.Kinesis(no_limits))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield boto3.client("kinesis", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    server.shutdown()


def test_every_record_of_every_shard_is_read_in_order_within_its_shard(kinesis):
    kinesis.create_stream(StreamName="read-to-end", ShardCount=3)
    keys = [str(i) for i in range(200)]
    answers = kinesis.put_records(StreamName="read-to-end", Records=[
        {"Data": key.encode(), "PartitionKey": key} for key in keys])["Records"]

    records = streams.read_stream(kinesis, "read-to-end")

    assert sorted(r["PartitionKey"] for r in records) == sorted(keys)
    shard_of = {answer["SequenceNumber"]: answer["ShardId"] for answer in answers}
    shards = [shard_of[r["SequenceNumber"]] for r in records]
    assert shards == sorted(shards) and len(set(shards)) == 3
