# shellcheck shell=bash
# Progress lines of a long command (sourced, after setting STAGES to the command's name):
# `step TEXT` prints `STAGES: TEXT` on stderr; `timed LABEL COMMAND...` runs one stage and
# then prints how long it took.
step() { echo "$STAGES: $*" >&2; }
timed() {
  local label=$1 start=$SECONDS
  shift
  "$@"
  step "$label: $((SECONDS - start)) s"
}
