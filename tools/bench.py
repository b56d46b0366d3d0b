#!/usr/bin/env python3
"""Per-denoising-step time of diffrt vs transformers 5.23.0 on the same weights, each engine in its own
process, alternating.

Every engine runs in a fresh process (thread pools and OpenMP of two engines in one process fight and
distort both), `--rounds` processes per engine, the order rotated each round so that load from other
jobs on the machine hits all engines alike. In each process: load, encode the same prompt, one
unconditioned step, then `--steps` timed self-conditioned decoder passes over a canvas of L tokens
(what every step but a canvas's first is). Reported per engine: the median over processes of each
process's median step, the fastest single step, the load average when each process started. Ratios
only mean something within one run (the machines are shared and noisy). Not a test: nothing here
asserts on speed.

    python tools/bench.py [--config small] [--threads N] [--steps 5] [--rounds 3] [--json out.json]
                          [--engines transformers:f32,diffrt:f32,diffrt:int8:q8_0,...]

Engines: `transformers:<f32|bf16>` (model.to(dtype)); `diffrt:<compute type>[:<file type>]`, the
checkpoint's f32 GGUF by default or its bf16 / q8_0 conversion (made once under --work);
`llamacpp:<file type>`, llama.cpp's DiffusionGemma PR build on the same weights (--llamacpp-bin,
--llamacpp-dir: see docs/perf.md for how its files were made). A llama.cpp step includes its CLI's
sampling (diffrt's and transformers' are decoder passes only) and it has no separate first step. Each diffrt
row also gets its first-step logits' error and top-1 agreement against diffrt f32 (transformers rows
against transformers f32), and its step's GEMM throughput (GEMM FLOPs of a step / step time) as a
fraction of this CPU's GEMM peak for that type, measured by another process in the same run
(tools/bench_gemm.py's timing at a step's shapes).

"small" = hidden 512, 8 layers, 16 experts top-4, vocab 32000, canvas 256, prompt 256, built with
tools/make_tiny_model.py (conditioned random weights) under --work (reused when present).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
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


ENGINES_DEFAULT = "transformers:f32,transformers:bf16,diffrt:f32,diffrt:bf16,diffrt:int8"


def engine_gguf(work: Path, config: str, spec: str) -> Path:
    """diffrt:<compute type>[:<file type>]: the GGUF that engine loads (f32 unless a file type is
    given; bf16 / q8_0 files are converted from the same checkpoint once, under --work)."""
    parts = spec.split(":")
    ftype = parts[2] if len(parts) > 2 else "f32"
    path = work / f"{config}-{ftype}.gguf"
    if not path.exists():
        from diffrt.convert import convert

        print(f"converting to {path} ...", flush=True)
        convert(str(work / config), str(path), out_type=ftype, progress=False)
    return path


def run_one(args) -> None:
    """Child process: one engine, its steps timed back to back; JSON on stdout's last line."""
    work = Path(args.work)
    ckpt = work / args.config
    cfg = json.loads((ckpt / "config.json").read_text())
    V, L = cfg["text_config"]["vocab_size"], cfg["canvas_length"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(9, V, size=(1, CONFIGS[args.config]["prompt"]), dtype=np.int64)
    canvas = rng.integers(0, V, size=(1, L), dtype=np.int64)
    kind, _, rest = args.one.partition(":")
    if kind == "llamacpp":
        print(json.dumps(run_llamacpp(args, rest)))
        return
    if kind == "gemm-peak":
        print(json.dumps({"gemm_peak": gemm_peak(rest, int(L))}))
        return
    if kind == "diffrt":
        ct = rest.split(":")[0]
        prefill, run, logits = setup_diffrt(engine_gguf(work, args.config, args.one), prompt, canvas, args.threads, ct)
    elif kind == "transformers":
        prefill, run, logits = setup_transformers(ckpt, prompt, canvas, args.threads, rest or "f32")
        logits = logits[0]
    else:
        raise SystemExit(f"unknown engine {args.one!r}")
    times = interleaved({"x": run}, args.steps, args.warmup)["x"]
    out = work / f"logits-{args.one.replace(':', '_')}.npy"
    np.save(out, np.asarray(logits, np.float32))
    print(json.dumps({"prefill_s": prefill, **times, "logits": str(out)}))


def run_llamacpp(args, ftype: str) -> dict:
    """llama.cpp's DiffusionGemma PR build (`llama-diffusion-cli`, prompt KV cache on, entropy-bound
    sampler with early stopping off, so exactly the asked steps run). Its log stamps every
    'diffusion step: k/S' line, printed right after a step, so consecutive stamps are one step apart:
    a decoder pass (self-conditioned on every step, the first included) and the CLI's own sampling."""
    d = Path(args.llamacpp_dir)
    n = args.warmup + args.steps + 1
    cmd = [args.llamacpp_bin, "-m", str(d / f"{args.config}-{ftype}.gguf"), "-p", (d / "prompt.txt").read_text(),
           "-t", str(args.threads), "-tb", str(args.threads), "-c", "1024", "-b", "1024", "-ub", "1024", "--seed", "0",
           "--diffusion-eb-max-steps", str(n), "--diffusion-eb-confidence", "0"]
    r = subprocess.run(cmd, check=False, capture_output=True)
    log = (r.stdout + r.stderr).decode("utf-8", "replace").replace("\r", "\n")
    if r.returncode != 0:
        raise SystemExit(f"llama-diffusion-cli failed:\n{log[-3000:]}")
    import re

    def stamp(s):
        m, sec, ms, us = s.split(".")
        return int(m) * 60 + int(sec) + int(ms) / 1e3 + int(us) / 1e6

    t = [stamp(m.group(1)) for m in re.finditer(r"(\d+\.\d+\.\d+\.\d+)\s+I\s+diffusion step: \d+/\d+", log)]
    if len(t) != n:
        raise SystemExit(f"llama-diffusion-cli logged {len(t)} steps, expected {n}")
    steps = [b - a for a, b in itertools.pairwise(t)]
    return {"step_s": steps[args.warmup:], "first_step_s": [], "prefill_s": float("nan")}


def spawn(args, spec: str) -> dict:
    cmd = [sys.executable, __file__, "--one", spec, "--config", args.config, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--work", args.work,
           "--llamacpp-bin", args.llamacpp_bin or "", "--llamacpp-dir", args.llamacpp_dir or ""]
    load = os.getloadavg()[0]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{spec} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["load_avg"] = [load, os.getloadavg()[0]]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="processes per engine, alternating")
    ap.add_argument("--engines", default=ENGINES_DEFAULT,
                    help="diffrt:<compute type>[:<file type f32|bf16|q8_0>], transformers:<f32|bf16>")
    ap.add_argument("--work", default=os.environ.get("DIFFRT_BENCH_DIR", "/tmp/diffrt-bench"))
    ap.add_argument("--json", default=None, help="write the results here (default: print only)")
    ap.add_argument("--llamacpp-bin", help="llama-diffusion-cli of llama.cpp's DiffusionGemma PR build (engine llamacpp:<file type>)")
    ap.add_argument("--llamacpp-dir", help="its GGUFs (<config>-<file type>.gguf: the same weights, converted by the "
                    "PR's converter) and prompt.txt (a prompt of the config's length in its tokenizer)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: run this engine only
    args = ap.parse_args(argv)
    if args.one:
        return run_one(args)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, _ = prepare(args.config, work)
    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e.startswith("diffrt:"):
            engine_gguf(work, args.config, e)
    import diffrt
    from diffrt import _core

    runs = {e: [] for e in engines}
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]  # a different engine goes first
        for e in order:
            runs[e].append(spawn(args, e))
            print(f"  round {r + 1}: {e:<24} step {np.median(runs[e][-1]['step_s']) * 1e3:8.1f} ms  "
                  f"(load {runs[e][-1]['load_avg'][0]:.2f})", flush=True)
    cts = sorted({e.split(":")[1] for e in engines if e.startswith("diffrt:")})
    peaks = {ct: spawn(args, f"gemm-peak:{ct}")["gemm_peak"] for ct in cts}

    L = json.loads((ckpt / "config.json").read_text())["canvas_length"]
    flops = step_gemm_flops(diffrt.load(str(work / f"{args.config}-f32.gguf")).config, int(L))
    ref = {"diffrt": "diffrt:f32", "transformers": "transformers:f32"}
    logits = {e: np.load(runs[e][-1]["logits"]) for e in engines if "logits" in runs[e][-1]}
    result = {"config": args.config, "model": CONFIGS[args.config]["model"], "threads": args.threads,
              "steps": args.steps, "rounds": args.rounds, "cpu": cpu_name(), "cpu_info": _core.cpu_info(),
              "step_gemm_flops": flops, "engines": {}}
    print(f"{args.config}: {args.threads} threads on {result['cpu']} (diffrt best path {_core.cpu_info()['path']}), "
          f"each engine in its own process, {args.rounds} alternating rounds of {args.steps} steps")
    print(f"  {'engine':<24} {'step ms':>9} {'fastest':>9} {'first':>9} {'prefill':>9}   GEMMs        vs its f32")
    for e in engines:
        per_proc = [float(np.median(x["step_s"])) for x in runs[e]]
        r = {"step_s_per_process": per_proc, "step_s": float(np.median(per_proc)),
             "step_s_min": float(min(min(x["step_s"]) for x in runs[e])),
             "first_step_s": float(np.median([np.median(x["first_step_s"]) if x["first_step_s"] else np.nan
                                              for x in runs[e]])),
             "prefill_s": float(np.median([x["prefill_s"] for x in runs[e]])),
             "load_avg": [x["load_avg"] for x in runs[e]]}
        kind, ct = e.split(":")[0], e.split(":")[1]
        line = (f"  {e:<24} {r['step_s'] * 1e3:9.1f} {r['step_s_min'] * 1e3:9.1f} {r['first_step_s'] * 1e3:9.1f} "
                f"{r['prefill_s'] * 1e3:9.1f}")
        if kind == "diffrt" and ct in peaks:
            r["gemm_gflops"] = flops / r["step_s"] / 1e9
            r["gemm_peak_gflops"] = peaks[ct]
            line += f"   {r['gemm_gflops']:4.0f}/{peaks[ct]:4.0f} = {r['gemm_gflops'] / peaks[ct]:4.0%}"
        base = ref.get(kind)
        if e != base and base in logits and e in logits:
            b = logits[base]
            r["logits_rel_diff_vs_f32"] = float(np.linalg.norm(logits[e] - b) / np.linalg.norm(b))
            r["top1_agreement_vs_f32"] = float(np.mean(logits[e].argmax(-1) == b.argmax(-1)))
            line += f"   {r['logits_rel_diff_vs_f32']:.1e}, top-1 {r['top1_agreement_vs_f32']:.3f}"
        result["engines"][e] = r
        print(line)
    if "diffrt:f32" in logits and "transformers:f32" in logits:
        d, t = logits["diffrt:f32"], logits["transformers:f32"]
        result["f32_logits_rel_diff_vs_transformers"] = float(np.linalg.norm(d - t) / np.linalg.norm(t))
        print(f"  diffrt f32 vs transformers f32 first-step logits: ‖Δ‖/‖ref‖ = "
              f"{result['f32_logits_rel_diff_vs_transformers']:.2e}")
    E = result["engines"]
    ratios = {}
    for a in [e for e in engines if e.startswith("diffrt:")]:
        for b in [e for e in engines if e.startswith(("transformers:", "llamacpp:"))]:
            ratios[f"{a} vs {b}"] = (E[b]["step_s"] / E[a]["step_s"], E[b]["step_s_min"] / E[a]["step_s_min"])
    fastest = lambda kind: min((e for e in engines if e.startswith(kind)), key=lambda e: E[e]["step_s"], default=None)
    fd, ft = fastest("diffrt:"), fastest("transformers:")
    result["ratios"] = ratios
    for k, (med, mn) in ratios.items():
        print(f"  {k:<48} {med:5.2f}x (medians of processes), {mn:5.2f}x (fastest steps)")
    if fd and ft:
        result["fastest"] = {"diffrt": fd, "transformers": ft, "ratio": E[ft]["step_s"] / E[fd]["step_s"]}
        print(f"  fastest diffrt ({fd}) vs fastest transformers ({ft}): {result['fastest']['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
