# shellcheck shell=bash
# Python virtualenvs of the project's tools (sourced, not run): lint.sh (.venv/lint) and
# local/setup-tools.sh (.venv/tools).
#
# `ensure_venv NAME REQUIREMENTS [--project DIR] CHECK...` makes .venv/NAME hold exactly the
# pins of REQUIREMENTS, and with --project the Python project in DIR installed editable (its
# files are used where they are, so changing them needs no reinstall; it is built without
# build isolation, so its build backend must be pinned in REQUIREMENTS). It returns at once
# when the venv's stamp holds the hash of REQUIREMENTS (and of DIR/pyproject.toml); otherwise
# it installs them (--no-deps: each file pins the complete set, see its header), runs the
# venv's python with the arguments CHECK, and writes the stamp. A venv whose interpreter has
# gone (python3 upgraded or removed) is rebuilt from scratch. Several scripts
# may start at once (CI steps, the tests and the pipeline): a lock lets one of them install.
ensure_venv() {
  local name=$1 requirements=$2
  shift 2
  local project=
  if [[ ${1:-} == --project ]]; then
    project=$2
    shift 2
  fi
  local root venv stamp wanted
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  venv=$root/.venv/$name
  stamp=$venv/.requirements-hash
  wanted=$(cat "$requirements" ${project:+"$project/pyproject.toml"} |
    { sha256sum 2>/dev/null || shasum -a 256; })
  wanted=${wanted%% *}
  [[ -f $stamp && $(<"$stamp") == "$wanted" ]] && return 0
  mkdir -p "$root/.venv"
  (
    flock 9
    [[ -f $stamp && $(<"$stamp") == "$wanted" ]] && exit 0
    echo "$(basename "$0" .sh): installing $(basename "$requirements") into .venv/$name (once)" >&2
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -r "$requirements" >&2
    if [[ -n $project ]]; then
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --no-build-isolation --editable "$project" >&2
    fi
    "$venv/bin/python" "$@" >&2
    echo "$wanted" >"$stamp.part" && mv "$stamp.part" "$stamp"
  ) 9>"$root/.venv/$name.lock"
}
