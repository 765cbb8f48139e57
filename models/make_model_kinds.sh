#!/usr/bin/env bash
# Train one small model of each kind the service should serve and save each with MLflow's own
# mlflow.onnx.save_model: tests/fixtures/model-kinds/<kind>/ and
# tests/fixtures/model-kinds/reference.json (see models/model_kinds.py). Safe to re-run: the
# environment and the data are reused when already in place, and the outputs come out byte
# for byte the same.
#
# Usage: bash models/make_model_kinds.sh   (from any directory; needs python3 3.11 and PyPI access)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$repo_root/models/kinds-requirements.txt"

# The data set ships inside this wheel; the same version and hash as models/train.sh.
islp_version="0.6.0"
islp_sha256="ca772cecca1747a2f84ee799a5503ddddbdf0e98f90c235494790c1d036c694b"
data_dir="$repo_root/.cache/islp"
wheel="$data_dir/islp-$islp_version-py3-none-any.whl"

# .venv/kinds holds exactly the pins of kinds-requirements.txt; ensure_venv returns at once
# when its stamp matches the file's hash, and otherwise installs and runs pip check.
# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"
ensure_venv kinds "$requirements" -m pip check --disable-pip-version-check

if [[ ! -f "$wheel" ]]; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        "ISLP==$islp_version" -d "$data_dir"
fi
echo "$islp_sha256  $wheel" | sha256sum --check --quiet

# model_kinds.py imports the data loading of train.py, which lives beside it.
"$repo_root/.venv/kinds/bin/python" "$repo_root/models/model_kinds.py" --data-wheel "$wheel"
