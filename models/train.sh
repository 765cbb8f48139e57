#!/usr/bin/env bash
# Train the bike-demand models and regenerate the files derived from them:
# models/bike-demand/, models/bike-linear/, tests/fixtures/reference.json and
# tests/fixtures/models/. Safe to re-run: the environment and the data are reused when
# already in place, and the outputs come out byte for byte the same.
#
# Usage: bash models/train.sh   (from any directory; needs python3 3.11 and PyPI access)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$repo_root/models/requirements.txt"
venv="$repo_root/.venv/train"
stamp="$venv/requirements.sha256"

# The data set ships inside this wheel; the hash pins the exact file the model card describes.
islp_version="0.6.0"
islp_sha256="ca772cecca1747a2f84ee799a5503ddddbdf0e98f90c235494790c1d036c694b"
data_dir="$repo_root/.cache/islp"
wheel="$data_dir/islp-$islp_version-py3-none-any.whl"

# Install the pinned packages unless this venv already has exactly this requirements file.
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" > "$stamp"
fi

if [[ ! -f "$wheel" ]]; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "ISLP==$islp_version" -d "$data_dir"
fi
echo "$islp_sha256  $wheel" | sha256sum --check --quiet

"$venv/bin/python" "$repo_root/models/train.py" --data-wheel "$wheel"
"$venv/bin/python" "$repo_root/models/make_test_fixtures.py"
