#!/usr/bin/env bash
# Local AWS services: one moto server that speaks the S3 and Kinesis wire protocols on
# 127.0.0.1, standing in for AWS so the whole pipeline runs on this machine. It runs through
# scripts/local/moto_server.py, which makes moto's Kinesis PutRecords linear in the records put
# (see there why).
#
# Usage: scripts/local/services.sh start|stop|env|status
#   start   start moto (no-op if it already runs) and wait until it accepts connections
#   stop    stop the moto that `start` started, nothing else
#   env     print the `export` lines that point the AWS CLI, SDKs and the function at it:
#             eval "$(scripts/local/services.sh env)"
#   status  exit 0 if it runs
# Environment: MOTO_PORT (default: a free port), LOCAL_STATE_DIR (default .cache/local, holds
# moto.pid, moto.port and moto.log). State is in memory only: streams and buckets go with `stop`.
set -euo pipefail
# shellcheck source=scripts/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Dummy credentials: moto accepts any, and they can never reach a real account by mistake.
REGION=us-east-1

case ${1:-} in
  start)
    running_pid moto >/dev/null && exit 0
    bash "$root/scripts/local/setup-tools.sh"
    port=${MOTO_PORT:-$(free_port)}
    start_background moto "$tools/python" "$root/scripts/local/moto_server.py" -H 127.0.0.1 -p "$port"
    for _ in $(seq 100); do
      port_open "$port" && break
      if ! running_pid moto >/dev/null; then
        echo "services: moto exited; its log ($state/moto.log):" >&2
        tail -n 20 "$state/moto.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    port_open "$port" || { echo "services: moto_server not answering on port $port after 10 s" >&2; exit 1; }
    echo "$port" >"$state/moto.port"
    echo "services: moto (S3, Kinesis) on http://127.0.0.1:$port" >&2
    ;;
  stop)
    stop_background moto
    ;;
  env)
    running_pid moto >/dev/null || { echo "services: not running (scripts/local/services.sh start)" >&2; exit 1; }
    # The IP, not `localhost`: clients may try ::1 first, where moto does not listen.
    # Checksums `when_required`: newer SDKs add CRC checksums to every S3 request by default,
    # which local servers may not understand.
    cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$(<"$state/moto.port")
export AWS_REGION=$REGION AWS_DEFAULT_REGION=$REGION
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
unset AWS_PROFILE AWS_SESSION_TOKEN
EOF
    ;;
  status)
    running_pid moto >/dev/null
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
