"""diffrt-only per-step benchmark that needs no transformers: a synthetic random checkpoint
(tools/make_synthetic_checkpoint.py) converted once to a bf16 GGUF, then every compute type loaded
from that same file. For machines where tools/bench.py cannot build its model (no transformers
5.23), e.g. a lent GPU host used for its AMX CPU. Random unconditioned weights: the logits error
printed is only a sanity check, not a quality figure (see tests/python/test_compute_types.py).

    python tools/bench_steps.py [--config small|medium] [--threads 16,2] [--compute-types f32,bf16,int8]
                                [--work DIR] [--json FILE]

A step is one self-conditioned decoder pass over a canvas of 256 tokens after a 256-token prompt
(median of --steps). Not a test: nothing here asserts on speed.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {  # make_synthetic_checkpoint.py arguments
    "small": "--layers 8 --hidden 512 --intermediate 2048 --heads 8 --kv-heads 4 --head-dim 64 --global-head-dim 128 "
    "--global-kv-heads 2 --experts 16 --top-k 4 --moe-intermediate 512 --vocab 32000",
    "medium": "--layers 12 --hidden 1024 --intermediate 4096 --heads 8 --kv-heads 4 --head-dim 128 "
    "--global-head-dim 256 --global-kv-heads 2 --experts 16 --top-k 4 --moe-intermediate 1024 --vocab 64000",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--threads", default=str(os.cpu_count()), help="comma-separated thread counts")
    ap.add_argument("--compute-types", default="f32,bf16,int8")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--work", default=os.environ.get("DIFFRT_BENCH_DIR", "/tmp/diffrt-bench"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import diffrt
    import make_synthetic_checkpoint
    from diffrt.convert import convert

    ckpt = os.path.join(args.work, f"synthetic-{args.config}")
    gguf = ckpt + "-bf16.gguf"
    if not os.path.exists(gguf):
        make_synthetic_checkpoint.main([ckpt] + CONFIGS[args.config].split())
        convert(ckpt, gguf, out_type="bf16", progress=False)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        ref = None
        for ct in args.compute_types.split(","):
            model = diffrt.load(gguf, threads=threads, compute_type=ct)
            L, V = model.config["canvas_length"], model.config["n_vocab"]
            rng = np.random.default_rng(0)
            s = model.session(batch=1, max_context=256 + L)
            s.encode(rng.integers(9, V, size=(1, 256)).astype(np.int32))
            canvas = rng.integers(0, V, size=(1, L)).astype(np.int32)
            first = s.denoise(canvas)
            sc = first / np.float32(0.8)
            ts = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                s.denoise(canvas, self_cond_logits=sc)
                ts.append(time.perf_counter() - t0)
            step = float(np.median(ts))
            ref = first if ref is None else ref
            row = {
                "config": args.config,
                "threads": threads,
                "compute_type": model.compute_type,
                "step_ms": step * 1e3,
                "canvas_tok_s": L / step,
                "logits_rel_diff_vs_first": float(np.linalg.norm(first - ref) / np.linalg.norm(ref)),
            }
            rows.append(row)
            print(
                f"{args.config} {threads:>3} threads {row['compute_type']:>5}: {row['step_ms']:8.1f} ms/step "
                f"{row['canvas_tok_s']:7.0f} canvas tok/s",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
