"""The environment Lambda gives the function's process: the variables it reserves.

lambda_runtime refuses to start without AWS_LAMBDA_FUNCTION_NAME, _MEMORY_SIZE, _VERSION and
AWS_LAMBDA_RUNTIME_API; the function also reads the memory size (inference threads, the
largest model it downloads). Every local run gives the same values, the memory size being the
deployed default (template.yaml's MemorySize), so that figures and behaviour compare.

As a command, `python -m bike_local.lambda_env --runtime-api URL` prints them as `export`
lines for a shell (scripts/local/function.sh).
"""

import argparse
import shlex
import sys

FUNCTION_NAME = "bike-prediction"
MEMORY_SIZE_MB = 256
"""template.yaml's default MemorySize."""
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
"""What the Runtime API names as the invoked function (Lambda-Runtime-Invoked-Function-Arn)."""


def reserved(runtime_api: str | None = None) -> dict[str, str]:
    """The AWS_LAMBDA_* variables of a function instance started on demand, with
    AWS_LAMBDA_RUNTIME_API if `runtime_api` is given (host:port, or a URL)."""
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_SIZE_MB),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]00000000000000000000000000000000",
    }
    if runtime_api is not None:
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description="Prints the Lambda environment as exports.")
    parser.add_argument("--runtime-api", help="the Runtime API's address")
    args = parser.parse_args()
    for name, value in reserved(args.runtime_api).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
