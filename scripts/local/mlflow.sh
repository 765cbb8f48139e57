#!/usr/bin/env bash
# Real MLflow tracking servers on 127.0.0.1 for the registry tests, each with a SQLite backend
# store and the two models registered (bike_local.mlflow_registry: models/bike-demand as
# version 1 and models/bike-linear as version 2 of `bike-demand`, alias `champion` -> 1):
#   mlflow-proxy  `--serve-artifacts`: artifacts behind the server's proxy (mlflow-artifacts:)
#   mlflow-e2e    the same, for the end-to-end tests, which move its alias and stop it
#   mlflow-s3     `--default-artifact-root s3://mlflow-<random>/artifacts` on the local S3
#                 (scripts/local/services.sh must run, and its `env` be in the environment)
#
# Usage: scripts/local/mlflow.sh start|stop|env|status
#   start   start both (no-op for one that already runs), wait until they answer, register
#   stop    stop what `start` started, nothing else; their state goes with them
#   env     print `export MLFLOW_TEST_PROXY_URI=... MLFLOW_TEST_S3_URI=...`
#   status  exit 0 if both run
# Environment: MLFLOW_SERVERS (default `proxy s3`: which to start), LOCAL_STATE_DIR (default
# .cache/local: NAME.pid, NAME.port, NAME.log, and each server's store in NAME/).
set -euo pipefail
# shellcheck source=scripts/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mlflow_python=$root/.venv/mlflow/bin/python
servers=${MLFLOW_SERVERS:-proxy s3}

case ${1:-} in
  start)
    bash "$root/scripts/local/setup-mlflow.sh"
    # Every server is started first, then each is waited for and registered, the
    # registrations side by side: a server spends most of its start importing.
    starting=()
    for kind in $servers; do
      name=mlflow-$kind
      running_pid "$name" >/dev/null && continue
      rm -rf "${state:?}/$name"
      case $kind in
        proxy | e2e) where=(--serve-artifacts) ;;
        s3)
          [[ -n ${AWS_ENDPOINT_URL:-} ]] ||
            { echo "mlflow: the s3 server needs the local S3: eval \"\$(scripts/local/services.sh env)\"" >&2; exit 1; }
          bucket=mlflow-$("$tools/python" -c 'import uuid; print(uuid.uuid4().hex[:12])')
          "$tools/python" -c 'import boto3, sys; boto3.client("s3").create_bucket(Bucket=sys.argv[1])' "$bucket"
          where=(--s3-root "s3://$bucket/artifacts")
          ;;
        *) echo "mlflow: MLFLOW_SERVERS holds proxy, s3 and e2e, not $kind" >&2; exit 2 ;;
      esac
      port=$(free_port)
      start_background "$name" "$mlflow_python" -m bike_local.mlflow_registry serve \
        --port "$port" --state "$state/$name" "${where[@]}"
      echo "$port" >"$state/$name.port"
      starting+=("$name")
    done
    registering=()
    for name in "${starting[@]}"; do
      port=$(<"$state/$name.port")
      # The server imports for a while before it listens.
      for _ in $(seq 1200); do
        port_open "$port" && break
        running_pid "$name" >/dev/null || break
        sleep 0.1
      done
      if ! port_open "$port"; then
        echo "mlflow: $name did not start; its log ($state/$name.log):" >&2
        tail -n 20 "$state/$name.log" >&2
        for other in "${starting[@]}"; do stop_background "$other"; done
        exit 1
      fi
      "$mlflow_python" -m bike_local.mlflow_registry register \
        --tracking-uri "http://127.0.0.1:$port" --name bike-demand >"$state/$name.registered" \
        2>>"$state/$name.log" &
      registering+=("$!:$name")
    done
    for job in "${registering[@]}"; do
      name=${job#*:}
      wait "${job%%:*}" ||
        { echo "mlflow: registering the models in $name failed; see $state/$name.log" >&2; exit 1; }
      echo "mlflow: $name on http://127.0.0.1:$(<"$state/$name.port"), bike-demand 1 and 2 registered" >&2
    done
    ;;
  stop)
    # A server leads a process group of its own (uvicorn and its job runners): all of it.
    # Every server is told to stop first, then each is waited for (5 s at most) and killed.
    groups=()
    for kind in $servers; do
      if pid=$(running_pid "mlflow-$kind"); then
        kill -TERM -- "-$pid" 2>/dev/null || true
        groups+=("$pid")
      fi
    done
    for pid in ${groups[@]+"${groups[@]}"}; do
      for _ in $(seq 50); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL -- "-$pid" 2>/dev/null || true
    done
    for kind in $servers; do stop_background "mlflow-$kind"; done
    ;;
  env)
    for kind in $servers; do
      running_pid "mlflow-$kind" >/dev/null ||
        { echo "mlflow: mlflow-$kind not running (scripts/local/mlflow.sh start)" >&2; exit 1; }
      variable=MLFLOW_TEST_$(tr '[:lower:]' '[:upper:]' <<<"$kind")_URI
      echo "export $variable=http://127.0.0.1:$(<"$state/mlflow-$kind.port")"
    done
    ;;
  status)
    for kind in $servers; do running_pid "mlflow-$kind" >/dev/null || exit 1; done
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
