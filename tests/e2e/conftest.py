"""Fixtures for the end-to-end tests.

One set of local services (scripts/local/services.sh: moto for S3, the Kinesis stand-in with
AWS's per-shard write limits) serves the whole session; each test gets its own streams and
bucket (random names) and its own function instance under the Lambda emulator, stopped after
the test. Run through scripts/local/e2e.sh, which installs the tools and builds the binary.

Figures a test measures (duplicates after an outage, records/s) are printed in an "e2e figures"
section at the end of the run, where a passing test's output would otherwise be hidden. They
travel in the test's report, so they reach the summary from pytest-xdist's workers too
(scripts/local/e2e.sh runs two test files at a time).
"""

import os
import subprocess

import pytest

from stack import ROOT, Stack, script

FIGURES: list[str] = []
FIGURE = "e2e figure"


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory):
    """Starts the local services for the session; returns the environment that points AWS
    clients at them
    (also applied to this process, for boto3)."""
    env = {**os.environ, "LOCAL_STATE_DIR": str(tmp_path_factory.mktemp("services"))}
    script("scripts/local/services.sh", "start", env=env)
    try:
        exported = subprocess.run(
            ["bash", "-c", 'eval "$(bash scripts/local/services.sh env)" && env -0'],
            env=env, cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
        env = dict(item.split("=", 1) for item in exported.split("\0") if "=" in item)
        with pytest.MonkeyPatch.context() as patch:
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                if name.startswith("AWS_"):
                    patch.setenv(name, value)
            yield env
    finally:
        script("scripts/local/services.sh", "stop", env=env, check=False)


@pytest.fixture
def stack(aws_env, tmp_path):
    stack = Stack(aws_env, tmp_path)
    yield stack
    stack.stop()


@pytest.fixture
def figures(request):
    """`figures(line)` adds a line to the "e2e figures" section of the run's summary."""
    return lambda line: request.node.user_properties.append((FIGURE, line))


def pytest_runtest_logreport(report):
    # Every phase's report carries the properties recorded so far: the teardown's has them all.
    if report.when == "teardown":
        FIGURES.extend(value for name, value in report.user_properties if name == FIGURE)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("e2e figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
