# shellcheck shell=bash
# Helpers shared by services.sh and function.sh (sourced, not run).
#
# Each background process started here is recorded in the state directory as NAME.pid and
# NAME.cmd (and NAME.port, NAME.log), so that `stop` ends exactly what `start` started and
# nothing else. LOCAL_STATE_DIR chooses the directory (default .cache/local); tests and
# pipeline.sh use their own.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=$root/.venv/tools/bin
state=${LOCAL_STATE_DIR:-$root/.cache/local}
mkdir -p "$state"

# A TCP port nobody listens on now (the kernel picks it).
free_port() {
  "$tools/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# True while something accepts connections on 127.0.0.1:$1 (bash's /dev/tcp, no curl needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether PID runs COMMAND. Matching the command line, not just `kill -0`, ignores a PID that
# was recycled for another program, and a zombie (its command line is empty) left by a parent
# that never reaps.
runs() { [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") == *"$2"* ]]; }

# The PID recorded for NAME, if that process still runs.
running_pid() {
  local name=$1 pid
  [[ -f $state/$name.pid && -f $state/$name.cmd ]] || return 1
  pid=$(<"$state/$name.pid")
  runs "$pid" "$(<"$state/$name.cmd")" || return 1
  echo "$pid"
}

# Starts a command in the background, logging to NAME.log, and records it as NAME.
start_background() {
  local name=$1 pid
  shift
  "$@" >"$state/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$state/$name.pid"
  echo "$1" >"$state/$name.cmd"
  # Until the forked shell has exec'ed the command, /proc shows the shell: wait for the
  # command, so that running_pid (and `stop`) see it from now on.
  for _ in $(seq 100); do
    runs "$pid" "$1" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.01
  done
}

# Stops NAME if it runs (SIGTERM, then SIGKILL after 5 s) and forgets it. Its log stays.
stop_background() {
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      running_pid "$name" >/dev/null || break
      sleep 0.1
    done
    running_pid "$name" >/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$state/$name.pid" "$state/$name.cmd" "$state/$name.port"
}
