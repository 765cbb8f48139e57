# shellcheck shell=bash
# Progress lines of a long command (sourced, after setting STAGES to the command's name):
# `step TEXT` prints `STAGES: TEXT` on stderr; `timed LABEL COMMAND...` runs one stage, prints
# how long it took, and returns the stage's exit status.
step() { echo "$STAGES: $*" >&2; }
timed() {
  local label=$1 start=$SECONDS status=0
  shift
  # The command's status is returned, also where the caller tests it (`timed ... || ...`),
  # which turns `set -e` off inside this function.
  "$@" || status=$?
  step "$label: $((SECONDS - start)) s"
  return "$status"
}
