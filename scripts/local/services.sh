#!/usr/bin/env bash
# Local AWS services on 127.0.0.1, standing in for AWS so the whole pipeline runs on this
# machine: moto for S3 (through scripts/local/moto_server.py) and bike_local's Kinesis
# stand-in (tools/bike_local/kinesis_server.py: shards by hash key, per-shard write limits,
# optional latency; see its docstring).
#
# Usage: scripts/local/services.sh start|stop|env|status
#   start   start both (no-op for one that already runs) and wait until they accept connections
#   stop    stop what `start` started, nothing else
#   env     print the `export` lines that point the AWS CLI, SDKs and the function at them
#           (AWS_ENDPOINT_URL: moto; AWS_ENDPOINT_URL_KINESIS: the stand-in):
#             eval "$(scripts/local/services.sh env)"
#   status  exit 0 if both run
# Environment: MOTO_PORT, KINESIS_PORT (default: free ports); KINESIS_LIMITS (default `on`:
# each shard admits 1,000 records and 1 MiB per second, as on AWS; `off`: no limits);
# KINESIS_LATENCY_MS (default 0: added to every PutRecords/PutRecord answer); LOCAL_TLS
# (default `off`; `on`: also HTTPS in front of each, through bike_local.tls_relay
# (tools/bike_local/tls_relay.py) with a certificate authority made at start in
# LOCAL_STATE_DIR/tls; `env` then prints the HTTPS endpoints, SSL_CERT_FILE for the Rust SDK and
# AWS_CA_BUNDLE for the AWS CLI); LOCAL_STATE_DIR (default .cache/local, holds NAME.pid,
# NAME.port and NAME.log for moto, kinesis, moto-tls and kinesis-tls).
# State is in memory only: streams and buckets go with `stop`.
set -euo pipefail
# shellcheck source=scripts/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Dummy credentials: the servers accept any, and they can never reach a real account by mistake.
REGION=us-east-1
# The credentials `env` gives every client; the Kinesis stand-in checks signatures with them.
ACCESS_KEY_ID=testing SECRET_ACCESS_KEY=testing

# Waits until NAME listens on PORT, then records the port; fails with NAME's log if it exits.
await_port() {
  local name=$1 port=$2
  for _ in $(seq 100); do
    port_open "$port" && break
    if ! running_pid "$name" >/dev/null; then
      echo "services: $name exited; its log ($state/$name.log):" >&2
      tail -n 20 "$state/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  port_open "$port" || { echo "services: $name not answering on port $port after 10 s" >&2; exit 1; }
  echo "$port" >"$state/$name.port"
}

case ${1:-} in
  start)
    bash "$root/scripts/local/setup-tools.sh"
    if ! running_pid moto >/dev/null; then
      port=${MOTO_PORT:-$(free_port)}
      start_background moto "$tools/python" "$root/scripts/local/moto_server.py" -H 127.0.0.1 -p "$port"
      await_port moto "$port"
      echo "services: moto (S3) on http://127.0.0.1:$port" >&2
    fi
    if ! running_pid kinesis >/dev/null; then
      port=${KINESIS_PORT:-$(free_port)}
      limits=()
      case ${KINESIS_LIMITS:-on} in
        on) ;;
        off) limits=(--no-limits) ;;
        *) echo "services: KINESIS_LIMITS must be on or off, not ${KINESIS_LIMITS}" >&2; exit 2 ;;
      esac
      start_background kinesis "$tools/python" -m bike_local.kinesis_server --host 127.0.0.1 \
        --port "$port" --latency-ms "${KINESIS_LATENCY_MS:-0}" ${limits[@]+"${limits[@]}"} \
        --secret-access-key "$SECRET_ACCESS_KEY"
      await_port kinesis "$port"
      echo "services: Kinesis stand-in on http://127.0.0.1:$port" \
        "(limits ${KINESIS_LIMITS:-on}, latency ${KINESIS_LATENCY_MS:-0} ms)" >&2
    fi
    case ${LOCAL_TLS:-off} in
      off) ;;
      on)
        for name in moto kinesis; do
          running_pid "$name-tls" >/dev/null && continue
          port=$(free_port)
          start_background "$name-tls" "$tools/python" -m bike_local.tls_relay \
            --cert-dir "$state/tls" --upstream "127.0.0.1:$(<"$state/$name.port")" --port "$port"
          await_port "$name-tls" "$port"
          echo "services: $name over HTTPS on https://127.0.0.1:$port (CA $state/tls/ca.pem)" >&2
        done
        ;;
      *) echo "services: LOCAL_TLS must be on or off, not ${LOCAL_TLS}" >&2; exit 2 ;;
    esac
    ;;
  stop)
    stop_background kinesis-tls
    stop_background moto-tls
    stop_background kinesis
    stop_background moto
    ;;
  env)
    for name in moto kinesis; do
      running_pid "$name" >/dev/null ||
        { echo "services: $name not running (scripts/local/services.sh start)" >&2; exit 1; }
    done
    # The IP, not `localhost`: clients may try ::1 first, where the servers do not listen.
    # Checksums `when_required`: newer SDKs add CRC checksums to every S3 request by default,
    # which local servers may not understand.
    if running_pid moto-tls >/dev/null && running_pid kinesis-tls >/dev/null; then
      cat <<EOF
export AWS_ENDPOINT_URL=https://127.0.0.1:$(<"$state/moto-tls.port")
export AWS_ENDPOINT_URL_KINESIS=https://127.0.0.1:$(<"$state/kinesis-tls.port")
export SSL_CERT_FILE=$state/tls/ca.pem AWS_CA_BUNDLE=$state/tls/ca.pem
EOF
    else
      cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$(<"$state/moto.port")
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$(<"$state/kinesis.port")
EOF
    fi
    cat <<EOF
export AWS_REGION=$REGION AWS_DEFAULT_REGION=$REGION
export AWS_ACCESS_KEY_ID=$ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET_ACCESS_KEY
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
unset AWS_PROFILE AWS_SESSION_TOKEN
EOF
    ;;
  status)
    running_pid moto >/dev/null && running_pid kinesis >/dev/null
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
