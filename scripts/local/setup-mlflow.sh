#!/usr/bin/env bash
# Installs a real MLflow (tracking server and client) into the virtualenv .venv/mlflow, from the
# pins in scripts/local/mlflow-requirements.txt, with the project's own package of local tools,
# bike_local (tools/), editable: its mlflow_registry module starts the server and registers the
# models the registry tests serve.
#
# Idempotent and quiet, like setup-tools.sh: when nothing changed this returns at once and
# prints nothing. Progress goes to stderr. scripts/local/mlflow.sh runs it before it starts a
# server; the pipeline needs no MLflow.
# Usage: scripts/local/setup-mlflow.sh      (then use .venv/mlflow/bin/{mlflow,python})
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
ensure_venv mlflow "$root/scripts/local/mlflow-requirements.txt" --project "$root/tools" \
  -c 'import boto3, mlflow.onnx, mlflow.server, onnx, sqlalchemy, bike_local.mlflow_layout'
