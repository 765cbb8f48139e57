#!/usr/bin/env bash
# Installs the local-pipeline tools (moto, AWS CLI v1, boto3, cargo-lambda, pytest) into the
# virtualenv .venv/tools, from the pins in scripts/local/requirements.txt.
#
# Idempotent and quiet: the venv keeps a stamp with the hash of the requirements it was built
# from, so when nothing changed this returns at once and prints nothing. Progress goes to stderr.
# Usage: scripts/local/setup-tools.sh      (then use .venv/tools/bin/{aws,python,pytest,...})
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$root/.venv/tools
requirements=$root/scripts/local/requirements.txt
stamp=$venv/.requirements-hash

wanted=$(sha256sum "$requirements" 2>/dev/null || shasum -a 256 "$requirements")
wanted=${wanted%% *}
up_to_date() { [[ -f $stamp && $(<"$stamp") == "$wanted" ]]; }
up_to_date && exit 0

# Two scripts may start at once (tests and pipeline): only one of them installs.
mkdir -p "$root/.venv"
exec 9>"$root/.venv/tools.lock"
flock 9
up_to_date && exit 0

echo "setup-tools: installing $(basename "$requirements") into .venv/tools (once)" >&2
# A venv whose interpreter has gone (python3 upgraded or removed) is rebuilt from scratch.
if ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
# --no-deps: the file pins the complete set (see its header for what is left out on purpose).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
  -r "$requirements" >&2
"$venv/bin/python" -c 'import awscli, boto3, flask, flask_cors, moto, pytest' >&2
echo "$wanted" >"$stamp.part" && mv "$stamp.part" "$stamp"
