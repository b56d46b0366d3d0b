#!/usr/bin/env python3
"""Per-denoising-step time of diffrt (CPU, f32) vs transformers 5.23.0 (f32) on the same weights.

Both run in this one process, with the same thread count, their steps interleaved (so that other
load on the machine hits both alike), on the same
checkpoint (diffrt on its f32 GGUF conversion), after encoding the same prompt. A step is one
self-conditioned decoder pass over a canvas of L tokens (what every step but a canvas's first is);
the first (unconditioned) step is timed too. Prints the ratio and writes JSON. Not a test: nothing
here asserts on speed.

    python tools/bench.py [--config small] [--threads N] [--steps 5] [--json bench.json]
                          [--compute-types bf16,int8] [--hf-dtypes bf16]

--compute-types adds diffrt rows in those compute types (the same f32 GGUF, repacked at load: bf16,
or int8 quantised per row) and --hf-dtypes transformers rows in those dtypes (model.to), all in the
same interleaved loop. Each diffrt row also gets its logits' error and top-1 agreement against diffrt
f32, and its step's GEMM throughput (GEMM FLOPs of a step / step time) as a fraction of this CPU's
GEMM peak for that type measured in the same run (tools/bench_gemm.py's timing at a step's shapes).

"small" = hidden 512, 8 layers, 16 experts top-4, vocab 32000, canvas 256, prompt 256, built with
tools/make_tiny_model.py (conditioned random weights) under --work (reused when present).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "python"))

CONFIGS = {
    "small": {
        "model": {"hidden": 512, "layers": 8, "heads": 8, "kv_heads": 4, "head_dim": 64, "global_head_dim": 128,
                  "global_kv_heads": 2, "intermediate": 2048, "experts": 16, "top_k": 4, "moe_intermediate": 512,
                  "sliding_window": 512, "canvas": 256, "vocab": 32000, "condition": True},
        "prompt": 256,
    },
    "tiny": {"model": {}, "prompt": 12},  # spec Appendix A: a smoke run of this tool
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def prepare(config: str, work: Path) -> tuple[Path, Path]:
    import make_tiny_model as mtm
    from diffrt.convert import convert

    # The tiny-model tool trains its BPE tokenizer on a small corpus, which cannot reach 32k entries;
    # the benchmark needs only the model's vocab size, so the tokenizer stays small (the converter
    # pads the GGUF vocabulary up to the model's).
    train = mtm.build_tokenizer
    mtm.build_tokenizer = lambda vocab_size: train(min(vocab_size, 1024))
    make_tiny_model = mtm.make_tiny_model

    ckpt, gguf = work / config, work / f"{config}-f32.gguf"
    if not (ckpt / "config.json").exists():
        print(f"building {config} checkpoint in {ckpt} ...", flush=True)
        make_tiny_model(ckpt, **CONFIGS[config]["model"])
    if not gguf.exists():
        print(f"converting to {gguf} ...", flush=True)
        convert(str(ckpt), str(gguf), out_type="f32", progress=False)
    return ckpt, gguf


def interleaved(runs: dict, steps: int, warmup: int) -> dict:
    """Times every (name, with_sc) runner `steps` times, alternating between them so that load from
    other processes on the machine hits all of them alike. Returns name -> {first_step_s, step_s}."""
    out = {name: {"first_step_s": [], "step_s": []} for name in runs}
    for i in range(warmup + steps):
        for with_sc in (False, True):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run(with_sc)
                dt = time.perf_counter() - t0
                if i >= warmup:
                    out[name]["step_s" if with_sc else "first_step_s"].append(dt)
    return out


def setup_transformers(ckpt: Path, prompt: np.ndarray, canvas: np.ndarray, threads: int, dtype: str = "f32"):
    import torch
    from dump_reference import load_model
    from transformers import DynamicCache

    torch.set_num_threads(threads)
    model = load_model(ckpt)  # f32, sdpa, default experts backend (grouped_mm)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    cfg = model.config
    tc = cfg.get_text_config(decoder=True)
    enc, dec = model.model.encoder, model.model.decoder
    B, P = prompt.shape
    L = canvas.shape[1]
    ids = torch.as_tensor(prompt, dtype=torch.long)
    cv = torch.as_tensor(canvas, dtype=torch.long)
    with torch.no_grad():
        cache = DynamicCache(config=tc)
        pos = torch.arange(0, P, dtype=torch.int32)[None]
        masks = enc.create_masks_for_generate(config=cfg, inputs_embeds=torch.empty((B, P, 0)),
                                              attention_mask=torch.ones((B, P), dtype=torch.bool),
                                              past_key_values=cache, position_ids=pos)
        t0 = time.perf_counter()
        cache = enc(input_ids=ids, attention_mask=masks, past_key_values=cache, position_ids=pos).past_key_values
        prefill = time.perf_counter() - t0
        dpos = torch.arange(P, P + L, dtype=torch.int32)[None]
        dmask = dec.create_diffusion_decoder_attention_mask(config=cfg, inputs_embeds=cv.unsqueeze(-1),
                                                            past_key_values=cache,
                                                            decoder_attention_mask=torch.ones((B, P + L), dtype=torch.bool))

        def step(sc):
            return model(decoder_input_ids=cv, self_conditioning_logits=sc, decoder_attention_mask=dmask,
                         past_key_values=cache, decoder_position_ids=dpos).logits

        first = step(None)
    sc = (first / 0.8).to(torch.float32)

    def run(with_sc: bool):
        with torch.no_grad():
            step(sc if with_sc else None)

    return prefill, run, first.float().numpy()


def setup_diffrt(gguf: Path, prompt: np.ndarray, canvas: np.ndarray, threads: int, compute_type: str = "auto"):
    import diffrt

    model = diffrt.load(str(gguf), threads=threads, compute_type=compute_type)
    B, P = prompt.shape
    L = canvas.shape[1]
    s = model.session(batch=B, max_context=P + L)
    t0 = time.perf_counter()
    s.encode(prompt)
    prefill = time.perf_counter() - t0
    first = s.denoise(canvas)
    sc = first / np.float32(0.8)
    buf = np.empty_like(first)  # one logits buffer for every timed step, as the generate loop (C++) has

    def run(with_sc: bool):
        s.denoise(canvas, self_cond_logits=sc if with_sc else None, out=buf)

    return prefill, run, first


def step_gemm_flops(c: dict, tokens: int) -> float:
    """GEMM FLOPs of one self-conditioned denoising step from diffrt's resolved config (model.config):
    2 · tokens · weights each token multiplies (attention scores and values excluded)."""
    H, I, V, E = c["n_embd"], c["n_ff"], c["n_vocab"], c["n_expert"]
    nh, Ie, k = c["n_head"], c["n_ff_exp"], c["n_expert_used"]
    per_token = 2 * H * V + 3 * H * I  # LM head, probs · E, self-conditioning MLP
    for sliding, hd, kv in zip(c["is_sliding"], c["head_dim"], c["n_kv_head"]):
        per_token += 2 * H * nh * hd + H * kv * hd * (2 if sliding else 1)  # q, o; k (+ v on sliding layers)
        per_token += 3 * H * I + H * E + k * 3 * H * Ie  # dense MLP, router, top-k experts
    return 2.0 * tokens * per_token


def gemm_peak(compute_type: str, M: int) -> float:
    """This CPU's GEMM GFLOP/s (int8: GOP/s) for a compute type at a step's shapes (best of two)."""
    import bench_gemm
    from diffrt import _core

    rng = np.random.default_rng(0)
    best = 0.0
    for N, K in ((2048, 512), (512, 2048)):
        x = rng.standard_normal((M, K), dtype=np.float32)
        w_raw = rng.standard_normal((N, K), dtype=np.float32).view(np.uint8).reshape(N, -1)
        if compute_type == "f32":
            def fn(r, x=x, w_raw=w_raw, N=N, K=K):
                for _ in range(r):
                    _core._kernels.gemm(x, w_raw, "F32", N, K)
        else:
            p = _core._fast_gemm.Packed(w_raw, "F32", N, K, False, "int8" if compute_type.startswith("int8") else "bf16")

            def fn(r, p=p, x=x):
                p.gemm(x, "auto", r)
        best = max(best, bench_gemm.timed(fn, 3, 2.0 * M * N * K)[1])
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--work", default=os.environ.get("DIFFRT_BENCH_DIR", "/tmp/diffrt-bench"))
    ap.add_argument("--json", default=None, help="write the results here (default: print only)")
    ap.add_argument("--compute-types", default="bf16,int8", help="extra diffrt compute types ('' for none)")
    ap.add_argument("--hf-dtypes", default="bf16", help="extra transformers dtypes ('' for none)")
    args = ap.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, gguf = prepare(args.config, work)
    cfg = json.loads((ckpt / "config.json").read_text())
    V, L = cfg["text_config"]["vocab_size"], cfg["canvas_length"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(9, V, size=(1, CONFIGS[args.config]["prompt"]), dtype=np.int64)
    canvas = rng.integers(0, V, size=(1, L), dtype=np.int64)

    load_before = os.getloadavg()
    our_prefill, our_run, our_logits = setup_diffrt(gguf, prompt, canvas, args.threads)
    their_prefill, their_run, ref_logits = setup_transformers(ckpt, prompt, canvas, args.threads)
    runs = {"diffrt": our_run, "transformers": their_run}
    extra_logits, extra_prefill = {}, {}
    for ct in [c for c in args.compute_types.split(",") if c]:
        extra_prefill[f"diffrt-{ct}"], runs[f"diffrt-{ct}"], extra_logits[ct] = setup_diffrt(
            gguf, prompt, canvas, args.threads, ct)
    for dt in [d for d in args.hf_dtypes.split(",") if d]:
        extra_prefill[f"transformers-{dt}"], runs[f"transformers-{dt}"], _ = setup_transformers(
            ckpt, prompt, canvas, args.threads, dt)
    times = interleaved(runs, args.steps, args.warmup)
    ours = dict(prefill_s=our_prefill, **times["diffrt"])
    theirs = dict(prefill_s=their_prefill, **times["transformers"])
    from diffrt import _core

    med = lambda xs: float(np.median(xs))
    result = {
        "config": args.config, "model": CONFIGS[args.config]["model"], "prompt": int(prompt.shape[1]), "canvas": int(L),
        "threads": args.threads, "steps": args.steps, "cpu": cpu_name(), "cpu_info": _core.cpu_info(),
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "diffrt": ours, "transformers": theirs,
        "step_ratio": med(theirs["step_s"]) / med(ours["step_s"]),
        "first_step_ratio": med(theirs["first_step_s"]) / med(ours["first_step_s"]),
        "prefill_ratio": theirs["prefill_s"] / ours["prefill_s"],
        "logits_rel_diff": float(np.linalg.norm(our_logits - ref_logits[0]) / np.linalg.norm(ref_logits[0])),
    }
    import diffrt

    flops = step_gemm_flops(diffrt.load(str(gguf)).config, int(L))
    result["step_gemm_flops"] = flops
    result["extra"] = extra = {}
    for name, prefill in extra_prefill.items():
        extra[name] = dict(prefill_s=prefill, **times[name])
    for ct, logits in extra_logits.items():
        r = extra[f"diffrt-{ct}"]
        r["logits_rel_diff_vs_f32"] = float(np.linalg.norm(logits - our_logits) / np.linalg.norm(our_logits))
        r["top1_agreement_vs_f32"] = float(np.mean(logits.argmax(-1) == our_logits.argmax(-1)))
    for name, r in [("diffrt", ours)] + [(n, extra[n]) for n in extra if n.startswith("diffrt-")]:
        ct = name.split("-", 1)[1] if "-" in name else "f32"
        r["gemm_gflops"] = flops / med(r["step_s"]) / 1e9
        r["gemm_peak_gflops"] = gemm_peak(ct, int(L))
        r["gemm_fraction_of_peak"] = r["gemm_gflops"] / r["gemm_peak_gflops"]
    print(f"{args.config}: {args.threads} threads on {result['cpu']} (diffrt path {_core.cpu_info()['path']})")
    print(f"  step (self-conditioned): diffrt {med(ours['step_s'])*1e3:.1f} ms   transformers "
          f"{med(theirs['step_s'])*1e3:.1f} ms   ratio {result['step_ratio']:.2f}x")
    print(f"  first step:              diffrt {med(ours['first_step_s'])*1e3:.1f} ms   transformers "
          f"{med(theirs['first_step_s'])*1e3:.1f} ms   ratio {result['first_step_ratio']:.2f}x")
    print(f"  prefill ({prompt.shape[1]} tokens):    diffrt {ours['prefill_s']*1e3:.1f} ms   transformers "
          f"{theirs['prefill_s']*1e3:.1f} ms   ratio {result['prefill_ratio']:.2f}x")
    print(f"  first-step logits ‖Δ‖/‖ref‖ = {result['logits_rel_diff']:.2e}")
    print(f"  self-conditioned step, {flops / 1e9:.1f} GFLOP of GEMMs (int8: GOP):")
    for name, r in [("diffrt", ours), ("transformers", theirs)] + list(extra.items()):
        line = (f"    {name:>18}: {med(r['step_s'])*1e3:8.1f} ms (min {min(r['step_s'])*1e3:7.1f})"
                f"  {L / med(r['step_s']):7.0f} canvas tok/s")
        if "gemm_gflops" in r:
            line += (f"  GEMMs {r['gemm_gflops']:5.0f} GFLOP/s = {r['gemm_fraction_of_peak']:4.0%} of the measured "
                     f"{r['gemm_peak_gflops']:.0f}")
        if "logits_rel_diff_vs_f32" in r:
            line += f"  vs f32: logits {r['logits_rel_diff_vs_f32']:.1e}, top-1 {r['top1_agreement_vs_f32']:.3f}"
        print(line)
    for a, b in (("diffrt-bf16", "transformers-bf16"), ("diffrt-int8", "diffrt-bf16")):
        if a in extra and b in extra:
            # min as well as median: on a shared machine the fastest of a runner's steps is the one
            # least disturbed by other jobs (and by the other runners' lingering threads)
            print(f"    {a} vs {b}: {med(extra[b]['step_s']) / med(extra[a]['step_s']):.2f}x (medians), "
                  f"{min(extra[b]['step_s']) / min(extra[a]['step_s']):.2f}x (minima)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
