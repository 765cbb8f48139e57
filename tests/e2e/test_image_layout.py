"""The Lambda container image's files, run the way Lambda runs them.

The Docker engine is not available everywhere the tests run, so this checks what the image adds
to its base image instead: scripts/image-layout.sh assembles those files, through the same
scripts/install-into.sh as the Dockerfile, in a directory that stands for the image's `/`. The
test starts that `var/runtime/bootstrap` under the Lambda Runtime API emulator (`cargo lambda
watch --only-lambda-apis`) in `var/task`, the image's working directory, with only the
environment Lambda gives the function plus the documented variables of the no-S3 setup
(`TEST_RUN=True` and the bundled model), and invokes it with the sample Kinesis event.

Nothing points the binary at ONNX Runtime: there is no ORT_DYLIB_PATH, and PATH and
LD_LIBRARY_PATH are Lambda's own values, whose directories under /var do not exist on this
machine. The invocation succeeds only if the binary finds the library next to itself, where
the image has it.

What this cannot check here is the base image itself (its glibc and libstdc++): the Dockerfile
checks those by running the binary inside the image it builds.
"""

import json
import math
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import time
import urllib.request

import pytest
from bike_local import lambda_env
from stack import BINARY

ROOT = pathlib.Path(__file__).resolve().parents[2]
CARGO_LAMBDA = ROOT / ".venv/tools/bin/cargo-lambda"
EVENT = ROOT / "events/sample.json"
START_TIMEOUT = 60  # seconds for the emulator to listen and the function to poll

# The environment of the image's ENV lines (public.ecr.aws/lambda/provided:al2023) and what
# Lambda adds for every function. LAMBDA_TASK_ROOT and LAMBDA_RUNTIME_DIR name the layout's
# directories, as they name the image's; the search paths are kept exactly as Lambda sets them.
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"
LAMBDA_LD_LIBRARY_PATH = (
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
)


def lambda_environment(layout: pathlib.Path) -> dict[str, str]:
    """What the function process gets in Lambda (without AWS_LAMBDA_RUNTIME_API), plus the
    documented variables that make it need no AWS service."""
    return {
        # The base image's ENV.
        "LANG": "en_US.UTF-8",
        "TZ": ":/etc/localtime",
        "PATH": LAMBDA_PATH,
        "LD_LIBRARY_PATH": LAMBDA_LD_LIBRARY_PATH,
        "LAMBDA_TASK_ROOT": str(layout / "var/task"),
        "LAMBDA_RUNTIME_DIR": str(layout / "var/runtime"),
        # /lambda-entrypoint.sh exports the image's CMD as _HANDLER before it execs bootstrap.
        "_HANDLER": "bootstrap",
        # Lambda's reserved variables.
        **lambda_env.reserved(),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The execution role's session credentials; never used with this configuration, and
        # valid nowhere.
        "AWS_ACCESS_KEY_ID": "ASIAIMAGELAYOUTTEST0",
        "AWS_SECRET_ACCESS_KEY": "image-layout-test",
        "AWS_SESSION_TOKEN": "image-layout-test",
        # The documented configuration without S3 or Kinesis: no MODEL_BUCKET, so the model
        # is models/bike-demand under the working directory (the image built with
        # BUNDLE_MODEL=true), and TEST_RUN publishes nothing.
        "TEST_RUN": "True",
    }


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> pathlib.Path:
    """The image's files, with the bundled model."""
    layout = tmp_path_factory.mktemp("image") / "root"
    subprocess.run(
        ["bash", str(ROOT / "scripts/image-layout.sh"), str(layout)],
        env={**os.environ, "BUNDLE_MODEL": "true", "BINARY": str(BINARY)}, cwd=ROOT, check=True,
        timeout=1800,
    )
    return layout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen) -> None:
    """Ends a process this test started: SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Running:
    """The emulator and the function, both started by the test, with their logs."""

    def __init__(self, layout: pathlib.Path, logs: pathlib.Path):
        self.port = free_port()
        self.emulator_log = logs / "emulator.log"
        self.function_log = logs / "function.log"
        self.processes: list[subprocess.Popen] = []
        try:
            self.start(layout)
        except BaseException:
            self.stop()  # a failed start leaves nothing running
            raise

    def start(self, layout: pathlib.Path) -> None:
        # The emulator logs at debug level when a function first polls for work: that line
        # says the cold start is over (as scripts/local/function.sh waits for it).
        with open(self.emulator_log, "wb") as log:
            self.processes.append(subprocess.Popen(
                [str(CARGO_LAMBDA), "lambda", "watch", "--only-lambda-apis", "--ignore-changes",
                 "-A", "127.0.0.1", "-P", str(self.port)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ,
                     "RUST_LOG": "cargo_lambda=info,cargo_lambda_watch::state=debug"},
            ))
        self.wait_for(lambda: port_open(self.port), "the emulator to listen")

        env = lambda_environment(layout)
        # Lambda sets host:port; cargo-lambda serves the Runtime API under /.rt, which needs
        # the URL form (lambda_runtime accepts both).
        env["AWS_LAMBDA_RUNTIME_API"] = f"http://127.0.0.1:{self.port}/.rt"
        with open(self.function_log, "wb") as log:
            self.function = subprocess.Popen(
                [str(layout / "var/runtime/bootstrap")], cwd=layout / "var/task", env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.processes.append(self.function)
        self.wait_for(
            lambda: b"request stack initialized in first lambda connection"
            in self.emulator_log.read_bytes(),
            "the function to poll for invocations",
        )

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            exited = [p.args[0] for p in self.processes if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                reason = f"{exited[0]} exited" if exited else f"timed out after {START_TIMEOUT} s"
                pytest.fail(f"waiting for {what}: {reason}\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in (self.emulator_log, self.function_log) if path.exists()
        )

    def invoke(self, event: bytes) -> dict:
        url = f"http://127.0.0.1:{self.port}/2015-03-31/functions/_/invocations"
        request = urllib.request.Request(
            url, data=event, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)


@pytest.fixture
def function(layout, tmp_path):
    running = Running(layout, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_bootstrap_answers_a_kinesis_event_with_only_the_lambda_environment(function):
    response = function.invoke(EVENT.read_bytes())

    assert response["rejected"] == [] and response["batchItemFailures"] == [], (
        response, function.logs())
    [event] = response["predictions"]
    assert event["prediction"]["pred_id"] == 123
    assert event["model"] == "bike-demand"
    assert event["version"] == "local"  # no RUN_ID: the bundled model's version
    assert isinstance(event["prediction"]["cnt"], float)
    assert math.isfinite(event["prediction"]["cnt"])
    assert function.function.poll() is None, "the function must keep serving after an invocation"


def test_without_the_library_next_to_the_binary_the_cold_start_fails(layout, tmp_path):
    """Makes sure the test above finds ONNX Runtime in the layout, not somewhere on this
    machine: with the library removed, the same binary and environment cannot start."""
    broken = tmp_path / "root"
    shutil.copytree(layout, broken, symlinks=True)
    for library in (broken / "var/runtime").glob("libonnxruntime.so*"):
        library.unlink()

    result = subprocess.run(
        [str(broken / "var/runtime/bootstrap"), "invoke", "--event", str(EVENT)],
        cwd=broken / "var/task", env=lambda_environment(broken),
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode != 0, result.stdout
    assert "cannot load the ONNX Runtime library" in result.stderr, result.stderr


def test_every_file_is_readable_by_the_unprivileged_lambda_user(layout):
    """Lambda runs the function as a user other than the files' owner; tests here run as
    whoever owns them, so modes are checked instead."""
    bootstrap = layout / "var/runtime/bootstrap"
    assert bootstrap.stat().st_mode & stat.S_IXOTH, "bootstrap must be executable by others"
    for path in layout.rglob("*"):
        mode = path.stat().st_mode  # through symlinks: what the loader opens
        assert mode & stat.S_IROTH, f"{path} is not readable by others"
        if path.is_dir():
            assert mode & stat.S_IXOTH, f"{path} cannot be entered by others"
