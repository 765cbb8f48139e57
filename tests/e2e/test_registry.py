"""Registry models under the Lambda emulator, against a real MLflow tracking server
(scripts/local/mlflow.sh: SQLite backend store, `--serve-artifacts`, `bike-demand` version 1 =
models/bike-demand and 2 = models/bike-linear registered with the real client, alias
`champion` -> 1), the function started by scripts/local/function.sh with TEST_RUN, each
invocation POSTed to the emulator's invoke endpoint.

The last test moves the alias and then stops the tracking server: it runs last in this file
(scripts/local/e2e.sh runs each file's tests in order, in one process).
"""

import json
import os
import subprocess
import time
import urllib.request

import pytest
from bike_local import events, reference

from stack import ROOT, script

MLFLOW_PYTHON = ROOT / ".venv/mlflow/bin/python"
CHAMPION = "models:/bike-demand@champion"


@pytest.fixture(scope="module")
def tracking(aws_env, tmp_path_factory):
    """A tracking server of this module's own (the last test stops it); its URI. The test
    command starts it while the tests build (MLFLOW_TEST_E2E_URI); run alone, the module
    starts it."""
    if "MLFLOW_TEST_E2E_URI" in os.environ:
        env = {**aws_env, "LOCAL_STATE_DIR": os.environ["LOCAL_STATE_DIR"],
               "MLFLOW_SERVERS": "e2e"}
        try:
            yield {"uri": os.environ["MLFLOW_TEST_E2E_URI"], "env": env}
        finally:
            script("scripts/local/mlflow.sh", "stop", env=env, check=False)
        return
    env = {**aws_env, "LOCAL_STATE_DIR": str(tmp_path_factory.mktemp("mlflow")),
           "MLFLOW_SERVERS": "proxy"}
    script("scripts/local/mlflow.sh", "start", env=env)
    try:
        exported = script("scripts/local/mlflow.sh", "env", env=env).stdout
        yield {"uri": exported.strip().split("=", 1)[1], "env": env}
    finally:
        script("scripts/local/mlflow.sh", "stop", env=env, check=False)


def invoke(url: str, count: int = 50) -> dict:
    """POSTs an event of `count` reference rows; returns the function's answer."""
    body = json.dumps(events.sample_event(count)).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def assert_predicted_by(answer: dict, model: str, version: str) -> None:
    """Every prediction is `model`'s (a directory under models/), as Python onnxruntime gives
    it, and stamped `version`."""
    assert answer["predictions"] and not answer["rejected"], answer
    for event in answer["predictions"]:
        assert event["version"] == version, event
        expected = reference.expected(event["prediction"]["pred_id"], model)
        assert event["prediction"]["cnt"] == pytest.approx(expected, rel=reference.REL_TOL), event


def start(stack, tracking, **config) -> str:
    started = stack.start_function(TEST_RUN="True", MLFLOW_TRACKING_URI=tracking["uri"], **config)
    assert started.returncode == 0, started.stderr
    return script("scripts/local/function.sh", "env", env=stack.env).stdout.strip().split("=", 1)[1]


def log_lines(stack) -> list[dict]:
    return [json.loads(line) for line in stack.function_log().splitlines()
            if line.startswith("{")]


def test_an_alias_serves_its_version_and_a_number_serves_that_one(stack, tracking):
    url = start(stack, tracking, MODEL_URI=CHAMPION)
    assert_predicted_by(invoke(url), "bike-demand", "bike-demand/1")
    ready = next(line for line in log_lines(stack) if line.get("message") == "ready")
    assert ready["registered_model"] == "bike-demand" and ready["model_version"] == "1", ready
    stack.stop_function()

    url = start(stack, tracking, MODEL_URI="models:/bike-demand/2")
    assert_predicted_by(invoke(url), "bike-linear", "bike-demand/2")


def test_a_wrong_alias_fails_the_cold_start_clearly(stack, tracking):
    started = stack.start_function(TEST_RUN="True", MLFLOW_TRACKING_URI=tracking["uri"],
                                   MODEL_URI="models:/bike-demand@nope")
    assert started.returncode != 0
    errors = stack.function_errors()
    assert errors and errors[-1]["message"] == "cold start failed", stack.function_log()
    error = errors[-1]["error"]
    assert "models:/bike-demand@nope" in error and tracking["uri"] in error, error
    assert "HTTP 400 INVALID_PARAMETER_VALUE" in error, error


def test_moving_the_alias_promotes_the_next_due_invocation_and_an_outage_keeps_it(
        stack, tracking, figures):
    url = start(stack, tracking, MODEL_URI=CHAMPION, MODEL_REFRESH_SECONDS="1")
    assert_predicted_by(invoke(url), "bike-demand", "bike-demand/1")
    # A due check that finds the alias where it was: one REST call, the model kept.
    time.sleep(1.2)
    assert_predicted_by(invoke(url), "bike-demand", "bike-demand/1")
    unchanged = [line for line in log_lines(stack) if line.get("message") == "batch handled"][-1]
    assert unchanged["refresh_ms"] > 0, unchanged
    figures(f"registry: a due check of an unmoved alias took {unchanged['refresh_ms']:.1f} ms "
            f"of a {unchanged['total_ms']:.1f} ms invocation (50 records)")

    # Promote version 2 with the real MLflow client, as a user does.
    subprocess.run([str(MLFLOW_PYTHON), "-m", "bike_local.mlflow_registry", "set-alias",
                    "--tracking-uri", tracking["uri"], "--name", "bike-demand",
                    "--alias", "champion", "--version", "2"],
                   env=tracking["env"], check=True, capture_output=True, timeout=120)
    time.sleep(1.2)  # the check is due
    promoted = invoke(url)
    assert_predicted_by(promoted, "bike-linear", "bike-demand/2")
    batches = [line for line in log_lines(stack) if line.get("message") == "batch handled"]
    assert batches[-1]["model_version"] == "2" and batches[-1]["refresh_ms"] > 0, batches[-1]
    figures(f"registry: the invocation that promoted version 2 spent "
            f"{batches[-1]['refresh_ms']:.1f} ms on the refresh, {batches[-1]['total_ms']:.1f} ms "
            f"in all (50 records)")
    promotion = [line for line in log_lines(stack)
                 if line.get("message", "").startswith("model promoted")]
    assert len(promotion) == 1, promotion
    # Version 1's cached copy is removed once version 2 serves; version 2's stays.
    removed = [line for line in log_lines(stack) if line.get("message") == "cached model removed"]
    assert len(removed) == 1 and removed[0]["model_uri"] != promotion[0]["location"], removed

    # The tracking server goes away: every invocation is still answered, by version 2.
    script("scripts/local/mlflow.sh", "stop", env=tracking["env"])
    for _ in range(3):
        time.sleep(1.1)
        assert_predicted_by(invoke(url), "bike-linear", "bike-demand/2")
    failed = [line for line in log_lines(stack) if line.get("message") == "batch handled"][-1]
    figures(f"registry: a due check with the tracking server stopped took "
            f"{failed['refresh_ms']:.1f} ms (connection refused, one attempt)")
    warnings = [line for line in log_lines(stack) if line.get("level") == "WARN"
                and line.get("message", "").startswith("model refresh failed")]
    assert warnings, stack.function_log()
    assert "models:/bike-demand@champion" in warnings[-1]["model_uri"], warnings[-1]
    assert not stack.function_errors(), stack.function_errors()
