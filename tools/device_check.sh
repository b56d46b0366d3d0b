#!/usr/bin/env bash
# One prepared GPU check (run on a machine with an NVIDIA GPU; see docs/perf.md for results):
#   1. build the package with the CUDA module, 2. run the GPU tests, 3. benchmark a full-size-shaped
#   DiffusionGemma (random weights made on the device) against transformers on the same card.
# Wheels that the machine lacks (transformers==5.23.0, regex) travel in .whl/ (see docs/perf.md).
# Must finish in under 8 minutes. Writes logs and JSON under $OUT (default /tmp/diffrt_device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/diffrt_device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo; echo "=== $1 (t=$(( $(date +%s) - t0 ))s)"; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

if compgen -G ".whl/*.whl" >/dev/null; then
  stage "carried wheels"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import transformers; print('transformers', transformers.__version__)"
fi

stage "build (CUDA module, sm_90)"
if DIFFRT_CUDA=ON tools/dev_build.sh build-gpu -DCMAKE_CUDA_ARCHITECTURES=90 >"$OUT/build.log" 2>&1; then
  echo "build ok"
  PYTHONPATH=python:${PYTHONPATH:-} python3 -c "import diffrt._cuda as c; print('diffrt._cuda devices:', c.device_count(), c.device_name(0))"
else
  echo "build FAILED (tail of $OUT/build.log):"; tail -20 "$OUT/build.log"
fi

stage "GPU tests"
PYTHONPATH=python:${PYTHONPATH:-} timeout 180 python3 -m pytest tests -q -m gpu -p no:cacheprovider 2>&1 \
  | tee "$OUT/gpu_tests.log" | tail -15

stage "benchmark (full-size shapes, random bf16 weights)"
PYTHONPATH=python:${PYTHONPATH:-} timeout 300 python3 tools/bench_gpu.py --size full --out "$OUT/bench_gpu.json" 2>&1 \
  | grep -v -i warn | tee "$OUT/bench.log" | tail -25
stage "done"
