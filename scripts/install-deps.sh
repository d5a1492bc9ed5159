#!/usr/bin/env bash
# Install everything Hadal needs to build and test on Debian 12, from Debian's archive.
# Idempotent; uses sudo when not root. Python packages are pinned in scripts/requirements-*.txt
# and installed into .venv by scripts that need them, never system-wide.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
    build-essential cmake pkg-config git ca-certificates
    clang llvm libclang-rt-14-dev      # libFuzzer targets and sanitizer runtimes
    python3 python3-venv python3-pip   # test helpers and reference scripts
    libpcre2-dev                        # tokenizer pre-tokenizer regexes (Unicode properties)
    protobuf-c-compiler libprotobuf-c-dev   # control plane messages (proto/)
    libucx-dev ucx-utils                # data plane: UCX transport and ucx_perftest floor
    libopenmpi-dev openmpi-bin          # mpirun launch and the MPI transport
    libevent-dev                        # HTTP server (evhttp)
    redis-server libhiredis-dev         # prefix cache store
    iproute2 curl                       # netns multi-host test, README examples
    prometheus                          # promtool check metrics (tests/api)
)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
