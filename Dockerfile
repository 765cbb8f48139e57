# syntax=docker/dockerfile:1
#
# The Lambda container image of bike-prediction, for x86_64 and arm64 from this one file:
#
#   docker buildx build --platform linux/amd64 --provenance=false -t bike-prediction:x86_64 .
#   docker buildx build --platform linux/arm64 --provenance=false -t bike-prediction:arm64 .
#
# One image per architecture, without provenance attestations: Lambda takes a single-platform
# manifest only. docs/DEPLOY.md pushes them to ECR and deploys them.
#
# Build stages run on Amazon Linux 2023, the distribution of the Lambda base image, so the
# binary links against the glibc (2.34) it runs with. Without an arm64 machine or builder, the
# arm64 build runs under QEMU emulation and compiles slowly (docs/DEPLOY.md).
#
# The files the image adds to its base image are listed once, in scripts/install-into.sh; the
# test suite assembles them the same way (scripts/image-layout.sh) and runs them as Lambda does
# (tests/e2e/test_image_layout.py).

# Base images. The tags move with AWS's security updates; pin a digest with
# --build-arg BUILD_IMAGE=...@sha256:... for byte-for-byte rebuilds.
ARG BUILD_IMAGE=public.ecr.aws/amazonlinux/amazonlinux:2023
ARG RUNTIME_IMAGE=public.ecr.aws/lambda/provided:al2023

# ---------------------------------------------------------------------------------------------
# Toolchain: Rust, cargo-chef, and what the build needs besides.
FROM ${BUILD_IMAGE} AS toolchain
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# gcc: the linker, and the C compiler of aws-lc-sys (TLS of the AWS SDK).
# python3-pip: scripts/setup-ort.sh takes ONNX Runtime from the onnxruntime wheel on PyPI.
# Package versions come from the distribution's release the base image is locked to.
# hadolint ignore=DL3041
RUN dnf install -y --setopt=install_weak_deps=False gcc python3 python3-pip \
    && dnf clean all

# Rust from rustup's pinned installer, checked against the digests published with it (the same
# ones rust-lang/docker-rust uses for rustup 1.29.0), then the pinned toolchain.
ARG RUST_VERSION=1.95.0
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN case "$(uname -m)" in \
      x86_64) sha256=4acc9acc76d5079515b46346a485974457b5a79893cfb01112423c89aeb5aa10 ;; \
      aarch64) sha256=9732d6c5e2a098d3521fca8145d826ae0aaa067ef2385ead08e6feac88fa5792 ;; \
      *) echo "unsupported architecture: $(uname -m)" >&2; exit 1 ;; \
    esac \
    && curl --proto '=https' --tlsv1.2 -sSfL -o /tmp/rustup-init \
      "https://static.rust-lang.org/rustup/archive/1.29.0/$(uname -m)-unknown-linux-gnu/rustup-init" \
    && echo "${sha256}  /tmp/rustup-init" | sha256sum -c - \
    && chmod +x /tmp/rustup-init \
    && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" \
    && rm /tmp/rustup-init \
    && cargo --version

# cargo-chef builds the dependencies from a recipe of the manifests alone, so that layer is
# rebuilt only when Cargo.toml or Cargo.lock change, not with every change to the source.
RUN cargo install cargo-chef --version 0.1.78 --locked \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /src

# ---------------------------------------------------------------------------------------------
# The recipe: the manifests and lock file, with every source file replaced by a stub.
FROM toolchain AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------------------------
# Build: dependencies (cached), ONNX Runtime, the binary, then the image's files into /image.
FROM toolchain AS build
# aws-lc (TLS of the AWS SDK) without its CPU-jitter entropy source: seeding from it at the
# first TLS handshake costs 30-40 ms of CPU per cold start, all of it in Init Duration on a
# fraction of a vCPU (docs/PERFORMANCE.md, "Over HTTPS"). The DRBG is then seeded from the
# kernel (getrandom), with RDRAND/RNDR where the CPU has them, as aws-lc does by itself in VMs
# with /dev/sysgenid. Read by aws-lc-sys's build script, so it is set before the dependencies
# are built; scripts/image-layout.sh builds the same way.
ENV AWS_LC_SYS_NO_JITTER_ENTROPY=1
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json

# ONNX Runtime for the image's architecture, with the project's own script, into .ort/.
# It depends on nothing else in the source, so it is its own cached layer.
ARG TARGETARCH
COPY scripts/setup-ort.sh scripts/setup-ort.sh
RUN case "${TARGETARCH:-$(uname -m)}" in \
      amd64 | x86_64) ort_arch=x86_64 ;; \
      arm64 | aarch64) ort_arch=aarch64 ;; \
      *) echo "unsupported architecture: ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
    && ORT_ARCH=$ort_arch bash scripts/setup-ort.sh

COPY . .
RUN cargo build --release --locked --bin bike-prediction

# true: bake models/bike-demand into /var/task/models/bike-demand, the model the function
# loads when no MODEL_BUCKET (or MODEL_URI) is set, for accounts without an S3 model store.
ARG BUNDLE_MODEL=false
RUN BUNDLE_MODEL=${BUNDLE_MODEL} bash scripts/install-into.sh /image

# ---------------------------------------------------------------------------------------------
# The image: the OS-only Lambda base image plus the files of scripts/install-into.sh.
FROM ${RUNTIME_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ONNX Runtime is C++ and needs libstdc++.so.6 (GLIBCXX_3.4.22 or later; AL2023 has GCC 11's).
# The minimal base image probably has it already, as a dependency of its package manager
# (microdnf uses libdnf, a C++ library), but does not promise it: installing it is a no-op then,
# and keeps the image working if the base image drops it. libgcc comes with it.
# hadolint ignore=DL3041
RUN dnf install -y libstdc++ \
    && dnf clean all

COPY --from=build /image/var/runtime/ /var/runtime/
COPY --from=build /image/var/task/ /var/task/

# Fails the build unless the binary runs here: its glibc symbols resolve, ONNX Runtime loads
# with its libstdc++, and the sample event gets its prediction, with the model and event of the
# source tree bind-mounted so that they do not stay in the image.
RUN --mount=type=bind,source=models/bike-demand,target=/tmp/check/model \
    --mount=type=bind,source=events/sample.json,target=/tmp/check/event.json \
    TEST_RUN=True MODEL_URI=/tmp/check/model \
      /var/runtime/bootstrap invoke --event /tmp/check/event.json | grep '"pred_id":123' >/dev/null

# /lambda-entrypoint.sh (the base image's ENTRYPOINT) execs /var/runtime/bootstrap, or the
# Runtime Interface Emulator in front of it when run outside Lambda, and needs exactly one
# argument, the handler name; bootstrap does not use it.
WORKDIR /var/task
CMD ["bootstrap"]
