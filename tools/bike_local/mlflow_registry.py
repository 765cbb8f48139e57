"""A real MLflow tracking server and Model Registry for the registry tests, on 127.0.0.1.

- `server_command`: `mlflow server` with a SQLite backend store, either with its artifacts in
  S3 (`--default-artifact-root s3://...`, `--no-serve-artifacts`: clients, the function
  included, read and write the bucket themselves) or served through the tracking server's
  artifact proxy (`--serve-artifacts`, `mlflow-artifacts:` URIs, files kept in a local
  directory).
- `register`: logs the bundled model (models/bike-demand) as version 1 and the linear model
  (models/bike-linear) as version 2 of one registered model with the real client,
  `mlflow.onnx.log_model(..., registered_model_name=...)`, and points an alias at version 1.
  It also registers `<name>-runs` version 1 with the source `runs:/<run of version 1>/model`
  (how versions made from a run's URI look).
- `set_alias`: moves an alias, as a user promoting a version does.

Needs the `mlflow` package: run it with .venv/mlflow/bin/python (scripts/local/setup-mlflow.sh).
As a command (what scripts/local/mlflow.sh calls):

    python -m bike_local.mlflow_registry serve --port P --state DIR (--s3-root URI | --serve-artifacts)
    python -m bike_local.mlflow_registry register --tracking-uri URI --name NAME [--alias A]
    python -m bike_local.mlflow_registry set-alias --tracking-uri URI --name NAME --alias A --version N

`register` prints one JSON line: the name, the alias, each version's number, run id and model
id. An s3:// artifact root is reached with the standard AWS configuration (AWS_ENDPOINT_URL for
the local S3; MLflow's own MLFLOW_S3_ENDPOINT_URL is set from it).
"""

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = {1: ROOT / "models/bike-demand", 2: ROOT / "models/bike-linear"}
"""The model directory logged as each version."""
EXPERIMENT = "bike-prediction-registry-tests"
ALIAS = "champion"


def server_command(python: str, port: int, state: pathlib.Path, s3_root: str | None) -> list[str]:
    """The `mlflow server` command line: SQLite in `state`, artifacts in `s3_root` if given,
    else served by the server from `state`/artifacts."""
    state.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}"]
    if s3_root:
        return command + ["--default-artifact-root", s3_root, "--no-serve-artifacts"]
    return command + ["--serve-artifacts", "--artifacts-destination", str(state / "artifacts")]


def _s3_environment() -> None:
    """MLflow's S3 client reads MLFLOW_S3_ENDPOINT_URL, not the SDK's AWS_ENDPOINT_URL."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)


def register(tracking_uri: str, name: str, alias: str = ALIAS,
             models: dict[int, pathlib.Path] = MODELS) -> dict:
    """Logs each model of `models` in version order as the next version of `name`, and points
    `alias` at version 1; returns what was registered."""
    _s3_environment()
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    client = mlflow.MlflowClient()
    versions = {}
    for number, directory in sorted(models.items()):
        signature = Model.load(str(directory / "MLmodel")).signature
        with mlflow.start_run() as run:
            info = mlflow.onnx.log_model(onnx.load(str(directory / "model.onnx")), name="model",
                                         signature=signature, registered_model_name=name)
        version = client.get_model_version(name, str(info.registered_model_version))
        if int(version.version) != number:
            raise SystemExit(f"{name}: {directory.name} became version {version.version}, "
                             f"not {number}: register into a new name")
        versions[number] = {"version": number, "run_id": run.info.run_id,
                            "model_id": info.model_id, "source": version.source,
                            "model_dir": str(directory)}
    client.set_registered_model_alias(name, alias, "1")
    runs_name = register_runs_source(client, name, versions[1]["run_id"])
    return {"name": name, "alias": alias, "versions": versions, "runs_source": runs_name}


def register_runs_source(client, name: str, run_id: str) -> str:
    """Registers `<name>-runs` version 1 with the source `runs:/<run_id>/model`, as
    `MlflowClient.create_model_version` does for a model logged in a run; returns its name."""
    runs_name = f"{name}-runs"
    client.create_registered_model(runs_name)
    client.create_model_version(runs_name, source=f"runs:/{run_id}/model", run_id=run_id)
    return runs_name


def set_alias(tracking_uri: str, name: str, alias: str, version: int) -> None:
    """Points `alias` of `name` at `version`, as promoting a model in the MLflow UI does."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(
        name, alias, str(version))


def main() -> int:
    parser = argparse.ArgumentParser(description="A local MLflow tracking server and registry.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run `mlflow server` (replaces this process, "
                                "in a process group of its own)")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--state", type=pathlib.Path, required=True)
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--s3-root", help="default artifact root, s3://bucket/prefix")
    where.add_argument("--serve-artifacts", action="store_true")
    put = commands.add_parser("register", help="register models/bike-demand (1), bike-linear (2)")
    put.add_argument("--tracking-uri", required=True)
    put.add_argument("--name", required=True)
    put.add_argument("--alias", default=ALIAS)
    move = commands.add_parser("set-alias", help="point an alias at a version")
    move.add_argument("--tracking-uri", required=True)
    move.add_argument("--name", required=True)
    move.add_argument("--alias", required=True)
    move.add_argument("--version", type=int, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        _s3_environment()
        command = server_command(sys.executable, args.port, args.state, args.s3_root)
        # `mlflow server` runs uvicorn and job runners as its children: as the leader of a
        # process group of its own, it is stopped with all of them (scripts/local/mlflow.sh).
        os.setsid()
        os.execv(command[0], command)
    if args.command == "register":
        print(json.dumps(register(args.tracking_uri, args.name, args.alias)))
    else:
        set_alias(args.tracking_uri, args.name, args.alias, args.version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
