#!/usr/bin/env bash
# The ARM64 CPU path, tested on an x86 machine: the C++ core built with Debian's aarch64 cross
# compiler (no Python extension) and tests/cpp/kernel_check.cpp run under qemu user-mode emulation,
# once per path and int8 kernel (CI runs this after tools/sanitize.sh; by hand: tools/cross_aarch64.sh):
#   -cpu max                            neon path, int8 by SMMLA (FEAT_I8MM)
#   -cpu neoverse-n1                    neon path, int8 by SDOT (FEAT_DotProd, no I8MM)
#   -cpu cortex-a72                     neon path, int8 by SMULL/SADALP (ARMv8.0, neither)
#   -cpu max, DIFFRT_CPU_PATH=portable  the plain C++ kernels as built for ARM64
# kernel_check holds every kernel to the Python tests' float64 references and tolerances. This proves
# correctness only: speed under emulation means nothing.
#
# Needs cmake and ninja; installs g++-aarch64-linux-gnu and qemu-user with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-aarch64
missing=()
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== cross_aarch64: installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") \
    >/dev/null
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

echo "== cross_aarch64: building the core and kernel_check for aarch64"
cmake -S . -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" -DDIFFRT_PYTHON=OFF \
  -DDIFFRT_CUDA=OFF -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build "$build" --target kernel_check -j2 >/dev/null

# Two runs at a time (one per core); every log is printed, and any failing run fails the script.
cpus=(max neoverse-n1 cortex-a72 max)
paths=("" "" "" portable)
rcs=()
for first in 0 2; do
  pids=()
  for i in $first $((first + 1)); do
    DIFFRT_CPU_PATH=${paths[$i]} qemu-aarch64 -cpu "${cpus[$i]}" -L /usr/aarch64-linux-gnu "$build/kernel_check" \
      >"$build/kernel_check.$i.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    rcs+=($rc)
  done
done
status=0
for i in "${!cpus[@]}"; do
  echo "-- qemu-aarch64 -cpu ${cpus[$i]}${paths[$i]:+, DIFFRT_CPU_PATH=${paths[$i]}}: exit ${rcs[$i]}"
  sed 's/^/   /' "$build/kernel_check.$i.log"
  [ "${rcs[$i]}" -eq 0 ] || status=1
done
if [ $status -eq 0 ]; then echo "== cross_aarch64: every path passed"; else echo "== cross_aarch64: FAILED"; fi
exit $status
