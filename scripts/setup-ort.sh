#!/usr/bin/env bash
# Puts the ONNX Runtime shared library the service loads at run time into `.ort/`.
#
# The library comes out of the pinned `onnxruntime` wheel on PyPI (ort's own binary
# download reaches a CDN that is not a package registry). Idempotent: when the library is
# already in place this returns at once. Prints the library's path on stdout.
#
# Environment:
#   ORT_ARCH  x86_64 or aarch64: which wheel to take the library from (default: this machine's).
#   ORT_DIR   where to put the library (default: .ort/ in the repository).
set -euo pipefail

ORT_VERSION=1.31.1
ORT_ARCH=${ORT_ARCH:-$(uname -m)}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${ORT_DIR:-$root/.ort}
lib="$dest/libonnxruntime.so.$ORT_VERSION"

if [[ ! -s "$lib" ]]; then
  wheels="$root/.cache/wheels"
  mkdir -p "$wheels" "$dest"
  wheel=$(ls "$wheels"/onnxruntime-"$ORT_VERSION"-*manylinux*"$ORT_ARCH"*.whl 2>/dev/null | head -n 1 || true)
  if [[ -z "$wheel" ]]; then
    echo "setup-ort: downloading onnxruntime==$ORT_VERSION ($ORT_ARCH) from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform "manylinux_2_28_$ORT_ARCH" --python-version 3.11 \
      "onnxruntime==$ORT_VERSION" -d "$wheels" >&2
    wheel=$(ls "$wheels"/onnxruntime-"$ORT_VERSION"-*manylinux*"$ORT_ARCH"*.whl | head -n 1)
  fi
  python3 - "$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
member = f"onnxruntime/capi/{target.rsplit('/', 1)[1]}"
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$lib.part" "$lib"
fi
# ort looks for `libonnxruntime.so` next to the executable; tools and tests use this name.
ln -sf "libonnxruntime.so.$ORT_VERSION" "$dest/libonnxruntime.so"
echo "$dest/libonnxruntime.so"
