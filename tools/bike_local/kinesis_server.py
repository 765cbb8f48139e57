"""A Kinesis Data Streams stand-in that behaves like the real service where the pipeline can
tell: the same wire protocol, shards by MD5 hash key ranges, per-shard write limits, and a
latency a test can choose.

    python -m bike_local.kinesis_server --host 127.0.0.1 --port 4567 [options]

What it speaks: the `awsJson1_1` protocol every AWS SDK and the AWS CLI use for Kinesis
(HTTP `POST /`, `X-Amz-Target: Kinesis_20131202.<Operation>`, JSON bodies with blobs in
base64, timestamps in epoch seconds; errors as HTTP 400 with `{"__type": ..., "message": ...}`
and the same code in `x-amzn-ErrorType`). Requests are SigV4-signed, and the region in the
signature goes into the ARNs. Given a secret key (`--secret-access-key`, for any access key
id not registered otherwise), the server checks every signature as the service does, over the
method, path, signed headers and body: a request unsigned is refused with
`MissingAuthenticationTokenException`, one whose signature does not match with
`InvalidSignatureException`. Without it, any signature is accepted.

Operations: CreateStream, DeleteStream, DescribeStream, DescribeStreamSummary, ListStreams,
ListShards, UpdateMaxRecordSize, PutRecord, PutRecords, GetShardIterator (TRIM_HORIZON,
LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP) and GetRecords. Streams are
ACTIVE as soon as CreateStream answers and gone as soon as DeleteStream does (waiters such as
`stream_exists` see ACTIVE on their first call). State is in memory only.

As the service does:
- The 128-bit hash key space is split evenly over the shards (`shardId-000000000000`, ...);
  a record goes to the shard whose range holds MD5(partition key), read as a big-endian
  integer, or its `ExplicitHashKey`.
- Sequence numbers are 56-digit decimal strings, increasing within a shard.
- Each shard admits 1,000 records and 1 MiB (data plus partition key) per second: two token
  buckets holding one second's worth. An entry of PutRecords over either fails alone with
  `ProvisionedThroughputExceededException` ("Rate exceeded for shard ..."); the call's other
  entries are stored and `FailedRecordCount` counts the failed ones. PutRecord fails as a
  whole. A record larger than what the byte bucket holds (a large record, up to 10 MiB) is
  admitted when the bucket is full and leaves it in debt, so the long-run rate still holds.
- Refused as a whole: more than 500 entries (ValidationException), more than 5 MiB of data
  and partition keys in one call, or the stream's largest record if that is more
  (InvalidArgumentException "Records size exceeds 5 MB limit"), a record's data over the
  stream's `MaxRecordSizeInKiB` with its partition key, or a partition key not of 1 to 256 characters
  (ValidationException), a missing stream (ResourceNotFoundException), a stream created
  twice (ResourceInUseException), a shard iterator older than 5 minutes
  (ExpiredIteratorException).
Not modelled: read limits (5 GetRecords calls and 2 MiB per second per shard), resharding,
retention (records are kept until the stream is deleted), consumers, encryption, tags.

Latency and limits: the command line sets the defaults of every stream created later:
  --latency-ms MS            added before answering PutRecord/PutRecords (default 0)
  --latency-all              add it to every call naming a stream, not only the puts
  --records-per-second N     per shard (default 1000)
  --bytes-per-second N       per shard (default 1048576)
  --no-limits                no write limits at all
  --iterator-ttl-s S         age at which a shard iterator expires (default 300)
  --secret-access-key KEY    check each request's signature against this secret key
The call is carried out when it arrives and its answer waits: records put by a call whose
client gave up during the latency are on the stream, as after a lost answer. Calls are served
concurrently (one thread per connection), so a waiting call holds up no other.

Control endpoint, on the same port, JSON in and out:
  GET  /_standin/streams/NAME   the stream's settings and counters: calls per operation,
                                records accepted, bytes accepted, entries throttled, and the
                                records on each shard
  POST /_standin/streams/NAME   changes the stream's settings, e.g.
                                {"latency_ms": 200, "latency_all": false,
                                 "records_per_second": 100, "bytes_per_second": null}
                                (null: no limit of that kind); refills its shards' buckets
  GET  /_standin/defaults, POST /_standin/defaults
                                the same for the defaults of streams created later
  POST /_standin/credentials    {"<access key id>": "<secret key>", ...}: the secret
                                signatures with those access key ids are checked against
An unknown stream is 404, an unknown setting or a bad value 400.
"""

import argparse
import base64
import binascii
import bisect
import dataclasses
import hashlib
import hmac
import http.server
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid

TARGET_PREFIX = "Kinesis_20131202."
CONTENT_TYPE = "application/x-amz-json-1.1"
ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
HASH_SPACE = 2**128
MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
DEFAULT_MAX_RECORD_KIB = 1024
MAX_GET_RECORDS = 10_000
MAX_GET_RECORDS_BYTES = 10 * 1024 * 1024
ON_DEMAND_SHARDS = 4
STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
DECIMAL = re.compile(r"0|[1-9][0-9]*")
CREDENTIAL_REGION = re.compile(r"Credential=[^/]*/[^/]*/([^/]*)/")
SIGV4_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request), ?SignedHeaders=(?P<headers>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})")

# Sequence numbers: 49, then the stream's serial, the shard's index and the record's position
# in the shard, each in a fixed number of digits (56 in all, like the service's).
SEQUENCE_PREFIX = 49 * 10**54
STREAM_DIGITS = 10**44
SHARD_DIGITS = 10**32


class KinesisError(Exception):
    """An error the service answers with: its code (the `__type`) and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def validation_error(*problems: str) -> KinesisError:
    """A ValidationException worded as the service words it."""
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return KinesisError("ValidationException",
                        f"{count} validation {noun} detected: {'; '.join(problems)}")


def signature_problem(secret_of, method: str, target: str, headers, body: bytes) -> \
        KinesisError | None:
    """Why a request is not signed by SigV4 with the secret key `secret_of` gives for its
    access key id (the error the service answers), or None if it is. `target` is the request
    line's path and query, `headers` the request's headers (an `email.message.Message`)."""
    authorization = SIGV4_AUTHORIZATION.fullmatch((headers.get("Authorization") or "").strip())
    if authorization is None:
        return KinesisError("MissingAuthenticationTokenException",
                            "Missing Authentication Token")
    secret = secret_of(authorization["key"])
    path, _, query = target.partition("?")
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}="
                               f"{urllib.parse.quote(v, safe='-_.~')}" for k, v in pairs)
    signed = authorization["headers"]
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(value.split()) for value in headers.get_all(name, []))}\n"
        for name in signed.split(";"))
    canonical_request = "\n".join([method, path, canonical_query, canonical_headers, signed,
                                   hashlib.sha256(body).hexdigest()])
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", headers.get("X-Amz-Date") or "",
                                authorization["scope"],
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (authorization["date"], authorization["region"], authorization["service"],
                 "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, authorization["signature"]):
        return KinesisError("InvalidSignatureException",
                            "The request signature we calculated does not match the signature "
                            "you provided. Check your AWS Secret Access Key and signing method.")
    return None


def blob_value(size: int) -> str:
    """How the service quotes a blob in a validation message (its Java buffer)."""
    return f"java.nio.HeapByteBuffer[pos=0 lim={size} cap={size}]"


@dataclasses.dataclass
class Settings:
    """What a stream adds to the service: latency, and write limits per shard (None: none)."""

    latency_ms: float = 0.0
    latency_all: bool = False
    records_per_second: float | None = 1000.0
    bytes_per_second: float | None = 1024.0 * 1024.0

    def updated(self, changes: dict) -> "Settings":
        """These settings with `changes` applied; ValueError names a bad one."""
        fields = {field.name for field in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        new = dataclasses.replace(self, **changes)
        number = (int, float)
        if isinstance(new.latency_ms, bool) or not isinstance(new.latency_ms, number) \
                or new.latency_ms < 0:
            raise ValueError("latency_ms must be a number >= 0")
        if not isinstance(new.latency_all, bool):
            raise ValueError("latency_all must be true or false")
        for name in ("records_per_second", "bytes_per_second"):
            value = getattr(new, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, number)
                                      or value <= 0):
                raise ValueError(f"{name} must be a number > 0, or null for no limit")
        return new


class Shard:
    """One shard: its hash key range, its records and its write buckets."""

    __slots__ = ("id", "index", "start", "end", "base", "records", "record_tokens",
                 "byte_tokens", "refilled_at")

    def __init__(self, serial: int, index: int, start: int, end: int):
        self.id = f"shardId-{index:012d}"
        self.index, self.start, self.end = index, start, end
        self.base = SEQUENCE_PREFIX + serial * STREAM_DIGITS + index * SHARD_DIGITS
        self.records: list[tuple[float, str, str]] = []  # (arrival, partition key, base64 data)
        self.record_tokens = self.byte_tokens = 0.0
        self.refilled_at = 0.0

    def fill(self, settings: Settings, now: float) -> None:
        """Full buckets, as after a quiet second."""
        self.record_tokens = settings.records_per_second or 0.0
        self.byte_tokens = settings.bytes_per_second or 0.0
        self.refilled_at = now

    def refill(self, settings: Settings, now: float) -> None:
        elapsed = max(0.0, now - self.refilled_at)
        self.refilled_at = now
        if settings.records_per_second is not None:
            self.record_tokens = min(settings.records_per_second,
                                     self.record_tokens + elapsed * settings.records_per_second)
        if settings.bytes_per_second is not None:
            self.byte_tokens = min(settings.bytes_per_second,
                                   self.byte_tokens + elapsed * settings.bytes_per_second)

    def describe(self) -> dict:
        return {
            "ShardId": self.id,
            "HashKeyRange": {"StartingHashKey": str(self.start), "EndingHashKey": str(self.end)},
            "SequenceNumberRange": {"StartingSequenceNumber": str(self.base)},
        }


class Stream:
    """A stream: its shards, settings and counters."""

    def __init__(self, name: str, serial: int, shard_count: int, mode: str, region: str,
                 settings: Settings, now: float):
        self.name, self.serial, self.mode = name, serial, mode
        self.arn = f"arn:aws:kinesis:{region}:{ACCOUNT}:stream/{name}"
        self.created = now
        self.max_record_kib = DEFAULT_MAX_RECORD_KIB
        self.settings = settings
        step = HASH_SPACE // shard_count
        starts = [index * step for index in range(shard_count)]
        ends = [start - 1 for start in starts[1:]] + [HASH_SPACE - 1]
        self.starts = starts
        self.shards = [Shard(serial, index, start, end)
                       for index, (start, end) in enumerate(zip(starts, ends))]
        for shard in self.shards:
            shard.fill(settings, now)
        self.calls: dict[str, int] = {}
        self.records_accepted = self.bytes_accepted = self.entries_throttled = 0

    def throttled_message(self, shard: Shard) -> str:
        return f"Rate exceeded for shard {shard.id} in stream {self.name} under account {ACCOUNT}."

    def shard_named(self, shard_id) -> Shard:
        for shard in self.shards:
            if shard.id == shard_id:
                return shard
        raise KinesisError("ResourceNotFoundException",
                           f"Shard {shard_id} in stream {self.name} under account {ACCOUNT} "
                           "does not exist")

    def summary(self) -> dict:
        return {
            "StreamName": self.name,
            "StreamARN": self.arn,
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": self.mode},
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": round(self.created, 3),
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }

    def view(self) -> dict:
        """What the control endpoint shows of the stream."""
        return {
            "stream": self.name,
            "settings": dataclasses.asdict(self.settings),
            "calls": dict(self.calls),
            "records_accepted": self.records_accepted,
            "bytes_accepted": self.bytes_accepted,
            "entries_throttled": self.entries_throttled,
            "shards": [{"ShardId": shard.id, "records": len(shard.records)}
                       for shard in self.shards],
        }


def blob_size(data, where: str) -> int:
    """The decoded size of a base64 blob of the request."""
    if not isinstance(data, str):
        raise KinesisError("SerializationException", f"{where}: a blob must be a base64 string")
    try:
        return len(binascii.a2b_base64(data))
    except binascii.Error as error:
        raise KinesisError("SerializationException", f"{where}: not base64 ({error})") from None


def partition_key_problem(key, where: str) -> str | None:
    """Why `key` is not a partition key (1 to 256 characters), in the service's words."""
    if key is None:
        return f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
    if not isinstance(key, str):
        raise KinesisError("SerializationException", f"{where}: must be a string")
    if not key:
        return (f"Value '' at '{where}' failed to satisfy constraint: Member must have length "
                "greater than or equal to 1")
    if len(key) > 256:
        return (f"Value '{key}' at '{where}' failed to satisfy constraint: Member must have "
                "length less than or equal to 256")
    return None


def explicit_hash_key(value, where: str) -> int:
    if not isinstance(value, str) or not DECIMAL.fullmatch(value) or int(value) >= HASH_SPACE:
        raise KinesisError("InvalidArgumentException",
                           f"Invalid ExplicitHashKey. ExplicitHashKey must be in the range: "
                           f"[0, 2^128-1]. Specified value was {value}")
    return int(value)


class Kinesis:
    """The service's state and operations. One lock guards the state; no call holds it while
    it waits out a latency."""

    def __init__(self, defaults: Settings, iterator_ttl_s: float = 300.0):
        self.defaults = defaults
        self.iterator_ttl_s = iterator_ttl_s
        self.streams: dict[str, Stream] = {}
        self.serial = 0
        self.lock = threading.Lock()
        # Secret keys by access key id, registered through the control endpoint.
        self.credentials: dict[str, str] = {}
        self.secret = uuid.uuid4().hex[:8]  # iterators of another server run are refused
        self.named: Stream | None = None  # the stream of the call in progress

    # -- helpers -------------------------------------------------------------------------------

    def stream(self, request: dict) -> Stream:
        name = request.get("StreamName")
        arn = request.get("StreamARN")
        if name is None and arn is not None:
            if not isinstance(arn, str) or "/" not in arn:
                raise validation_error(f"Value '{arn}' at 'streamARN' failed to satisfy "
                                       "constraint: Member must satisfy regular expression "
                                       "pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+")
            name = arn.rsplit("/", 1)[1]
        if name is None:
            raise KinesisError("InvalidArgumentException",
                               "Either StreamName or StreamARN should be provided.")
        stream = self.streams.get(name)
        if stream is None:
            raise KinesisError("ResourceNotFoundException",
                               f"Stream {name} under account {ACCOUNT} not found.")
        self.named = stream
        return stream

    def iterator(self, stream: Stream, shard: Shard, position: int, now: float) -> str:
        text = f"{self.secret}|{stream.name}|{stream.serial}|{shard.index}|{position}|{now:.3f}"
        return base64.urlsafe_b64encode(text.encode()).decode()

    def read_iterator(self, iterator) -> tuple[Stream, Shard, int]:
        invalid = KinesisError("InvalidArgumentException", "Invalid ShardIterator.")
        if not isinstance(iterator, str) or not 1 <= len(iterator) <= 512:
            raise validation_error(f"Value '{iterator}' at 'shardIterator' failed to satisfy "
                                   "constraint: Member must have length less than or equal "
                                   "to 512")
        try:
            secret, name, serial, index, position, created = (
                base64.urlsafe_b64decode(iterator.encode()).decode().split("|"))
            serial, index, position, created = int(serial), int(index), int(position), \
                float(created)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise invalid from None
        if secret != self.secret:
            raise invalid
        now = time.time()
        if now - created > self.iterator_ttl_s:
            def moment(t: float) -> str:
                return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(t))
            raise KinesisError(
                "ExpiredIteratorException",
                f"Iterator expired. The iterator was created at time {moment(created)} while "
                f"right now it is {moment(now)} which is further in the future than the "
                f"tolerated delay of {int(self.iterator_ttl_s * 1000)} milliseconds.")
        stream = self.streams.get(name)
        if stream is None or stream.serial != serial or index >= len(stream.shards):
            raise KinesisError("ResourceNotFoundException",
                               f"Shard shardId-{index:012d} in stream {name} under account "
                               f"{ACCOUNT} does not exist")
        self.named = stream
        return stream, stream.shards[index], position

    # -- operations ----------------------------------------------------------------------------

    def CreateStream(self, request: dict, region: str) -> dict:
        name = request.get("StreamName")
        if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
            raise validation_error(f"Value '{name}' at 'streamName' failed to satisfy "
                                   "constraint: Member must satisfy regular expression pattern: "
                                   "[a-zA-Z0-9_.-]+ and have length between 1 and 128")
        mode = (request.get("StreamModeDetails") or {}).get("StreamMode")
        count = request.get("ShardCount")
        if count is None:
            if mode == "PROVISIONED":
                raise KinesisError("InvalidArgumentException",
                                   "ShardCount is required for a PROVISIONED stream.")
            mode, count = "ON_DEMAND", ON_DEMAND_SHARDS
        mode = mode or "PROVISIONED"
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise validation_error(f"Value '{count}' at 'shardCount' failed to satisfy "
                                   "constraint: Member must have value greater than or equal "
                                   "to 1")
        if name in self.streams:
            raise KinesisError("ResourceInUseException",
                               f"Stream {name} under account {ACCOUNT} already exists.")
        self.serial += 1
        self.streams[name] = Stream(name, self.serial, count, mode, region,
                                    dataclasses.replace(self.defaults), time.time())
        return {}

    def DeleteStream(self, request: dict, region: str) -> dict:
        del self.streams[self.stream(request).name]
        return {}

    def DescribeStream(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        shards = stream.shards
        start = request.get("ExclusiveStartShardId")
        if start is not None:
            shards = [shard for shard in shards if shard.id > start]
        limit = request.get("Limit") or 100
        description = stream.summary()
        description["Shards"] = [shard.describe() for shard in shards[:limit]]
        description["HasMoreShards"] = len(shards) > limit
        return {"StreamDescription": description}

    def DescribeStreamSummary(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        summary = stream.summary()
        summary.update(OpenShardCount=len(stream.shards), ConsumerCount=0,
                       MaxRecordSizeInKiB=stream.max_record_kib)
        return {"StreamDescriptionSummary": summary}

    def ListStreams(self, request: dict, region: str) -> dict:
        names = sorted(self.streams)
        start = request.get("ExclusiveStartStreamName")
        if start is not None:
            names = [name for name in names if name > start]
        limit = request.get("Limit") or 100
        page = names[:limit]
        summaries = []
        for name in page:
            summary = self.streams[name].summary()
            summaries.append({key: summary[key] for key in (
                "StreamName", "StreamARN", "StreamStatus", "StreamModeDetails",
                "StreamCreationTimestamp")})
        return {"StreamNames": page, "HasMoreStreams": len(names) > limit,
                "StreamSummaries": summaries}

    def ListShards(self, request: dict, region: str) -> dict:
        token = request.get("NextToken")
        if token is not None:
            try:
                name, start = base64.urlsafe_b64decode(token.encode()).decode().split("|")
            except (ValueError, UnicodeDecodeError, binascii.Error, AttributeError):
                raise KinesisError("InvalidArgumentException", "Invalid NextToken.") from None
            stream = self.stream({"StreamName": name})
        else:
            stream = self.stream(request)
            start = request.get("ExclusiveStartShardId")
        shards = stream.shards
        if start:
            shards = [shard for shard in shards if shard.id > start]
        limit = request.get("MaxResults") or 1000
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise validation_error(f"Value '{limit}' at 'maxResults' failed to satisfy "
                                   "constraint: Member must have value between 1 and 10000")
        answer = {"Shards": [shard.describe() for shard in shards[:limit]]}
        if len(shards) > limit:
            next_start = shards[limit - 1].id
            answer["NextToken"] = base64.urlsafe_b64encode(
                f"{stream.name}|{next_start}".encode()).decode()
        return answer

    def UpdateMaxRecordSize(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        kib = request.get("MaxRecordSizeInKiB")
        if isinstance(kib, bool) or not isinstance(kib, int) or not 1024 <= kib <= 10240:
            side = "greater than or equal to 1024" if isinstance(kib, int) and kib < 1024 \
                else "less than or equal to 10240"
            raise validation_error(f"Value '{kib}' at 'maxRecordSizeInKiB' failed to satisfy "
                                   f"constraint: Member must have value {side}")
        stream.max_record_kib = kib
        return {}

    def _entries(self, stream: Stream, entries: list, where) -> list:
        """Checks a put's entries as the service does before storing any; returns, for each,
        (shard, partition key, data, size counted against the limits)."""
        max_record = stream.max_record_kib * 1024
        starts, shards = stream.starts, stream.shards
        md5 = hashlib.md5
        problems = []
        checked = []
        total = 0
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise KinesisError("SerializationException", f"{where(number)}: not an object")
            key = entry.get("PartitionKey")
            data = entry.get("Data")
            problem = partition_key_problem(key, where(number) + "partitionKey")
            if problem:
                problems.append(problem)
                continue
            if data is None:
                problems.append(f"Value null at '{where(number)}data' failed to satisfy "
                                "constraint: Member must not be null")
                continue
            size = blob_size(data, where(number) + "data")
            # A record's size is its data and its partition key (the PutRecords reference:
            # "up to 1 MiB, including partition keys").
            if size + len(key.encode()) > max_record:
                problems.append(f"Value '{blob_value(size)}' at '{where(number)}data' failed to "
                                "satisfy constraint: Member must have length less than or "
                                f"equal to {max_record - len(key.encode())} with its partition "
                                "key")
                continue
            explicit = entry.get("ExplicitHashKey")
            if explicit is None:
                hash_key = int.from_bytes(md5(key.encode()).digest(), "big")
            else:
                hash_key = explicit_hash_key(explicit, where(number) + "explicitHashKey")
            cost = size + len(key.encode())
            total += cost
            checked.append((shards[bisect.bisect_right(starts, hash_key) - 1], key, data, cost))
        if problems:
            raise validation_error(*problems[:10])
        if total > max(MAX_BYTES_PER_CALL, max_record):
            raise KinesisError("InvalidArgumentException", "Records size exceeds 5 MB limit")
        return checked

    def _store(self, stream: Stream, checked: list) -> list:
        """Stores each checked entry its shard's buckets admit; returns, for each, (shard,
        sequence number) or (shard, None) if throttled."""
        settings = stream.settings
        records_limited = settings.records_per_second is not None
        bytes_limit = settings.bytes_per_second
        now = time.time()
        refilled = set()
        results = []
        accepted = accepted_bytes = 0
        for shard, key, data, cost in checked:
            if shard.index not in refilled:
                refilled.add(shard.index)
                shard.refill(settings, now)
            if records_limited:
                if shard.record_tokens < 1.0:
                    results.append((shard, None))
                    continue
            if bytes_limit is not None:
                if shard.byte_tokens < min(cost, bytes_limit):
                    results.append((shard, None))
                    continue
                shard.byte_tokens -= cost
            if records_limited:
                shard.record_tokens -= 1.0
            records = shard.records
            records.append((now, key, data))
            results.append((shard, str(shard.base + len(records) - 1)))
            accepted += 1
            accepted_bytes += cost
        stream.records_accepted += accepted
        stream.bytes_accepted += accepted_bytes
        stream.entries_throttled += len(results) - accepted
        return results

    def PutRecords(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        entries = request.get("Records")
        if not isinstance(entries, list):
            raise validation_error("Value null at 'records' failed to satisfy constraint: "
                                   "Member must not be null")
        if not 1 <= len(entries) <= MAX_RECORDS_PER_CALL:
            side = ("greater than or equal to 1" if not entries
                    else f"less than or equal to {MAX_RECORDS_PER_CALL}")
            raise validation_error(f"Value '[{len(entries)} records]' at 'records' failed to "
                                   f"satisfy constraint: Member must have length {side}")
        checked = self._entries(stream, entries, lambda number: f"records.{number}.member.")
        answers = []
        failed = 0
        for shard, sequence_number in self._store(stream, checked):
            if sequence_number is None:
                failed += 1
                answers.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": stream.throttled_message(shard)})
            else:
                answers.append({"SequenceNumber": sequence_number, "ShardId": shard.id})
        return {"FailedRecordCount": failed, "Records": answers, "EncryptionType": "NONE"}

    def PutRecord(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        checked = self._entries(stream, [request], lambda number: "")
        ((shard, sequence_number),) = self._store(stream, checked)
        if sequence_number is None:
            raise KinesisError("ProvisionedThroughputExceededException",
                               stream.throttled_message(shard))
        return {"ShardId": shard.id, "SequenceNumber": sequence_number, "EncryptionType": "NONE"}

    def GetShardIterator(self, request: dict, region: str) -> dict:
        stream = self.stream(request)
        shard = stream.shard_named(request.get("ShardId"))
        kind = request.get("ShardIteratorType")
        records = shard.records
        if kind == "TRIM_HORIZON":
            position = 0
        elif kind == "LATEST":
            position = len(records)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            text = request.get("StartingSequenceNumber")
            if not isinstance(text, str) or not DECIMAL.fullmatch(text) or len(text) > 129:
                raise validation_error(f"Value '{text}' at 'startingSequenceNumber' failed to "
                                       "satisfy constraint: Member must satisfy regular "
                                       "expression pattern: 0|([1-9]\\d{0,128})")
            number = int(text)
            if number < shard.base or number - shard.base >= SHARD_DIGITS:
                encoded = (number // SHARD_DIGITS) % (STREAM_DIGITS // SHARD_DIGITS)
                raise KinesisError(
                    "InvalidArgumentException",
                    f"Invalid StartingSequenceNumber. It encodes shardId-{encoded:012d}, while "
                    f"it was used in a call to a shard with {shard.id}")
            position = number - shard.base + (kind == "AFTER_SEQUENCE_NUMBER")
        elif kind == "AT_TIMESTAMP":
            timestamp = request.get("Timestamp")
            if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
                raise KinesisError("InvalidArgumentException",
                                   "The timestamp must be specified for AT_TIMESTAMP.")
            position = bisect.bisect_left(records, timestamp, key=lambda record: record[0])
        else:
            raise validation_error(f"Value '{kind}' at 'shardIteratorType' failed to satisfy "
                                   "constraint: Member must satisfy enum value set: "
                                   "[AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, AT_TIMESTAMP, "
                                   "TRIM_HORIZON, LATEST]")
        return {"ShardIterator": self.iterator(stream, shard, position, time.time())}

    def GetRecords(self, request: dict, region: str) -> dict:
        stream, shard, position = self.read_iterator(request.get("ShardIterator"))
        limit = request.get("Limit", MAX_GET_RECORDS)
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                not 1 <= limit <= MAX_GET_RECORDS:
            raise validation_error(f"Value '{limit}' at 'limit' failed to satisfy constraint: "
                                   f"Member must have value between 1 and {MAX_GET_RECORDS}")
        records = shard.records
        base = shard.base + position
        answers = []
        size = 0
        for offset, (arrival, key, data) in enumerate(records[position:position + limit]):
            size += len(data) * 3 // 4 + len(key)
            if answers and size > MAX_GET_RECORDS_BYTES:
                break
            answers.append({"SequenceNumber": str(base + offset),
                            "ApproximateArrivalTimestamp": round(arrival, 3),
                            "Data": data, "PartitionKey": key})
        now = time.time()
        position += len(answers)
        behind = 0
        if position < len(records):
            behind = max(1, int((now - records[position][0]) * 1000))
        return {"Records": answers, "MillisBehindLatest": behind,
                "NextShardIterator": self.iterator(stream, shard, position, now)}

    OPERATIONS = ("CreateStream", "DeleteStream", "DescribeStream", "DescribeStreamSummary",
                  "ListStreams", "ListShards", "UpdateMaxRecordSize", "PutRecord", "PutRecords",
                  "GetShardIterator", "GetRecords")
    PUTS = ("PutRecord", "PutRecords")

    def call(self, operation: str, request: dict, region: str) -> tuple[dict, float]:
        """Carries out one call; returns its answer and the seconds to wait before sending
        it. Raises KinesisError."""
        if operation not in self.OPERATIONS:
            raise KinesisError("UnknownOperationException", f"Unknown operation {operation}")
        with self.lock:
            self.named = None  # the stream the call names, once found
            try:
                answer = getattr(self, operation)(request, region)
                error = None
            except KinesisError as raised:
                answer, error = None, raised
            stream = self.named
            if operation == "CreateStream" and error is None:
                stream = self.streams[request["StreamName"]]
            if stream is not None:
                stream.calls[operation] = stream.calls.get(operation, 0) + 1
            settings = stream.settings if stream is not None else self.defaults
        wait = 0.0
        if operation in self.PUTS or settings.latency_all:
            wait = settings.latency_ms / 1000
        if error is not None:
            error.wait = wait
            raise error
        return answer, wait

    # -- control endpoint ----------------------------------------------------------------------

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        with self.lock:
            if parts == ["_standin", "credentials"] and method == "POST":
                credentials = json.loads(body or b"{}")
                if not (isinstance(credentials, dict) and all(
                        isinstance(v, str) for v in credentials.values())):
                    raise ValueError("credentials are {\"<access key id>\": \"<secret>\"}")
                self.credentials.update(credentials)
                return 200, {"access_key_ids": sorted(self.credentials)}
            if parts == ["_standin", "defaults"]:
                if method == "POST":
                    self.defaults = self.defaults.updated(json.loads(body or b"{}"))
                return 200, {"settings": dataclasses.asdict(self.defaults)}
            if len(parts) == 3 and parts[:2] == ["_standin", "streams"]:
                stream = self.streams.get(parts[2])
                if stream is None:
                    return 404, {"error": f"no stream {parts[2]}"}
                if method == "POST":
                    stream.settings = stream.settings.updated(json.loads(body or b"{}"))
                    now = time.time()
                    for shard in stream.shards:
                        shard.fill(stream.settings, now)
                return 200, stream.view()
        return 404, {"error": f"no such control path {path}"}


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection's requests: Kinesis calls on `/`, the control endpoint on /_standin/."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect
    disable_nagle_algorithm = True
    kinesis: Kinesis  # set on the subclass the server is built with
    secret: str | None  # the secret key signatures are checked against, if any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/_standin/"):
            return self.control("POST", body)
        target = self.headers.get("X-Amz-Target") or ""
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else target
        match = CREDENTIAL_REGION.search(self.headers.get("Authorization") or "")
        region = match.group(1) if match else DEFAULT_REGION
        try:
            if self.secret is not None:
                def secret_of(key_id: str) -> str:
                    with self.kinesis.lock:
                        return self.kinesis.credentials.get(key_id, self.secret)
                problem = signature_problem(secret_of, "POST", self.path, self.headers, body)
                if problem is not None:
                    raise problem
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                raise KinesisError("SerializationException", "The request is not JSON.") \
                    from None
            if not isinstance(request, dict):
                raise KinesisError("SerializationException", "The request is not an object.")
            answer, wait = self.kinesis.call(operation, request, region)
        except KinesisError as error:
            wait = getattr(error, "wait", 0.0)
            if wait:
                time.sleep(wait)
            payload = json.dumps({"__type": error.code, "message": error.message}).encode()
            return self.answer(400, payload, CONTENT_TYPE, [("x-amzn-ErrorType", error.code)])
        payload = json.dumps(answer, separators=(",", ":")).encode()
        if wait:
            time.sleep(wait)
        self.answer(200, payload, CONTENT_TYPE)

    def do_GET(self) -> None:
        if self.path.startswith("/_standin/"):
            return self.control("GET", b"")
        self.answer(404, b'{"error": "Kinesis calls are POST /"}', "application/json")

    def control(self, method: str, body: bytes) -> None:
        try:
            status, answer = self.kinesis.control(method, self.path, body)
        except ValueError as error:  # bad JSON or a bad setting
            status, answer = 400, {"error": str(error)}
        self.answer(status, json.dumps(answer).encode(), "application/json")

    def answer(self, status: int, payload: bytes, content_type: str,
               headers: list[tuple[str, str]] = ()) -> None:
        # Status line, headers and body in one write: several small writes would wait on
        # delayed ACKs.
        lines = [f"HTTP/1.1 {status} {self.responses[status][0]}",
                 f"Content-Type: {content_type}",
                 f"Content-Length: {len(payload)}",
                 f"x-amzn-RequestId: {uuid.uuid4()}"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def log_message(self, format: str, *args) -> None:
        pass  # one line per call would cost more than the call


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(host: str, port: int, kinesis: Kinesis, secret: str | None = None) -> Server:
    """A server for `kinesis` bound to host:port (port 0: any free one), not yet serving,
    checking signatures against `secret` if given."""
    handler = type("BoundHandler", (Handler,), {"kinesis": kinesis, "secret": secret})
    return Server((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-all", action="store_true")
    parser.add_argument("--records-per-second", type=float, default=1000.0)
    parser.add_argument("--bytes-per-second", type=float, default=1024.0 * 1024.0)
    parser.add_argument("--no-limits", action="store_true")
    parser.add_argument("--iterator-ttl-s", type=float, default=300.0)
    parser.add_argument("--secret-access-key", default=None)
    args = parser.parse_args(argv)
    try:
        defaults = Settings().updated({
            "latency_ms": args.latency_ms, "latency_all": args.latency_all,
            "records_per_second": None if args.no_limits else args.records_per_second,
            "bytes_per_second": None if args.no_limits else args.bytes_per_second})
    except ValueError as error:
        parser.error(str(error))
    server = serve(args.host, args.port, Kinesis(defaults, args.iterator_ttl_s),
                   args.secret_access_key)
    host, port = server.server_address[:2]
    limits = ("no write limits" if args.no_limits else
              f"{args.records_per_second:g} records/s and {args.bytes_per_second:.0f} bytes/s "
              "per shard")
    signatures = "checked" if args.secret_access_key is not None else "not checked"
    print(f"kinesis_server: http://{host}:{port}, {limits}, latency {args.latency_ms:g} ms, "
          f"signatures {signatures}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
