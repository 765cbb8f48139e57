#!/usr/bin/env bash
# Assembles in DIR the files the Lambda container image adds to its base image, in the image's
# layout (DIR stands for the image's `/`), from this checkout: builds the release binary as the
# image does (aws-lc without CPU-jitter entropy, which .cargo/config.toml sets for every build
# here), or takes BINARY, puts the ONNX Runtime library for this machine's architecture
# in .ort/, and installs both with scripts/install-into.sh, the script the Dockerfile's build
# stage runs. Idempotent inputs, fresh output: DIR must not exist yet, or be empty.
#
# Usage: scripts/image-layout.sh DIR
# Environment: BUNDLE_MODEL  true to include the bundled model at var/task/models/bike-demand
#                            (default false, like the Dockerfile's build argument)
#              BINARY        the binary to install (default: the release build, made here);
#                            the e2e tests give the build they test
# tests/e2e/test_image_layout.py runs the result as Lambda would.
set -euo pipefail

dir=$(realpath -m "${1:?usage: scripts/image-layout.sh DIR}")
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-ort.sh >/dev/null
if [[ -z ${BINARY:-} ]]; then
  cargo build --release --locked --quiet --bin bike-prediction
  BINARY=$PWD/target/release/bike-prediction
fi
BINARY=$BINARY bash scripts/install-into.sh "$dir"
echo "image-layout: $(find "$dir" -mindepth 1 -not -type d | wc -l) files in $dir" >&2
