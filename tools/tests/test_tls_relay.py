"""The TLS relay in front of the Kinesis stand-in, both as services.sh runs them (their own
processes): a client that trusts the relay's CA gets the stand-in's answers over HTTPS, one
that does not is refused. Run by scripts/test.sh: .venv/tools/bin/pytest tools/tests
"""

import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import boto3
import pytest


def start(module: str, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", module, *args], stderr=subprocess.PIPE,
                               text=True)
    line = process.stderr.readline()
    match = re.search(r"https?://127\.0\.0\.1:(\d+)", line)
    assert match, line
    return process, match.group(0)


@pytest.fixture
def relay(tmp_path):
    kinesis, upstream = start("bike_local.kinesis_server", "--port", "0")
    relay, url = start("bike_local.tls_relay", "--cert-dir", str(tmp_path), "--upstream",
                       upstream.removeprefix("http://"))
    yield url, tmp_path / "ca.pem"
    for process in (relay, kinesis):
        process.terminate()
        process.wait(timeout=10)


def test_client_trusting_the_ca_reaches_the_stand_in_over_https(relay):
    url, ca = relay
    kinesis = boto3.client("kinesis", endpoint_url=url, verify=str(ca), region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    kinesis.create_stream(StreamName="tls", ShardCount=1)
    put = kinesis.put_record(StreamName="tls", Data=b"over tls", PartitionKey="k")
    assert put["ShardId"] == "shardId-000000000000"
    assert kinesis.list_streams()["StreamNames"] == ["tls"]


def test_client_without_the_ca_is_refused(relay):
    url, _ = relay
    with pytest.raises(urllib.error.URLError) as error:
        urllib.request.urlopen(f"{url}/_standin/defaults", context=ssl.create_default_context(),
                               timeout=10)
    assert isinstance(error.value.reason, ssl.SSLCertVerificationError)
