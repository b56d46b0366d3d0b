"""GEMM microbenchmark of this CPU: GFLOP/s (int8: GOP/s) of diffrt's CPU GEMMs at a denoising
step's shapes, so a step's time can be read as a fraction of what the machine's kernels reach.

  f32          the engine's f32 GEMM (weights decoded per panel from their stored type)
  bf16-<path>  packed bf16 weights, bf16 activations, f32 accumulation (amx: tdpbf16ps, avx512: vdpbf16ps,
               avx2: both widened to f32, FMA)
  int8-<path>  W8A8 packed int8, per-token dynamic activation scales, int32 accumulation
               (amx: tdpbssd, avx512: vpdpbusd on u8-shifted activations, avx2: vpmaddubsw on |a|·sign(w, a))
  w8a16-<path> int8 weights held as bf16 with a row scale, run by the bf16 kernels

Each figure is 2·M·N·K over the median of `--reps` timed batches of calls (the activation
conversion of every call included), on every core (the bindings' thread pools). Paths the CPU
lacks are skipped (printed as "-").

Usage: python tools/bench_gemm.py [--shapes 256x512x512,...] [--reps 5] [--out FILE.json]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from diffrt import _core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import cpu_name  # tools/bench.py

DEFAULT_SHAPES = "256x512x512,256x2048x512,256x512x2048,256x32000x512"


def timed(fn, reps, flops):
    """Median seconds of one call; each timed batch runs enough calls to last >= 50 ms."""
    fn(1)
    t0 = time.perf_counter()
    fn(1)
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(0.05 / one))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(inner)
        ts.append((time.perf_counter() - t0) / inner)
    ts.sort()
    sec = ts[len(ts) // 2]
    return sec, flops / sec / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="MxNxK,... (y[M,N] = x[M,K] · W[N,K]ᵀ)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    fg = _core._fast_gemm
    kernels = getattr(_core, "_kernels", None)
    best = fg.best_path()
    paths = ["amx", "avx512", "avx2"]
    rng = np.random.default_rng(0)
    rows = []
    print(f"cpu: {cpu_name()}; best path: {best}; threads: {os.cpu_count()}")
    for spec in args.shapes.split(","):
        M, N, K = (int(v) for v in spec.lower().split("x"))
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        w_raw = w.view(np.uint8).reshape(N, -1)
        flops = 2.0 * M * N * K
        row = {"M": M, "N": N, "K": K}
        if kernels is not None:

            def f32(r, x=x, w_raw=w_raw, N=N, K=K):
                for _ in range(r):
                    kernels.gemm(x, w_raw, "F32", N, K)

            row["f32"] = timed(f32, args.reps, flops)[1]
        for kind in ("bf16", "int8", "w8a16"):
            p = fg.Packed(w_raw, "F32", N, K, False, kind)
            for path in paths:
                if p.path(path) != path:
                    continue  # this CPU lacks it: it would run a lower path
                row[f"{kind}-{path}"] = timed(
                    lambda r, p=p, path=path, x=x: p.gemm(x, path, r), args.reps, flops
                )[1]
        rows.append(row)

    cols = ["f32"] + [f"{k}-{p}" for k in ("bf16", "int8", "w8a16") for p in paths]
    cols = [c for c in cols if any(c in r for r in rows)]
    print(f"{'M x N x K':>20} " + " ".join(f"{c:>12}" for c in cols) + "   (GFLOP/s; int8: GOP/s)")
    for r in rows:
        shape = f"{r['M']}x{r['N']}x{r['K']}"
        print(f"{shape:>20} " + " ".join(f"{r[c]:12.0f}" if c in r else f"{'-':>12}" for c in cols))
    peak = {c: max(r.get(c, 0.0) for r in rows) for c in cols}
    print("peak measured: " + ", ".join(f"{c} {v:.0f}" for c, v in peak.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"cpu": cpu_name(), "best_path": best, "threads": os.cpu_count(), "rows": rows, "peak": peak},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
