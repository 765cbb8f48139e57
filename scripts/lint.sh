#!/usr/bin/env bash
# Lints the deployment files: the Dockerfile with hadolint, template.yaml with cfn-lint.
# Exits non-zero on any finding.
#
# The linters live in the virtualenv .venv/lint, installed from the pins in
# scripts/lint-requirements.txt. Idempotent and quiet: the venv keeps a stamp with the hash of
# the requirements it was built from, so once installed this only runs the linters.
# Usage: scripts/lint.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.venv/lint
# shellcheck source=scripts/venv.sh
source "$root/scripts/venv.sh"
ensure_venv lint "$root/scripts/lint-requirements.txt" -m pip check --disable-pip-version-check

cd "$root"
status=0
echo "lint: hadolint Dockerfile" >&2
"$venv/bin/hadolint" Dockerfile || status=1
echo "lint: cfn-lint template.yaml" >&2
"$venv/bin/cfn-lint" template.yaml || status=1
exit "$status"
