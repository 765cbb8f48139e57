"""A body that is not a Kinesis event, sent to the function's invoke endpoint under the Lambda
emulator: the invocation fails with error type `InvalidEvent` and a message saying what is
wrong, without the body's strings; the function keeps serving.
"""

import json
import urllib.error
import urllib.request

import pytest

from stack import script

# (body, what the message says); "SECRET" and its base64 "U0VDUkVU" must not reach it.
NOT_KINESIS = [
    (b'{"foo": 1}', "missing field `Records`"),
    (b"[]", "invalid type: sequence"),
    (b'"SECRET"', "invalid type: a string"),
    (b'{"Records": [{"kinesis": {"data": "U0VDUkVU', "EOF while parsing"),
    (b'{"Records": [{"eventID": "SECRET"}]}', "missing field `kinesis`"),
    (b'{"Records": [{"kinesis": "SECRET"}]}', "invalid type: a string"),
]


def invoke(url: str, body: bytes) -> tuple[int, dict]:
    """POSTs `body`; returns the HTTP status and the JSON answer."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def invoke_url(stack):
    started = stack.start_function(TEST_RUN="True")
    assert started.returncode == 0, started.stderr
    return script("scripts/local/function.sh", "env", env=stack.env).stdout.strip().split("=", 1)[1]


@pytest.mark.parametrize("body,detail", NOT_KINESIS)
def test_body_that_is_not_a_kinesis_event_fails_as_invalid_event(stack, invoke_url, body, detail):
    status, answer = invoke(invoke_url, body)

    assert status != 200 or "errorType" in answer, answer
    assert answer["errorType"] == "InvalidEvent", answer
    assert answer["errorMessage"].startswith("the event is not a Kinesis event: "), answer
    assert detail in answer["errorMessage"], answer
    assert answer["errorMessage"].count(detail) == 1, answer
    for secret in ("SECRET", "U0VDUkVU"):
        assert secret not in answer["errorMessage"], answer
        assert secret not in stack.function_log()
    # Logged once, by the Lambda runtime.
    errors = stack.function_errors()
    assert len(errors) == 1 and "InvalidEvent" in errors[0]["message"], errors
    assert stack.function_log().count(answer["errorMessage"]) == 1

    # The function still serves the next invocation.
    status, answer = invoke(invoke_url, b'{"Records": []}')
    assert status == 200 and answer["predictions"] == [], answer
