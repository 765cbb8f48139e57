#!/usr/bin/env bash
# Installs the function into ROOT exactly as the Lambda container image holds it, ROOT
# standing for the image's `/`. This is the one list of what goes where: the Dockerfile runs
# it in its build stage and copies ROOT over the base image; scripts/image-layout.sh runs it on
# this machine so that the image-layout test checks the same files in the same places.
#
#   ROOT/var/runtime/bootstrap                  the release binary. The base image's entrypoint
#                                               (/lambda-entrypoint.sh) execs /var/runtime/bootstrap.
#   ROOT/var/runtime/libonnxruntime.so.<ver>    ONNX Runtime, next to the binary: ort resolves the
#   ROOT/var/runtime/libonnxruntime.so -> ...   default ORT_DYLIB_PATH (`libonnxruntime.so`) there
#                                               first, so no environment variable is needed.
#   ROOT/var/task/                              the working directory (LAMBDA_TASK_ROOT); empty
#                                               unless BUNDLE_MODEL=true adds
#   ROOT/var/task/models/bike-demand/           the default model, which the service resolves
#                                               relative to its working directory.
#
# Lambda runs the function as an unprivileged user, so every file is world-readable and the
# binary world-executable, whatever the umask or the modes in the checkout.
#
# Usage: scripts/install-into.sh ROOT       (ROOT must not exist yet, or be empty)
# Environment:
#   BINARY        the release binary (default: target/release/bike-prediction)
#   ORT_DIR       the directory scripts/setup-ort.sh filled (default: .ort)
#   BUNDLE_MODEL  true to include models/bike-demand (default: false)
set -euo pipefail

root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:?usage: scripts/install-into.sh ROOT}
binary=${BINARY:-$root_dir/target/release/bike-prediction}
ort_dir=${ORT_DIR:-$root_dir/.ort}
bundle_model=${BUNDLE_MODEL:-false}

fail() { echo "install-into: $*" >&2; exit 1; }

[[ -x $binary ]] || fail "$binary missing: cargo build --release --locked"
# The versioned file the `libonnxruntime.so` link of setup-ort.sh points to.
[[ -e $ort_dir/libonnxruntime.so ]] || fail "$ort_dir/libonnxruntime.so missing: scripts/setup-ort.sh"
library=$(readlink -f "$ort_dir/libonnxruntime.so")
if [[ -e $dest && -n $(ls -A "$dest") ]]; then
  fail "$dest is not empty: it must hold the image's files and nothing else"
fi
case $bundle_model in
  true | false) ;;
  *) fail "BUNDLE_MODEL=$bundle_model: expected true or false" ;;
esac

runtime=$dest/var/runtime
task=$dest/var/task
install -d -m 0755 "$runtime" "$task"
install -m 0755 "$binary" "$runtime/bootstrap"
install -m 0644 "$library" "$runtime/$(basename "$library")"
ln -s "$(basename "$library")" "$runtime/libonnxruntime.so"

if [[ $bundle_model == true ]]; then
  # The whole MLflow model directory: the service reads MLmodel, the .onnx file and any
  # external data; the rest (model card, environment files) is small and belongs with it.
  install -d -m 0755 "$task/models"
  cp -R "$root_dir/models/bike-demand" "$task/models/"
  chmod -R u=rwX,go=rX "$task/models"
fi
