"""Putting records on a Kinesis stream as a producer must: 500 entries per PutRecords call,
and the entries a call refuses (a shard over its write limit refuses entries with
ProvisionedThroughputExceededException) sent again, in their original order, after a growing
pause. Used by scripts/local/put_records.py (data_in.sh) and the end-to-end tests.
"""

import time

MAX_RECORDS_PER_CALL = 500  # PutRecords' limit
BASE_DELAY_SECONDS = 0.1  # before the first resend of refused entries; doubled for each later one
DEFAULT_MAX_ATTEMPTS = 6  # about 3 s of pauses: a shard's buckets refill in one


class NotAccepted(RuntimeError):
    """Entries still refused after the last attempt."""


def put_chunk(kinesis, stream: str, entries: list[dict],
              max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Puts one call's worth of PutRecords entries, resending refused ones; returns the
    resends. Raises NotAccepted naming the error codes if some are refused every time."""
    resent = 0
    for attempt in range(1, max_attempts + 1):
        response = kinesis.put_records(StreamName=stream, Records=entries)
        if response["FailedRecordCount"] == 0:
            return resent
        refused = [entry for entry, result in zip(entries, response["Records"])
                   if "ErrorCode" in result]
        if attempt == max_attempts:
            errors = sorted({result["ErrorCode"] for result in response["Records"]
                             if "ErrorCode" in result})
            raise NotAccepted(f"{len(refused)} records not accepted by {stream} after "
                              f"{max_attempts} sends ({', '.join(errors)})")
        resent += len(refused)
        entries = refused
        time.sleep(BASE_DELAY_SECONDS * 2 ** (attempt - 1))
    return resent


def put_all(kinesis, stream: str, entries: list[dict],
            max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Puts every entry, in calls of up to 500, each resending what it had refused; returns
    the resends."""
    return sum(put_chunk(kinesis, stream, entries[start:start + MAX_RECORDS_PER_CALL],
                         max_attempts)
               for start in range(0, len(entries), MAX_RECORDS_PER_CALL))
