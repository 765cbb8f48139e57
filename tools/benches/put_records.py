"""How long the Kinesis stand-in takes to answer a 500-entry PutRecords, no latency added.

Starts the server in this process (its own thread, a free port), creates a stream, and times
calls made over one kept-alive HTTP connection with a prepared body, as an SDK sends it: the
figure is the server's (parse, route, store, answer) plus the loopback, not the client's.
Each call carries other records (pred_ids move on), so no call repeats the last one.

Usage: .venv/tools/bin/python tools/benches/put_records.py [--calls 200] [--shards 4]
Prints the median, 90th percentile and best time per call.
"""

import argparse
import base64
import http.client
import json
import statistics
import threading
import time

from bike_local import kinesis_server, reference

HEADERS = {"Content-Type": kinesis_server.CONTENT_TYPE,
           "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/kinesis/"
                            "aws4_request, SignedHeaders=host, Signature=0"}


def call(connection, operation: str, body: bytes) -> dict:
    connection.request("POST", "/", body,
                       {**HEADERS, "X-Amz-Target": kinesis_server.TARGET_PREFIX + operation})
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    return answer


def body(stream: str, first: int) -> bytes:
    """A PutRecords body of 500 feature records, as data_in.sh puts them."""
    records = []
    for pred_id in range(first, first + 500):
        data, key = reference.feature_record(pred_id % len(reference.rows()), pred_id)
        records.append({"Data": base64.b64encode(data).decode(), "PartitionKey": key})
    return json.dumps({"StreamName": stream, "Records": records}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    no_limits = kinesis_server.Settings(records_per_second=None, bytes_per_second=None)
    server = kinesis_server.serve("127.0.0.1", 0, kinesis_server.Kinesis(no_limits))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection(*server.server_address[:2])
    call(connection, "CreateStream",
         json.dumps({"StreamName": "bench", "ShardCount": args.shards}).encode())
    bodies = [body("bench", call_number * 500) for call_number in range(args.calls)]
    for warm_up in bodies[:10]:
        call(connection, "PutRecords", warm_up)
    times = []
    for prepared in bodies:
        started = time.perf_counter()
        answer = call(connection, "PutRecords", prepared)
        times.append(time.perf_counter() - started)
        assert answer["FailedRecordCount"] == 0
    times.sort()
    ms = [t * 1000 for t in times]
    print(f"PutRecords, 500 entries of {len(bodies[0]) // 500} bytes of JSON each, "
          f"{args.shards} shards, {args.calls} calls: median {statistics.median(ms):.2f} ms, "
          f"p90 {ms[int(len(ms) * 0.9)]:.2f} ms, best {ms[0]:.2f} ms")
    server.shutdown()


if __name__ == "__main__":
    main()
