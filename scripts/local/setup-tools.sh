#!/usr/bin/env bash
# Installs the local-pipeline tools (moto, AWS CLI v1, boto3, cargo-lambda, pytest,
# aws-kinesis-agg) into the virtualenv .venv/tools, from the pins in
# scripts/local/requirements.txt, and the project's own package of them, bike_local (tools/),
# editable: its modules are used where they are.
#
# Idempotent and quiet: the venv keeps a stamp with the hash of the requirements it was built
# from, so when nothing changed this returns at once and prints nothing. Progress goes to stderr.
# Usage: scripts/local/setup-tools.sh      (then use .venv/tools/bin/{aws,python,pytest,...})
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
ensure_venv tools "$root/scripts/local/requirements.txt" --project "$root/tools" \
  -c 'import awscli, aws_kinesis_agg.aggregator, boto3, flask, flask_cors, moto, pytest, xdist, bike_local.kinesis_server'
