"""The pieces an end-to-end test drives: its own streams, bucket and function instance.

Everything goes through the real scripts (scripts/local/*.sh, the poller) and real local
servers; boto3 only sets up and reads the streams and the bucket.
"""

import json
import os
import pathlib
import queue
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import boto3
from bike_local import mlflow_layout, streams
from bike_local.producer import put_all

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv/tools/bin/python"
MODEL_DIR = ROOT / "models/bike-demand"
# The function's binary: scripts/local/e2e.sh builds it and says which.
BINARY = pathlib.Path(os.environ.get("FUNCTION_BINARY", ROOT / "target/debug/bike-prediction"))


def script(path: str, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Runs one of the repository's scripts with `env`, capturing its output."""
    return subprocess.run(
        ["bash", str(ROOT / path), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        check=check, timeout=300,
    )


class Stack:
    """One test's streams, bucket and function, with helpers to drive them."""

    def __init__(self, env: dict, state: pathlib.Path):
        suffix = uuid.uuid4().hex[:10]
        self.input_stream, self.output_stream = f"in-{suffix}", f"out-{suffix}"
        self.bucket = f"models-{suffix}"
        self.env = {**env, "LOCAL_STATE_DIR": str(state),
                    "INPUT_STREAM": self.input_stream, "OUTPUT_STREAM": self.output_stream}
        for name in ("MODEL_URI", "MODEL_ID", "RUN_ID", "MODEL_BUCKET", "TEST_RUN"):
            self.env.pop(name, None)
        self.state = state
        self.kinesis = boto3.client("kinesis")
        self.s3 = boto3.client("s3")
        self.relays: list[Relay] = []

    def create_streams(self, shards: int = 2) -> None:
        for stream in (self.input_stream, self.output_stream):
            self.kinesis.create_stream(StreamName=stream, ShardCount=shards)

    def upload_model(self, prefix: str, source: pathlib.Path = MODEL_DIR) -> None:
        """Copies a model directory (the bundled model unless `source`) to
        s3://<bucket>/<prefix>/ (a prefix of bike_local.mlflow_layout)."""
        mlflow_layout.upload(self.s3, self.bucket, prefix, source)

    def start_function(self, **config: str) -> subprocess.CompletedProcess:
        """Starts the function with `config` added to its environment; does not raise.
        `config` is the function's alone: the poller and the scripts keep the stack's
        environment (an endpoint given to the function does not move the poller)."""
        return script("scripts/local/function.sh", "start", env={**self.env, **config},
                      check=False)

    def function_log(self) -> str:
        return (self.state / "function.log").read_text()

    def function_errors(self) -> list[dict]:
        """The function's JSON log lines at ERROR level."""
        lines = (json.loads(line) for line in self.function_log().splitlines()
                 if line.startswith("{"))
        return [line for line in lines if line.get("level") == "ERROR"]

    def stop_function(self) -> None:
        script("scripts/local/function.sh", "stop", env=self.env, check=False)

    def relay_to_kinesis(self) -> "Relay":
        """A relay to the Kinesis stand-in that a test can break and restore (closed when the
        test ends)."""
        self.relays.append(Relay(self.kinesis_port()))
        return self.relays[-1]

    def stop(self) -> None:
        """Stops everything the test started through this stack."""
        self.stop_function()
        for relay in self.relays:
            relay.close()

    def put(self, records: list[tuple[bytes, str]]) -> None:
        """Puts (data, partition key) records, in order, on the input stream, resending what
        a shard over its write limit refuses."""
        put_all(self.kinesis, self.input_stream,
                [{"Data": data, "PartitionKey": key} for data, key in records])

    def poll(self, *args: str, invoke_url: str | None = None) -> tuple[int, list[dict], dict]:
        """Runs the poller on the input stream; returns its exit status, its per-batch log
        lines and its final summary."""
        process = subprocess.run(
            self.poller_command(args, invoke_url),
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        lines = [json.loads(line) for line in process.stderr.splitlines() if line.startswith("{")]
        assert lines and lines[-1].get("final"), process.stderr
        return process.returncode, [line for line in lines[:-1] if "records" in line], lines[-1]

    def start_poller(self, *args: str) -> "Poller":
        """Starts the poller on the input stream in the background (the last --timeout given
        wins over the default 60 s)."""
        return Poller(self.poller_command(args), self.env)

    def poller_command(self, args, invoke_url: str | None = None) -> list[str]:
        """The poller on the input stream, invoking the stack's function unless `invoke_url`."""
        if invoke_url is None:
            invoke_url = script("scripts/local/function.sh", "env", env=self.env).stdout
            invoke_url = invoke_url.strip().split("=", 1)[1]
        return [str(PYTHON), str(ROOT / "scripts/local/poller.py"), "--stream", self.input_stream,
                "--invoke-url", invoke_url, "--timeout", "60", *args]

    def kinesis_port(self) -> int:
        return urllib.parse.urlsplit(self.env["AWS_ENDPOINT_URL_KINESIS"]).port

    def configure_stream(self, stream: str, **settings) -> dict:
        """Changes a stream's latency and write limits on the Kinesis stand-in (its control
        endpoint, bike_local.kinesis_server), e.g. latency_ms=20, records_per_second=None."""
        return self._control(stream, settings)

    def stream_counters(self, stream: str) -> dict:
        """The stand-in's settings and counters of a stream (calls, records, throttled)."""
        return self._control(stream, None)

    def register_credentials(self, access_key_id: str, secret: str) -> None:
        """Has the Kinesis stand-in check signatures made with `access_key_id` against
        `secret`."""
        url = f"http://127.0.0.1:{self.kinesis_port()}/_standin/credentials"
        request = urllib.request.Request(url, data=json.dumps({access_key_id: secret}).encode(),
                                         method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _control(self, stream: str, settings: dict | None) -> dict:
        url = f"http://127.0.0.1:{self.kinesis_port()}/_standin/streams/{stream}"
        body = None if settings is None else json.dumps(settings).encode()
        request = urllib.request.Request(url, data=body, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def output(self) -> list[dict]:
        """Every record on the output stream: partition key and decoded JSON data."""
        return [{"partitionKey": r["PartitionKey"], "data": json.loads(r["Data"])}
                for r in streams.read_stream(self.kinesis, self.output_stream)]


class Poller:
    """The poller running in the background, its log lines read as it writes them, so that a
    test can act between two batches."""

    def __init__(self, command: list[str], env: dict):
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[dict] = []  # every JSON line read so far
        self.unread: queue.Queue = queue.Queue()  # lines not yet seen by `wait_for`; None: end
        self.other: list[str] = []  # what is not a JSON line (a traceback), for messages
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            if line.startswith("{"):
                self.unread.put(json.loads(line))
            else:
                self.other.append(line)
        self.unread.put(None)

    def wait_for(self, condition, count: int = 1, timeout: float = 60) -> list[dict]:
        """Reads batch lines until `count` of them meet `condition`; returns those. Fails if
        the poller ends or `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        met = []
        while len(met) < count:
            try:
                line = self.unread.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"after {timeout} s, {len(met)} of {count} batches as "
                                     f"expected; poller log so far: {self.lines}{self.other}")
            if line is None:
                raise AssertionError(f"the poller ended with {len(met)} of {count} batches as "
                                     f"expected: {self.lines}{self.other}")
            self.lines.append(line)
            if "records" in line and not line.get("final") and condition(line):
                met.append(line)
        return met

    def finish(self, timeout: float = 120) -> tuple[int, list[dict], dict]:
        """Waits for the poller to end; returns what Stack.poll returns."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.stop()
        while (line := self.unread.get(timeout=10)) is not None:
            self.lines.append(line)
        assert self.lines and self.lines[-1].get("final"), (self.lines, self.other)
        batches = [line for line in self.lines[:-1] if "records" in line]
        return self.process.returncode, batches, self.lines[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Relay:
    """A TCP relay on 127.0.0.1 to a local server, which a test can break in two ways and
    restore.

    - `refuse()`: what a stopped server is to its clients: new connections are refused and
      open ones closed, so no request arrives.
    - `lose_responses()`: requests still arrive and are carried out, but each connection is
      closed as the answer comes back, as in a network failure after the server acted: the
      client cannot tell a request that was carried out from one that was not.
    - `hang()`: connections are accepted and kept open, but nothing goes through either way,
      as with a server that is paused or overloaded: only a client-side timeout ends a call.
    - `restore()`: relays again, on the same port. The server behind it has kept its state,
      which a restarted server (state in memory) would not have: so streams written through the
      relay before an outage can be checked after it.
    """

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()  # both ends of every relayed connection
        self.losing = False  # lose_responses() in force
        self.hanging = False  # hang() in force
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and the
            # socket would go on listening until accept() returned.
            for end in (lambda: listener.shutdown(socket.SHUT_RDWR), listener.close):
                try:
                    end()
                except OSError:
                    pass
        self._close_open()

    def lose_responses(self) -> None:
        with self.lock:
            self.losing = True
        # Connections open now would otherwise finish the exchange they are in.
        self._close_open()

    def hang(self) -> None:
        with self.lock:
            self.hanging = True

    def restore(self) -> None:
        with self.lock:
            self.losing = self.hanging = False
        if self.listener is None:
            self._listen()

    close = refuse

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self.lock:
            self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_open(self) -> None:
        with self.lock:
            connections, self.open = self.open, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # ends the pumps; they close it
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # refused from now on
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # refused meanwhile
                    client.close()
                    upstream.close()
                    return
                self.open |= {client, upstream}
            for source, sink, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, replies),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if self.hanging:
                    continue  # swallowed: the other side waits
                if replies and self.losing:
                    break
                sink.sendall(data)
        except OSError:
            pass
        # One side done, or the relay broken: end both directions; each pump closes the
        # socket it reads.
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.open.discard(source)
        source.close()
