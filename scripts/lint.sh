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
requirements=$root/scripts/lint-requirements.txt
stamp=$venv/.requirements-hash

wanted=$(sha256sum "$requirements" 2>/dev/null || shasum -a 256 "$requirements")
wanted=${wanted%% *}
up_to_date() { [[ -f $stamp && $(<"$stamp") == "$wanted" ]]; }

if ! up_to_date; then
  # Two runs may start at once (CI steps, a developer): only one of them installs.
  mkdir -p "$root/.venv"
  exec 9>"$root/.venv/lint.lock"
  flock 9
  if ! up_to_date; then
    echo "lint: installing $(basename "$requirements") into .venv/lint (once)" >&2
    # A venv whose interpreter has gone (python3 upgraded or removed) is rebuilt from scratch.
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -r "$requirements" >&2
    "$venv/bin/python" -m pip check --disable-pip-version-check >&2
    echo "$wanted" >"$stamp.part" && mv "$stamp.part" "$stamp"
  fi
  exec 9>&-
fi

cd "$root"
status=0
echo "lint: hadolint Dockerfile" >&2
"$venv/bin/hadolint" Dockerfile || status=1
echo "lint: cfn-lint template.yaml" >&2
"$venv/bin/cfn-lint" template.yaml || status=1
exit "$status"
