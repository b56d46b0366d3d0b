#!/usr/bin/env bash
# One prepared GPU check (run on a machine with an NVIDIA GPU; see docs/perf.md for results):
#   1. build the package with the CUDA module, 2. run the GPU tests (ops, then engine, in two
#   processes so a sticky CUDA error in one cannot hide the other's results), 3. benchmark a
#   full-size-shaped DiffusionGemma: transformers on the card, then diffrt (random weights made on
#   the device) in its own process, and print one combined table.
# Wheels that the machine lacks (transformers==5.23.0, regex, gguf, ml_dtypes; starlette and httpx
# with their pure-Python dependencies for the server test) travel in .whl/. Make them here once
# (.whl/ is git-ignored via .git/info/exclude; the device tool carries it):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.23.0 regex gguf==0.19.0 ml_dtypes==0.6.0 \
#     starlette anyio sniffio httpx httpcore h11 idna certifi
# Must finish in under 8 minutes: every stage after the build has a timeout (sum 335 s, +30 s when an op test fails; the build takes 1-2 min).
# Writes logs, JSON and summary.md under $OUT (default /tmp/diffrt_device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/diffrt_device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo; echo "=== $1 (t=$(( $(date +%s) - t0 ))s)"; }
summary="$OUT/summary.md"
: >"$summary"
note() { echo "$1" | tee -a "$summary"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

if compgen -G ".whl/*.whl" >/dev/null; then
  stage "carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import transformers, gguf, ml_dtypes; print('transformers', transformers.__version__, 'gguf ok, ml_dtypes', ml_dtypes.__version__)"
fi

stage "build (CUDA module, sm_90, -j$(nproc))"
build_ok=0
if cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDIFFRT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPython_EXECUTABLE="$(command -v python3)" \
     >"$OUT/build.log" 2>&1 && cmake --build build-gpu -j "$(nproc)" >>"$OUT/build.log" 2>&1; then
  build_ok=1
  note "build: ok ($(( $(date +%s) - t0 ))s)"
  PYTHONPATH=python:${PYTHONPATH:-} python3 -c "import diffrt, diffrt._cuda as c; print('diffrt._cuda devices:', c.device_count(), c.device_name(0), 'cuda_available', diffrt.cuda_available())"
else
  note "build: FAILED (tail of build.log below)"; tail -30 "$OUT/build.log"
fi

run_tests() {  # name, timeout, pytest -k expression
  stage "GPU tests: $1"
  PYTHONPATH=python:${PYTHONPATH:-} timeout "$2" python3 -m pytest tests/python/test_cuda.py -q -m gpu -rfE \
    -p no:cacheprovider -k "$3" >"$OUT/gpu_tests_$1.log" 2>&1
  local rc=$?
  tail -25 "$OUT/gpu_tests_$1.log"
  note "tests $1: rc=$rc, $(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$OUT/gpu_tests_$1.log" | tail -1)"
  [ $rc -eq 124 ] && note "tests $1: TIMED OUT after $2 s"
  if [ "$1" = ops ] && [ $rc -ne 0 ] && [ $rc -ne 124 ]; then
    # Asynchronous kernel faults surface at a later call; with blocking launches the failing kernel
    # is the one named by the error (every launch is checked). Only costs time when something failed.
    stage "GPU tests: ops again, first failure only, CUDA_LAUNCH_BLOCKING=1"
    CUDA_LAUNCH_BLOCKING=1 PYTHONPATH=python:${PYTHONPATH:-} timeout 30 python3 -m pytest tests/python/test_cuda.py \
      -q -x -m gpu -p no:cacheprovider -k "$3" >"$OUT/gpu_tests_ops_blocking.log" 2>&1
    grep -E "Error|error|assert" "$OUT/gpu_tests_ops_blocking.log" | head -12
  fi
}
if [ $build_ok = 1 ]; then
  OPS="gemm or norm_activation or rope or attention or router or grouped or token_stats or acceptance"
  run_tests ops 45 "$OPS"
  run_tests engine 90 "not ($OPS)"
fi

stage "benchmark: transformers reference (full-size shapes, random bf16 weights)"
PYTHONPATH=python:${PYTHONPATH:-} timeout 100 python3 tools/bench_gpu.py --size full --engine transformers \
  --out "$OUT/bench_ref.json" 2>&1 | grep -v -i warn | tee "$OUT/bench_ref.log" | tail -6
note "transformers bench: rc=${PIPESTATUS[0]}"

if [ $build_ok = 1 ]; then
  stage "benchmark: diffrt CUDA engine (same shapes, random bf16 weights made on the device)"
  PYTHONPATH=python:${PYTHONPATH:-} timeout 100 python3 tools/bench_gpu.py --size full --engine diffrt --steps 4 \
    --ref "$OUT/bench_ref.json" --out "$OUT/bench_gpu.json" 2>&1 | grep -v -i warn | tee "$OUT/bench.log" | tail -8
  note "diffrt bench: rc=${PIPESTATUS[0]}"
fi

stage "summary"
note "elapsed: $(( $(date +%s) - t0 ))s"
grep -h '^|' "$OUT/bench.log" 2>/dev/null >>"$summary" || grep -h '^|' "$OUT/bench_ref.log" >>"$summary" 2>/dev/null
cat "$summary"
stage "done"
