"""bike_local.mlflow_layout and bike_local.lambda_env: the paths and variables the function
is given, as MLflow and Lambda define them."""

import subprocess
import sys

from bike_local import lambda_env, mlflow_layout


def test_a_runs_model_is_under_its_experiment_run_and_artifact_path():
    assert mlflow_layout.run_prefix("abc") == "1/abc/artifacts/model"
    assert mlflow_layout.run_prefix("abc", "7", "clf") == "7/abc/artifacts/clf"
    assert mlflow_layout.run_prefix() == f"1/{mlflow_layout.RUN_ID}/artifacts/model"


def test_a_logged_models_files_are_under_models_in_its_experiment():
    assert mlflow_layout.model_prefix("m-1") == "1/models/m-1/artifacts"
    assert mlflow_layout.model_prefix("m-1", "7") == "7/models/m-1/artifacts"


class FakeS3:
    class exceptions:
        class BucketAlreadyOwnedByYou(Exception):
            pass

        class BucketAlreadyExists(Exception):
            pass

    def __init__(self):
        self.buckets, self.objects = set(), {}

    def create_bucket(self, Bucket):
        if Bucket in self.buckets:
            raise self.exceptions.BucketAlreadyOwnedByYou()
        self.buckets.add(Bucket)

    def upload_file(self, path, bucket, key):
        self.objects[bucket, key] = open(path, "rb").read()


def test_upload_copies_every_file_under_the_prefix_into_an_existing_or_new_bucket(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/model.onnx").write_bytes(b"onnx")
    s3 = FakeS3()

    uri = mlflow_layout.upload(s3, "b", "1/r/artifacts/model", tmp_path)
    mlflow_layout.upload(s3, "b", "1/r/artifacts/model", tmp_path)

    assert uri == "s3://b/1/r/artifacts/model/"
    assert s3.objects == {("b", "1/r/artifacts/model/MLmodel"): b"flavors: {}",
                          ("b", "1/r/artifacts/model/sub/model.onnx"): b"onnx"}


def test_the_lambda_environment_has_what_lambda_runtime_requires():
    env = lambda_env.reserved("127.0.0.1:9001")

    for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                 "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_RUNTIME_API"):
        assert env[name], name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert "AWS_LAMBDA_RUNTIME_API" not in lambda_env.reserved()


def test_the_exports_give_a_shell_the_same_values():
    exports = subprocess.run([sys.executable, "-m", "bike_local.lambda_env", "--runtime-api",
                              "http://127.0.0.1:9001/.rt"],
                             capture_output=True, text=True, check=True).stdout
    script = exports + 'printf "%s\\n" "$AWS_LAMBDA_FUNCTION_VERSION" "$AWS_LAMBDA_LOG_STREAM_NAME"'
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    env = lambda_env.reserved()
    assert shown == [env["AWS_LAMBDA_FUNCTION_VERSION"], env["AWS_LAMBDA_LOG_STREAM_NAME"]]
