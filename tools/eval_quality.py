#!/usr/bin/env python3
"""Quality of the CPU compute types against the exact f32 path on the same GGUF file (issue 5 item 6).

For each model and compute type (bf16, int8 = W8A8 + W8A16 self-conditioning product, int8-w8a8,
int8-w8a16), against compute_type f32 on the same file:
  - logits: ‖Δ‖/‖ref‖ and top-1 agreement of one denoising pass over a random canvas after each
    prompt, without and with self-conditioning (the f32 pass's logits as input);
  - acceptance trajectory with replayed tapes: generate() with the same recorded draws (a tape of
    random initial canvases, samples and renoise tokens from a fixed numpy seed) on both paths, so the
    only difference is the model's logits; per step the set of accepted positions is compared.
    Reported: fraction of steps with the identical accepted set (over the f32 run's steps; a run that
    stops at a different step counts the missing steps as different), and the mean fraction of steps
    before the first difference;
  - generation agreement: generate() with the same seed (the engine's own Philox draws, no tape):
    fraction of the raw new tokens equal to f32's, and of prompts whose whole output is identical.

    python tools/eval_quality.py [--model NAME=PATH ...] [--compute-types ...] [--prompts 6]
                                 [--canvases 2] [--json FILE]

PATH is a .gguf file or a Hugging Face checkpoint directory (converted once to a GGUF of its own
dtype under --work). Without --model: the conditioned tiny "bf16" model of tests/conftest.py and the
bench's conditioned "small" model (tools/bench.py), built under --work. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "python"))

PROMPTS = [
    "The quick brown fox",
    "Once upon a time there was a little robot who",
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "List three colours:",
    "In the beginning",
    "The weather today is",
    "A recipe for bread needs flour, water and",
]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def top1(a, b) -> float:
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def gguf_for(name: str, path: str, work: Path) -> str:
    if os.path.isfile(path):
        return path
    from diffrt.convert import convert

    out = work / f"{name}.gguf"
    if not out.exists():
        convert(path, str(out), out_type="auto", progress=False)
    return str(out)


def default_models(work: Path) -> dict[str, str]:
    import make_tiny_model as mtm

    models = {}
    tiny = work / "tiny-bf16"
    if not (tiny / "config.json").exists():
        mtm.make_tiny_model(tiny, dtype="bfloat16", condition=True)  # tests/conftest.py "bf16"
    models["tiny-bf16"] = str(tiny)
    import bench

    _, small = bench.prepare("small", Path(os.environ.get("DIFFRT_BENCH_DIR", "/tmp/diffrt-bench")))
    models["small"] = str(small)
    return models


def prompt_ids(model, i: int, V: int) -> list[int]:
    tok = model.tokenizer
    if tok is not None:
        return tok.encode(PROMPTS[i % len(PROMPTS)])
    return list(np.random.default_rng(100 + i).integers(3, V, size=12))


def logits_pass(model, prompts, seed=3):
    """[(logits, self-conditioned logits)] per prompt; self-conditioning input = f32's logits if given."""
    L, V = model.config["canvas_length"], model.config["n_vocab"]
    rng = np.random.default_rng(seed)
    out = []
    for ids in prompts:
        s = model.session(batch=1, max_context=len(ids) + L)
        s.encode(np.asarray([ids], np.int32))
        canvas = rng.integers(3, V, size=L, dtype=np.int32)
        a = s.denoise(canvas)
        out.append((canvas, s, a))
    return out


def trajectories(model, prompts, canvases, steps, tapes):
    runs = []
    for ids, tape in zip(prompts, tapes):
        acc = []
        r = model.generate(ids, max_new_tokens=canvases * model.config["canvas_length"], steps=steps, tape=tape,
                           on_step=lambda ev: acc.append(np.asarray(ev.accepted, np.uint8).copy()))
        runs.append((acc, list(r.steps)))
    return runs


def generations(model, prompts, canvases, steps):
    return [model.generate(ids, max_new_tokens=canvases * model.config["canvas_length"], steps=steps,
                           seed=1234 + i).raw_tokens for i, ids in enumerate(prompts)]


def evaluate(name, path, compute_types, n_prompts, canvases, steps, threads):
    import diffrt

    ref_model = diffrt.load(path, threads=threads, compute_type="f32")
    L, V = ref_model.config["canvas_length"], ref_model.config["n_vocab"]
    steps = steps or int(ref_model.config.get("sampler", {}).get("max_steps", 0) or 16)
    prompts = [prompt_ids(ref_model, i, V) for i in range(n_prompts)]
    rng = np.random.default_rng(7)
    n_tape = canvases * steps
    tapes = [{"init": rng.integers(3, V, size=(canvases, L)), "samples": rng.integers(3, V, size=(n_tape, L)),
              "renoise": rng.integers(3, V, size=(n_tape, L))} for _ in prompts]

    def measure(model):
        first = logits_pass(model, prompts)
        return first, trajectories(model, prompts, canvases, steps, tapes), generations(model, prompts, canvases, steps)

    ref_first, ref_traj, ref_gen = measure(ref_model)
    ref_sc = [s.denoise(c, self_cond_logits=a) for (c, s, a) in ref_first]
    rows = []
    for ct in compute_types:
        model = diffrt.load(path, threads=threads, compute_type=ct)
        first, traj, gen = measure(model)
        sc = [s.denoise(c, self_cond_logits=ra) for (c, s, _), (_, _, ra) in zip(first, ref_first)]
        e = [rel(a, ra) for (_, _, a), (_, _, ra) in zip(first, ref_first)]
        t = [top1(a, ra) for (_, _, a), (_, _, ra) in zip(first, ref_first)]
        e_sc = [rel(a, b) for a, b in zip(sc, ref_sc)]
        t_sc = [top1(a, b) for a, b in zip(sc, ref_sc)]
        same_steps, prefix = [], []
        for (acc, _), (racc, _) in zip(traj, ref_traj):
            eq = [i < len(acc) and np.array_equal(acc[i], racc[i]) for i in range(len(racc))]
            same_steps.append(float(np.mean(eq)))
            prefix.append((eq.index(False) if False in eq else len(eq)) / len(eq))
        tok_eq = [float(np.mean(np.asarray(g[0]) == np.asarray(rg[0]))) if len(g[0]) == len(rg[0]) else 0.0
                  for g, rg in zip(gen, ref_gen)]
        rows.append({
            "model": name, "compute_type": model.compute_type, "logits_rel_err": float(np.mean(e)),
            "top1": float(np.mean(t)), "sc_logits_rel_err": float(np.mean(e_sc)), "sc_top1": float(np.mean(t_sc)),
            "traj_same_steps": float(np.mean(same_steps)), "traj_prefix": float(np.mean(prefix)),
            "gen_token_agreement": float(np.mean(tok_eq)),
            "gen_identical": float(np.mean([g[0] == rg[0] for g, rg in zip(gen, ref_gen)])),
            "prompts": len(prompts), "canvas": L, "vocab": V, "steps": steps, "canvases": canvases,
        })
        r = rows[-1]
        print(f"{name:10s} {r['compute_type']:11s} logits {r['logits_rel_err']:.1e} top1 {r['top1']:.3f} | "
              f"sc {r['sc_logits_rel_err']:.1e} top1 {r['sc_top1']:.3f} | traj same {r['traj_same_steps']:.2f} "
              f"prefix {r['traj_prefix']:.2f} | gen tokens {r['gen_token_agreement']:.2f} "
              f"identical {r['gen_identical']:.2f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH (.gguf or checkpoint dir)")
    ap.add_argument("--compute-types", default="bf16,int8,int8-w8a8,int8-w8a16")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--canvases", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the file's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default="/tmp/diffrt-quality")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = dict(m.split("=", 1) for m in args.model) if args.model else default_models(work)
    rows = []
    for name, path in models.items():
        rows += evaluate(name, gguf_for(name, path, work), args.compute_types.split(","), args.prompts,
                         args.canvases, args.steps, args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
