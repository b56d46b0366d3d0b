#!/usr/bin/env bash
# Memory-safety checks of the C++ core, run by CI after the test suite (and by hand: tools/sanitize.sh).
#
# 1. valgrind over tests/cpp/kernel_memcheck.cpp, built with the Release flags users get: every CPU
#    kernel on exactly-sized heap buffers, on the portable and AVX2 paths. valgrind checks the
#    machine code the optimiser produced (ASan instruments before it, so it missed the GCC -O3
#    over-read behind the AVX2-only crash) and its virtual CPU has no AVX-512, so this is also
#    what an AVX2-only machine runs.
# 2. AddressSanitizer + UBSan: the extension built with both (a separate build and package copy;
#    python/diffrt is not touched), then the engine-level tests under it, with DIFFRT_CPU_PATH
#    forcing every path the CPU has (test_cpu_paths.py does that per process).
#
# Usage: tools/sanitize.sh [pytest args...]   (default: the engine-level test files below)
# Needs: cmake, ninja, g++ with libasan/libubsan, valgrind (apt-get install valgrind), nanobind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

echo "== sanitize: valgrind on the kernels (Release flags)"
command -v valgrind >/dev/null || { echo "sanitize: valgrind not found (apt-get install valgrind)"; exit 2; }
cmake -S . -B build-memcheck -G Ninja -DDIFFRT_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O3 -g -DNDEBUG" -DDIFFRT_DEV_OUTPUT_DIR="$root/build-memcheck/pkg" \
  "${launcher[@]}" >/dev/null
cmake --build build-memcheck --target kernel_memcheck -j2 >/dev/null
for path in portable avx2; do
  DIFFRT_CPU_PATH=$path valgrind -q --error-exitcode=9 build-memcheck/kernel_memcheck
done

echo "== sanitize: AddressSanitizer + UBSan, engine tests"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B build-asan -G Ninja -DDIFFRT_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS=$san" "-DCMAKE_SHARED_LINKER_FLAGS=$san" "-DCMAKE_EXE_LINKER_FLAGS=$san" \
  -DDIFFRT_DEV_OUTPUT_DIR="$root/build-asan/pkg/diffrt" "${launcher[@]}" >/dev/null
mkdir -p build-asan/pkg/diffrt
# The Python sources beside the sanitized extension (copied: the .so files of python/diffrt stay out).
tar -C python -cf - --exclude='*.so' --exclude=__pycache__ diffrt | tar -C build-asan/pkg -xf -
cmake --build build-asan --target _core -j2 >/dev/null
runtime="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(tests/python/test_cpu_paths.py tests/python/test_engine.py
  tests/python/test_compute_types.py tests/python/test_generate_api.py tests/python/test_batch_engine.py
  tests/python/test_kernels.py tests/python/test_fast_gemm.py tests/python/test_gguf_reader.py -q -p no:cacheprovider)
# Leaks: Python's own allocations are reported at exit; the core is checked for errors, not leaks.
PYTHONPATH="$root/build-asan/pkg" LD_PRELOAD="$runtime" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  python3 -m pytest "${tests[@]}"
echo "== sanitize: clean"
