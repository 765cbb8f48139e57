#!/usr/bin/env python3
"""Runs the function as Lambda runs it, against a minimal local Lambda Runtime API, and times it.

For each of --repeat runs: start a fresh process of BINARY (no arguments: it serves the Runtime
API loop), answer its first `GET /runtime/invocation/next` with the event, --invocations times,
then stop it. The clock points are the ones Lambda itself uses:

  ready_ms        spawn -> the function's first `GET .../invocation/next`. This is where
                  Lambda's Init Duration ends: the process has started, loaded everything and
                  asks for work.
  startup_ms      the function's own figure for loading (its "ready" log line): ONNX Runtime
                  library, model (download included), AWS clients. The rest of ready_ms is exec,
                  dynamic linking, logging/config setup and the runtime client.
  first_invoke_ms event handed over -> its response received (Lambda's Duration): includes
                  sending the event and the response over localhost HTTP and this stub's own
                  Python overhead, so it is an upper bound for the function's share.
  warm_invoke_ms  the same for the following invocations (median), when --invocations > 1.
  peak_rss_kb     the process's VmHWM (peak resident set) after its last response.
  cpu_ms          CPU time of all its threads by then (/proc/PID/task/*/schedstat): on a
                  busy or many-core machine, work done on another core or while waiting for
                  one does not show in ready_ms as it would on a Lambda's fraction of a vCPU.

The function gets Lambda's environment (bike_local.lambda_env); run by the tools' Python
(.venv/tools/bin/python, scripts/local/setup-tools.sh). The stub answers one function at a time; it is not a Lambda
emulator (no timeouts, no error replay), just a timer with the Runtime API's shape.

Usage: runtime-api-stub.py --event FILE [--repeat N] [--invocations K]
                           [--fresh-dir-env VAR] [--label TEXT] -- BINARY
"""
import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bike_local import lambda_env

NEXT = "/2018-06-01/runtime/invocation/next"
START_TIMEOUT_S = 60


def now_ms() -> float:
    return time.perf_counter_ns() / 1e6


class Run:
    """Clock points and outcome of one process, filled in by the request handler threads."""

    def __init__(self, event: bytes, invocations: int):
        self.event = event
        self.invocations = invocations
        self.pid = None
        self.spawned = None
        self.first_next = None
        self.handed = {}  # request id -> when the event was handed over
        self.invoke_ms = []  # per invocation, in order
        self.peak_rss_kb = None
        self.cpu_ms = None
        self.error = None
        self.done = threading.Event()  # all invocations answered, or an error was reported

    def peak_rss(self) -> int:
        status = pathlib.Path(f"/proc/{self.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1])

    def cpu_time_ms(self) -> float:
        tasks = pathlib.Path(f"/proc/{self.pid}/task")
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in tasks.iterdir()) / 1e6


class RuntimeApi(BaseHTTPRequestHandler):
    # A response's headers and body are separate writes: with Nagle's algorithm on, the body
    # would wait for the client's delayed ACK (tens of ms) and be counted as function time.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Runtime API
    run: Run = None  # set per run by main()

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        run = self.run
        if self.path != NEXT:
            return self.reply(404)
        if run.first_next is None:
            run.first_next = now_ms()
        served = len(run.handed)
        if served < run.invocations:
            request_id = f"perf-{served}"
            deadline = int(time.time() * 1000) + 900_000
            headers = {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(deadline),
                "Lambda-Runtime-Invoked-Function-Arn": lambda_env.FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
            }
            run.handed[request_id] = now_ms()
            return self.reply(200, run.event, headers)
        # Every invocation answered: the function waits for the next one. Read its peak memory
        # now, while it is alive, and leave the request open until the process is stopped.
        run.peak_rss_kb = run.peak_rss()
        run.cpu_ms = run.cpu_time_ms()
        run.done.set()

    def do_POST(self):
        run = self.run
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        received = now_ms()
        parts = self.path.strip("/").split("/")
        if parts[-1] == "response" and parts[-2] in run.handed:
            run.invoke_ms.append(received - run.handed[parts[-2]])
            try:
                json.loads(body)
            except ValueError:
                run.error = "the response is not JSON"
                run.done.set()
        else:  # /runtime/init/error or /invocation/<id>/error
            run.error = f"{self.path}: {body.decode(errors='replace')[:500]}"
            run.done.set()
        self.reply(202, b"{}")


def one_run(server, binary, event, invocations, fresh_dir_env, log_dir):
    run = Run(event, invocations)
    RuntimeApi.run = run
    # What Lambda sets for the runtime loop, with this stub as its Runtime API.
    env = dict(os.environ, **lambda_env.reserved(f"127.0.0.1:{server.server_address[1]}"))
    fresh = None
    if fresh_dir_env:
        # Like a new Lambda instance's /tmp: nothing cached from an earlier run.
        fresh = tempfile.mkdtemp(prefix="perf-fresh-")
        env[fresh_dir_env] = fresh
    log_path = pathlib.Path(log_dir) / "function.log"
    with open(log_path, "wb") as log:
        run.spawned = now_ms()
        process = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        run.pid = process.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not run.done.is_set() and process.poll() is None and time.monotonic() < deadline:
            run.done.wait(0.01)
        exited = process.poll()
        # Only the process started here, by its own handle.
        process.send_signal(signal.SIGKILL)
        process.wait()
    if fresh:
        subprocess.run(["rm", "-rf", fresh], check=True)
    log_text = log_path.read_text(errors="replace")
    if run.error or not run.done.is_set():
        reason = run.error or (f"the function exited with {exited}" if exited is not None
                               else f"no answer within {START_TIMEOUT_S} s")
        sys.exit(f"runtime-api-stub: {reason}; its log:\n{log_text[-3000:]}")
    startup_ms = None
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        fields = entry.get("fields", entry)
        if fields.get("message") == "ready":
            startup_ms = float(fields["startup_ms"])
    result = {
        "ready_ms": run.first_next - run.spawned,
        "startup_ms": startup_ms,
        "first_invoke_ms": run.invoke_ms[0],
        "peak_rss_kb": run.peak_rss_kb,
        "cpu_ms": run.cpu_ms,
    }
    if len(run.invoke_ms) > 1:
        result["warm_invoke_ms"] = statistics.median(run.invoke_ms[1:])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--event", required=True, type=pathlib.Path)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--invocations", type=int, default=1)
    parser.add_argument("--fresh-dir-env", help="give each run a new empty directory in VAR")
    parser.add_argument("--label", default="")
    parser.add_argument("binary")
    args = parser.parse_args()

    event = args.event.read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    results = []
    with tempfile.TemporaryDirectory(prefix="perf-stub-") as log_dir:
        for _ in range(args.repeat):
            results.append(one_run(server, args.binary, event, args.invocations,
                                   args.fresh_dir_env, log_dir))
    server.shutdown()

    print(f"{args.label}  ({args.repeat} runs, {args.event.name}, "
          f"{args.invocations} invocation(s) per run)")
    print(f"  {'':16} {'median':>9} {'min':>9} {'max':>9}")
    for key, unit in [("ready_ms", "ms"), ("startup_ms", "ms"), ("first_invoke_ms", "ms"),
                      ("warm_invoke_ms", "ms"), ("cpu_ms", "ms"), ("peak_rss_kb", "KB")]:
        values = [result[key] for result in results if result.get(key) is not None]
        if values:
            print(f"  {key:16} {statistics.median(values):9.2f} {min(values):9.2f} "
                  f"{max(values):9.2f} {unit}")


if __name__ == "__main__":
    main()
