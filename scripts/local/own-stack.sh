# shellcheck shell=bash
# For scripts that start the local stack for one run (sourced, not run): pipeline.sh, load.sh.
#
# `own_local_stack NAME` gives the run its own state directory, LOCAL_STATE_DIR, under
# .cache/local (so that servers started by hand are left alone), and stops the function and
# the services when the script exits, however it exits: the directory is removed after a
# success and kept, with the servers' logs, after a failure.

own_local_stack() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  mkdir -p "$root/.cache/local"
  LOCAL_STATE_DIR=$(mktemp -d "$root/.cache/local/$1.XXXXXX")
  export LOCAL_STATE_DIR
  OWN_STACK_NAME=$1
  OWN_STACK_SCRIPTS=$root/scripts/local
  trap stop_own_local_stack EXIT
  # A signal ends the script through `exit`, so that the EXIT trap stops what it started.
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

stop_own_local_stack() {
  local status=$?
  bash "$OWN_STACK_SCRIPTS/function.sh" stop
  bash "$OWN_STACK_SCRIPTS/services.sh" stop
  if [[ $status == 0 ]]; then
    rm -rf "$LOCAL_STATE_DIR"
  else
    echo "$OWN_STACK_NAME: failed; logs in $LOCAL_STATE_DIR" >&2
  fi
}
