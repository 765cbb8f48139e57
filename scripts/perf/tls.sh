#!/usr/bin/env bash
# The cold start and the first publishing invocation over HTTPS, as on AWS, with and without
# aws-lc's CPU-jitter entropy source.
#
# scripts/perf/cold-start.sh talks plain HTTP to its local servers, so it never reaches TLS.
# Here the function publishes (OUTPUT_STREAM, local model, no TEST_RUN) to the Kinesis stand-in
# through bike_local's TLS relay (scripts/local/services.sh with LOCAL_TLS=on): its first
# PutRecords makes the process's first TLS handshake, which is aws-lc's first use of randomness
# (the DRBG is seeded then). The SDK trusts the relay's test CA through SSL_CERT_FILE (read by
# rustls-native-certs, the SDK's default trust store), pointed at the system's bundle plus the
# test CA so that the certificates read are those of a deployed function plus one.
#
# Two release builds, each timed RUNS times under the Runtime API stub
# (scripts/perf/runtime-api-stub.py: ready_ms, startup_ms, first_invoke_ms) publishing over
# HTTPS and, as the control, over plain HTTP straight to the stand-in:
#   default    aws-lc as the SDK builds it by default, its DRBG seeded by CPU jitter
#              (jitterentropy): AWS_LC_SYS_NO_JITTER_ENTROPY=0, in target/jitter
#   nojitter   the project's build (target/release), as the Dockerfile builds the image:
#              AWS_LC_SYS_NO_JITTER_ENTROPY=1 (.cargo/config.toml), aws-lc-sys built with
#              DISABLE_CPU_JITTER_ENTROPY, the DRBG seeded from getrandom
#
# The function's threads run in parallel (the model loads on one while the main thread makes the
# first handshake), so on a machine with a free core ready_ms hides part of what they cost; a
# Lambda of 128 MB has a fraction of one vCPU. cpu_ms is the CPU time of all its threads, and
# CPUS=0 runs the stub and the function on that one CPU only (taskset -c), as on one vCPU.
#
# Usage: [CPUS=LIST] scripts/perf/tls.sh [RUNS] [EVENT]   (defaults: 20, events/sample.json)
# Builds both first (the first build of target/jitter is a whole release build). Starts its own
# local services and relays and stops them on exit. Needs python3 and nm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

runs=${1:-20}
event=${2:-events/sample.json}
stub=("$root/.venv/tools/bin/python" "$root/scripts/perf/runtime-api-stub.py" --repeat "$runs" --event "$event")
[[ -n ${CPUS:-} ]] && stub=(taskset -c "$CPUS" "${stub[@]}")
declare -A binaries=([default]=$root/target/jitter/release/bike-prediction
                     [nojitter]=$root/target/release/bike-prediction)

bash scripts/local/setup-tools.sh
cargo build --release --locked --quiet
AWS_LC_SYS_NO_JITTER_ENTROPY=0 CARGO_TARGET_DIR=$root/target/jitter \
  cargo build --release --locked --quiet
export ORT_DYLIB_PATH
ORT_DYLIB_PATH=$(bash scripts/setup-ort.sh)
# The function's settings come only from what is set below, not from the caller's shell.
unset MODEL_BUCKET MODEL_ID MLFLOW_EXPERIMENT_ID MODEL_ARTIFACT_PATH MODEL_CACHE_DIR \
  OUTPUT_STREAM DEAD_LETTER_STREAM RUST_LOG AWS_LAMBDA_LOG_LEVEL SSL_CERT_DIR
export RUN_ID=perf-tls MODEL_NAME=bike-demand MODEL_URI=$root/models/bike-demand TEST_RUN=False

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "cpus:    ${CPUS:-all} (the stub and the function)"
echo

export LOCAL_STATE_DIR LOCAL_TLS=on
LOCAL_STATE_DIR=$(mktemp -d -t perf-tls-XXXXXX)
cleanup() {
  bash scripts/local/services.sh stop || true
  rm -rf "$LOCAL_STATE_DIR"
}
trap cleanup EXIT
bash scripts/local/services.sh start
eval "$(bash scripts/local/services.sh env)"
https_endpoint=$AWS_ENDPOINT_URL_KINESIS
http_endpoint=http://127.0.0.1:$(<"$LOCAL_STATE_DIR/kinesis.port")

# Setting SSL_CERT_FILE replaces the system store: give it the system's bundle too.
system_bundle=
for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  [[ -f $candidate ]] && { system_bundle=$candidate; break; }
done
SSL_CERT_FILE=$LOCAL_STATE_DIR/ca-bundle.pem
cat ${system_bundle:+"$system_bundle"} "$AWS_CA_BUNDLE" >"$SSL_CERT_FILE"

stream=perf-tls
"$root/.venv/tools/bin/aws" kinesis create-stream --stream-name "$stream" --shard-count 1
export OUTPUT_STREAM=$stream

for build in default nojitter; do
  binary=${binaries[$build]}
  echo "$build: $binary ($(nm "$binary" | grep -c ' jent_' || true) jitterentropy symbols)"
  AWS_ENDPOINT_URL_KINESIS=$https_endpoint "${stub[@]}" \
    --label "$build, publishing over HTTPS ($https_endpoint)" "$binary"
  AWS_ENDPOINT_URL_KINESIS=$http_endpoint "${stub[@]}" \
    --label "$build, publishing over HTTP ($http_endpoint)" "$binary"
  echo
done
