"""Where MLflow keeps a model in its S3 artifact store, as the function looks it up.

- MLflow 2, a run's artifact: `<experiment>/<run id>/artifacts/<artifact path>/`
  (the function's RUN_ID, MLFLOW_EXPERIMENT_ID, MODEL_ARTIFACT_PATH);
- MLflow 3, a logged model: `<experiment>/models/<model id>/artifacts/` (MODEL_ID).

As a command, `python -m bike_local.mlflow_layout upload DIR --bucket B [--run-id R |
--model-id M]` copies a model directory there (creating the bucket if needed) and prints its
S3 URI; `python -m bike_local.mlflow_layout run-id` prints RUN_ID. It uses boto3 with the
standard AWS configuration (AWS_ENDPOINT_URL for local servers).
"""

import argparse
import pathlib
import sys

EXPERIMENT = "1"
"""The function's default MLFLOW_EXPERIMENT_ID."""
ARTIFACT_PATH = "model"
"""The function's default MODEL_ARTIFACT_PATH."""
RUN_ID = "4302f22a1a7b4ce9a25a99b04bca2f0f"
"""The run id the bundled model is laid out under locally: the one the local pipeline, the load
run and the tests use."""


def run_prefix(run_id: str = RUN_ID, experiment: str = EXPERIMENT,
               artifact_path: str = ARTIFACT_PATH) -> str:
    """The key prefix (no trailing slash) of a run's model in the MLflow 2 layout."""
    return f"{experiment}/{run_id}/artifacts/{artifact_path}"


def model_prefix(model_id: str, experiment: str = EXPERIMENT) -> str:
    """The key prefix (no trailing slash) of a logged model in the MLflow 3 layout."""
    return f"{experiment}/models/{model_id}/artifacts"


def upload(s3, bucket: str, prefix: str, source: pathlib.Path) -> str:
    """Copies the files under `source` to s3://<bucket>/<prefix>/, creating the bucket if it
    does not exist; returns that URI."""
    try:
        s3.create_bucket(Bucket=bucket)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass
    for path in sorted(source.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(source).as_posix()}")
    return f"s3://{bucket}/{prefix}/"


def main() -> int:
    parser = argparse.ArgumentParser(description="The MLflow S3 layout of the function's model.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run-id", help="print the run id used locally")
    put = commands.add_parser("upload", help="copy a model directory into the layout")
    put.add_argument("source", type=pathlib.Path)
    put.add_argument("--bucket", required=True)
    put.add_argument("--experiment", default=EXPERIMENT)
    location = put.add_mutually_exclusive_group()
    location.add_argument("--run-id", default=RUN_ID, help=f"MLflow 2 run (default {RUN_ID})")
    location.add_argument("--model-id", help="MLflow 3 logged model")
    args = parser.parse_args()
    if args.command == "run-id":
        print(RUN_ID)
        return 0

    import boto3  # only the upload needs AWS

    prefix = (model_prefix(args.model_id, args.experiment) if args.model_id
              else run_prefix(args.run_id, args.experiment))
    print(upload(boto3.client("s3"), args.bucket, prefix, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
