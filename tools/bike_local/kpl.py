"""Aggregates user records as the Kinesis Producer Library does, with the `aws-kinesis-agg`
library, and says how that library's deaggregator reads the result back.

Reads JSON from stdin: a list of aggregates, each a list of user records
`{"partitionKey": str, "data": base64, "explicitHashKey": str (optional)}`. Writes JSON to
stdout: for each aggregate, `{"data": base64 of the aggregated record, "userRecords": [...]}`,
where each user record is `{"partitionKey", "data" (base64), "subSequenceNumber"}` as
`aws_kinesis_agg.deaggregator` yields it. Every aggregate must fit one Kinesis record.

Usage: .venv/tools/bin/python -m bike_local.kpl < aggregates.json > aggregated.json
"""

import base64
import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records


def aggregate(user_records: list) -> bytes:
    """The aggregated record of `user_records`, all in one."""
    aggregator = RecordAggregator()
    for record in user_records:
        full = aggregator.add_user_record(
            record["partitionKey"], base64.b64decode(record["data"]), record.get("explicitHashKey")
        )
        if full is not None:
            raise SystemExit("bike_local.kpl: the user records do not fit one Kinesis record")
    _, _, data = aggregator.clear_and_get().get_contents()
    return data


def deaggregated(data: bytes) -> list:
    """The user records the library's deaggregator finds in `data`."""
    lambda_record = {"kinesis": {"kinesisSchemaVersion": "1.0", "sequenceNumber": "0",
                                 "approximateArrivalTimestamp": 0, "partitionKey": "outer",
                                 "data": base64.b64encode(data).decode()}}
    return [
        {"partitionKey": user["kinesis"]["partitionKey"],
         "data": user["kinesis"]["data"].decode(),
         "subSequenceNumber": user["kinesis"]["subSequenceNumber"]}
        for user in deaggregate_records([lambda_record])
    ]


def main() -> None:
    out = []
    for user_records in json.load(sys.stdin):
        data = aggregate(user_records)
        out.append({"data": base64.b64encode(data).decode(), "userRecords": deaggregated(data)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
