#!/usr/bin/env bash
# Developer build: compiles the extension(s) into python/diffrt so `PYTHONPATH=python` works.
# Usage: tools/dev_build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bdir=${1:-build-dev}; shift || true
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDIFFRT_CUDA=${DIFFRT_CUDA:-OFF} "${launcher[@]}" "$@" >/dev/null
cmake --build "$bdir" -j2
