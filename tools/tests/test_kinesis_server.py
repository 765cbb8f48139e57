"""The Kinesis stand-in against what the service does, through boto3 and the server as
services.sh runs it (`python -m bike_local.kinesis_server`, its own process and port).

Expected values come from the service's rules, computed here on their own (MD5 of the key
against the ranges ListShards gives, the token buckets' arithmetic), not from the server's
code. Run by scripts/test.sh: .venv/tools/bin/pytest tools/tests
"""

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.config
import pytest
from bike_local import streams

ACCOUNT = "123456789012"
THROTTLED = "ProvisionedThroughputExceededException"


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bike_local.kinesis_server", "--host", "127.0.0.1", "--port",
         "0", *args], stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert match, line
    return process, match.group(0)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    process, url = start_server("--secret-access-key", "testing")
    yield url
    stop_server(process)


def client(url: str, validate: bool = True):
    config = botocore.config.Config(parameter_validation=validate, retries={"total_max_attempts": 1})
    return boto3.client("kinesis", endpoint_url=url, region_name="us-east-1", config=config,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def kinesis(server):
    return client(server)


def new_stream(kinesis, shards: int) -> str:
    name = f"test-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name,
                                              WaiterConfig={"Delay": 0.1, "MaxAttempts": 5})
    return name


def control(server: str, stream: str, settings: dict | None = None) -> dict:
    data = None if settings is None else json.dumps(settings).encode()
    with urllib.request.urlopen(urllib.request.Request(
            f"{server}/_standin/streams/{stream}", data=data)) as response:
        return json.loads(response.read())


def md5_hash_key(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def test_hash_key_space_is_split_evenly_and_each_record_goes_to_the_shard_of_its_md5(kinesis):
    stream = new_stream(kinesis, 3)
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    assert [shard["ShardId"] for shard in shards] == [f"shardId-00000000000{i}" for i in range(3)]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in shards]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(2))
    sizes = [end - start + 1 for start, end in ranges]
    assert max(sizes) - min(sizes) <= 2

    keys = [f"key-{i}" for i in range(300)]
    answer = kinesis.put_records(StreamName=stream, Records=[
        {"Data": key.encode(), "PartitionKey": key} for key in keys])
    assert answer["FailedRecordCount"] == 0
    for key, result in zip(keys, answer["Records"]):
        (expected,) = [shard["ShardId"] for shard, (start, end) in zip(shards, ranges)
                       if start <= md5_hash_key(key) <= end]
        assert result["ShardId"] == expected, key
    assert len({result["ShardId"] for result in answer["Records"]}) == 3

    # An explicit hash key wins over the partition key's.
    for shard, (start, end) in zip(shards, ranges):
        put = kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="key-0",
                                 ExplicitHashKey=str(end))
        assert put["ShardId"] == shard["ShardId"]


def test_sequence_numbers_increase_per_shard_and_get_records_reads_everything_in_order(kinesis):
    stream = new_stream(kinesis, 2)
    sent = [(f"payload {i}".encode(), str(i)) for i in range(120)]
    answers = []
    for start in range(0, len(sent), 40):
        answers += kinesis.put_records(StreamName=stream, Records=[
            {"Data": data, "PartitionKey": key} for data, key in sent[start:start + 40]])["Records"]
    by_shard: dict[str, list] = {}
    for (data, key), answer in zip(sent, answers):
        assert re.fullmatch(r"[1-9][0-9]{40,}", answer["SequenceNumber"])
        by_shard.setdefault(answer["ShardId"], []).append((answer["SequenceNumber"], data, key))
    assert len(by_shard) == 2
    for shard_id, expected in by_shard.items():
        numbers = [int(number) for number, _, _ in expected]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        # Small pages: the reader follows the iterator across several.
        records = streams.read_shard(kinesis, stream, shard_id, limit=7)
        assert [(r["SequenceNumber"], r["Data"], r["PartitionKey"]) for r in records] == expected
        assert all(abs(r["ApproximateArrivalTimestamp"].timestamp() - time.time()) < 60
                   for r in records)


def test_shard_iterators_start_where_their_type_says(kinesis):
    stream = new_stream(kinesis, 1)
    shard = "shardId-000000000000"
    first = kinesis.put_records(StreamName=stream, Records=[
        {"Data": b"%d" % i, "PartitionKey": "k"} for i in range(5)])["Records"]
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    second = kinesis.put_records(StreamName=stream, Records=[
        {"Data": b"%d" % i, "PartitionKey": "k"} for i in range(5, 8)])["Records"]

    def read(**kwargs) -> list[bytes]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                              **kwargs)["ShardIterator"]
        return [r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]]

    assert read(ShardIteratorType="TRIM_HORIZON") == [b"%d" % i for i in range(8)]
    assert read(ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=first[3]["SequenceNumber"]) == [b"3", b"4", b"5", b"6", b"7"]
    assert read(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                StartingSequenceNumber=first[3]["SequenceNumber"]) == [b"4", b"5", b"6", b"7"]
    assert read(ShardIteratorType="AT_TIMESTAMP", Timestamp=middle) == [b"5", b"6", b"7"]
    latest = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                        ShardIteratorType="LATEST")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=latest)
    assert page["Records"] == [] and page["MillisBehindLatest"] == 0
    kinesis.put_record(StreamName=stream, Data=b"8", PartitionKey="k")
    assert [r["Data"] for r in kinesis.get_records(
        ShardIterator=page["NextShardIterator"])["Records"]] == [b"8"]
    # A reader behind the tip is told so.
    trim = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    assert kinesis.get_records(ShardIterator=trim, Limit=2)["MillisBehindLatest"] > 0
    assert second[0]["SequenceNumber"] > first[-1]["SequenceNumber"]


def test_entries_over_a_shards_record_rate_fail_alone_and_the_bucket_refills(server, kinesis):
    stream = new_stream(kinesis, 1)
    control(server, stream, {"records_per_second": 100})
    entries = [{"Data": b"d", "PartitionKey": str(i)} for i in range(500)]

    answer = kinesis.put_records(StreamName=stream, Records=entries)
    accepted = [r for r in answer["Records"] if "SequenceNumber" in r]
    refused = [r for r in answer["Records"] if "ErrorCode" in r]
    # A full bucket holds one second's worth: 100, and a few more refill during the call.
    assert 100 <= len(accepted) <= 103, len(accepted)
    assert answer["FailedRecordCount"] == len(refused) == 500 - len(accepted)
    assert all(r["ErrorCode"] == THROTTLED for r in refused)
    assert refused[0]["ErrorMessage"] == (
        f"Rate exceeded for shard shardId-000000000000 in stream {stream} under account "
        f"{ACCOUNT}.")
    # Entries are taken in order: the accepted ones are the first.
    assert all("SequenceNumber" in r for r in answer["Records"][:100])

    time.sleep(0.5)
    again = kinesis.put_records(StreamName=stream, Records=entries)
    assert 45 <= 500 - again["FailedRecordCount"] <= 65, again["FailedRecordCount"]

    # PutRecord fails as a whole. One record a second: the first goes, the next waits a second.
    control(server, stream, {"records_per_second": 1})
    kinesis.put_record(StreamName=stream, Data=b"d", PartitionKey="k")
    with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException) as error:
        kinesis.put_record(StreamName=stream, Data=b"d", PartitionKey="k")
    assert "Rate exceeded for shard shardId-000000000000" in str(error.value)

    view = control(server, stream)
    assert view["records_accepted"] == len(accepted) + 500 - again["FailedRecordCount"] + 1
    assert view["entries_throttled"] == len(refused) + again["FailedRecordCount"] + 1
    assert view["calls"]["PutRecords"] == 2 and view["calls"]["PutRecord"] == 2


def test_the_byte_rate_counts_data_and_partition_key_and_a_full_bucket_takes_a_large_record(
        server, kinesis):
    stream = new_stream(kinesis, 1)
    control(server, stream, {"bytes_per_second": 10_000})
    entries = [{"Data": b"x" * 996, "PartitionKey": "%04d" % i} for i in range(50)]  # 1000 B
    answer = kinesis.put_records(StreamName=stream, Records=entries)
    assert 50 - answer["FailedRecordCount"] == 10

    # A record larger than the bucket goes through once the bucket is full again.
    time.sleep(1.1)
    assert kinesis.put_record(StreamName=stream, Data=b"x" * 50_000, PartitionKey="big")
    with pytest.raises(kinesis.exceptions.ProvisionedThroughputExceededException):
        kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="k")


def test_latency_delays_the_puts_answer_without_holding_up_other_calls(server, kinesis):
    slow, other = new_stream(kinesis, 1), new_stream(kinesis, 1)
    control(server, slow, {"latency_ms": 600})

    started = time.monotonic()
    thread = threading.Thread(target=kinesis.put_record,
                              kwargs=dict(StreamName=slow, Data=b"d", PartitionKey="k"))
    thread.start()
    time.sleep(0.1)
    quick = client(server)
    quick.put_record(StreamName=other, Data=b"d", PartitionKey="k")
    quick.describe_stream_summary(StreamName=slow)
    assert time.monotonic() - started < 0.5  # answered while the slow put waited
    thread.join()
    assert time.monotonic() - started >= 0.6

    control(server, slow, {"latency_ms": 300, "latency_all": True})
    started = time.monotonic()
    kinesis.describe_stream_summary(StreamName=slow)
    assert time.monotonic() - started >= 0.3


def test_calls_over_the_request_limits_are_refused_whole_with_the_services_errors(kinesis, server):
    stream = new_stream(kinesis, 1)
    unchecked = client(server, validate=False)  # botocore would refuse some before sending

    def error(call, **kwargs):
        with pytest.raises(kinesis.exceptions.ClientError) as raised:
            call(**kwargs)
        response = raised.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == \
            response["Error"]["Code"]
        return response["Error"]["Code"], response["Error"]["Message"]

    code, message = error(unchecked.put_records, StreamName=stream, Records=[
        {"Data": b"d", "PartitionKey": "k"}] * 501)
    assert code == "ValidationException"
    assert "at 'records' failed to satisfy constraint: Member must have length less than or " \
           "equal to 500" in message
    code, message = error(kinesis.put_records, StreamName=stream, Records=[
        {"Data": b"x" * (1024 * 1024 - 1), "PartitionKey": "k"}] * 6)
    assert (code, message) == ("InvalidArgumentException", "Records size exceeds 5 MB limit")
    code, message = error(kinesis.put_records, StreamName=stream, Records=[
        {"Data": b"d", "PartitionKey": "k"}, {"Data": b"x" * (1024 * 1024 + 1), "PartitionKey": "k"}])
    assert code == "ValidationException"
    assert "at 'records.2.member.data' failed to satisfy constraint: Member must have length " \
           "less than or equal to 1048575 with its partition key" in message
    # The record's size is its data and its partition key: 1 MiB of data is one byte too many.
    code, _ = error(kinesis.put_records, StreamName=stream, Records=[
        {"Data": b"x" * (1024 * 1024), "PartitionKey": "k"}])
    assert code == "ValidationException"
    for key, constraint in (("", "greater than or equal to 1"),
                            ("é" * 257, "less than or equal to 256")):
        code, message = error(unchecked.put_records, StreamName=stream,
                              Records=[{"Data": b"d", "PartitionKey": key}])
        assert code == "ValidationException"
        assert f"records.1.member.partitionKey' failed to satisfy constraint: Member must have " \
               f"length {constraint}" in message
    # 256 characters of two bytes each are a partition key.
    kinesis.put_record(StreamName=stream, Data=b"d", PartitionKey="é" * 256)
    assert control(server, stream)["shards"][0]["records"] == 1  # nothing of the refused calls

    # A larger maximum record size lets a larger record in.
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    code, _ = error(unchecked.update_max_record_size, StreamARN=arn, MaxRecordSizeInKiB=100)
    assert code == "ValidationException"
    kinesis.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["MaxRecordSizeInKiB"] == 2048
    time.sleep(1.1)
    kinesis.put_record(StreamName=stream, Data=b"x" * (1536 * 1024), PartitionKey="k")


def test_missing_and_duplicate_streams_and_bad_iterators_get_the_services_errors(kinesis, server):
    stream = new_stream(kinesis, 1)
    with pytest.raises(kinesis.exceptions.ResourceInUseException) as error:
        kinesis.create_stream(StreamName=stream, ShardCount=1)
    assert str(error.value).endswith(f"Stream {stream} under account {ACCOUNT} already exists.")
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    with pytest.raises(kinesis.exceptions.InvalidArgumentException):
        kinesis.get_records(ShardIterator="not-an-iterator")
    kinesis.delete_stream(StreamName=stream)
    assert stream not in kinesis.list_streams()["StreamNames"]
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException) as error:
        kinesis.put_records(StreamName=stream, Records=[{"Data": b"d", "PartitionKey": "k"}])
    assert str(error.value).endswith(f"Stream {stream} under account {ACCOUNT} not found.")
    with pytest.raises(kinesis.exceptions.ResourceNotFoundException):
        kinesis.get_records(ShardIterator=iterator)
    with pytest.raises(urllib.error.HTTPError) as refused:
        control(server, stream)
    assert refused.value.code == 404


def test_shard_iterators_expire(tmp_path):
    process, url = start_server("--iterator-ttl-s", "0.3")
    try:
        kinesis = client(url)
        stream = new_stream(kinesis, 1)
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                                              ShardIteratorType="LATEST")["ShardIterator"]
        kinesis.get_records(ShardIterator=iterator)
        time.sleep(0.4)
        with pytest.raises(kinesis.exceptions.ExpiredIteratorException) as error:
            kinesis.get_records(ShardIterator=iterator)
        assert "tolerated delay of 300 milliseconds" in str(error.value)
    finally:
        stop_server(process)


def test_server_wide_defaults_apply_to_new_streams_and_no_limits_means_none():
    process, url = start_server("--no-limits", "--latency-ms", "200")
    try:
        kinesis = client(url)
        stream = new_stream(kinesis, 1)
        started = time.monotonic()
        for _ in range(6):  # 3,000 records in well under a second
            answer = kinesis.put_records(StreamName=stream, Records=[
                {"Data": b"d", "PartitionKey": str(i)} for i in range(500)])
            assert answer["FailedRecordCount"] == 0
        assert time.monotonic() - started >= 6 * 0.2
        settings = control(url, stream)["settings"]
        assert settings == {"latency_ms": 200, "latency_all": False,
                            "records_per_second": None, "bytes_per_second": None}
    finally:
        stop_server(process)


def test_control_endpoint_refuses_unknown_settings_and_bad_values(server, kinesis):
    stream = new_stream(kinesis, 1)
    for settings in ({"latency": 5}, {"records_per_second": -1}, {"latency_ms": "slow"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            control(server, stream, settings)
        assert refused.value.code == 400, settings
    assert control(server, stream)["settings"]["records_per_second"] == 1000


def test_blobs_travel_as_base64_on_the_wire():
    """What the SDKs send and expect, without an SDK: base64 blobs, epoch-second timestamps
    (on a server that checks no signatures)."""
    process, server = start_server()
    def call(operation, body):
        request = urllib.request.Request(server + "/", data=json.dumps(body).encode(), headers={
            "X-Amz-Target": f"Kinesis_20131202.{operation}",
            "Content-Type": "application/x-amz-json-1.1"})
        with urllib.request.urlopen(request) as response:
            assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
            return json.loads(response.read())

    name = f"wire-{uuid.uuid4().hex[:8]}"
    call("CreateStream", {"StreamName": name, "ShardCount": 1})
    data = bytes(range(256))
    call("PutRecord", {"StreamName": name, "PartitionKey": "k",
                       "Data": base64.b64encode(data).decode()})
    iterator = call("GetShardIterator", {"StreamName": name, "ShardId": "shardId-000000000000",
                                         "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
    (record,) = call("GetRecords", {"ShardIterator": iterator})["Records"]
    stop_server(process)
    assert base64.b64decode(record["Data"]) == data
    assert isinstance(record["ApproximateArrivalTimestamp"], float)


def test_signatures_are_checked_against_the_secret_key_over_headers_and_body(server):
    """boto3's signed calls go through; a wrong secret, a body changed after signing and an
    unsigned request get the service's errors."""
    good = client(server)
    good.list_streams()  # signed with the server's secret: accepted
    wrong = boto3.client("kinesis", endpoint_url=server, region_name="eu-west-1",
                         aws_access_key_id="other", aws_secret_access_key="not-the-secret",
                         config=botocore.config.Config(retries={"total_max_attempts": 1}))
    with pytest.raises(wrong.exceptions.ClientError) as refused:
        wrong.list_streams()
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"

    def tamper(request, **_):
        request.body = request.body.replace(b'"Limit": 5', b'"Limit": 6')
    tampering = client(server)
    tampering.meta.events.register_last("before-send.kinesis.ListStreams", tamper)
    with pytest.raises(tampering.exceptions.ClientError) as refused:
        tampering.list_streams(Limit=5)
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"

    # Registered credentials are checked against their own secret.
    request = urllib.request.Request(server + "/_standin/credentials", method="POST",
                                     data=json.dumps({"other": "not-the-secret"}).encode())
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["access_key_ids"] == ["other"]
    wrong.list_streams()

    unsigned = urllib.request.Request(server + "/", data=b"{}", headers={
        "X-Amz-Target": "Kinesis_20131202.ListStreams",
        "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"] == "MissingAuthenticationTokenException"
