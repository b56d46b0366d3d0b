"""GPU benchmark of a full-size-shaped DiffusionGemma (random weights made on the device).

Measures, on one card, in one process run:
  - the card's ceilings: device-to-device copy bandwidth and a large bf16 matrix product;
  - the transformers 5.23.0 reference (bf16, sdpa attention, grouped_mm experts): per-denoising-step
    time at batch 1 and 4, taken as the difference of two generate() runs with different step counts
    (so the prefill and the commit cancel out; the sampler is included, stopping is off);
  - the HBM floor of one step: the bytes a step must read (every text weight, the tied embedding twice:
    self-conditioning product and LM head, plus the KV cache) over the measured copy bandwidth.
  - diffrt's CUDA engine (--engine diffrt, a separate process so the two models never share the card):
    the same shapes with random bf16 weights made on the device (diffrt.cuda.random_model), a prompt
    encoded, then the mean time of one device-resident denoising step (decoder pass, sampler,
    acceptance, renoise; self-conditioning on) replayed from a CUDA graph and, for comparison, launched
    on a plain stream; then the same with int8 weights (W8A16). --ref FILE.json (the transformers run) supplies the same card's floor and
    reference times for the combined table.

Usage: python tools/bench_gpu.py [--size full|small] [--out FILE.json] [--device cuda]
       python tools/bench_gpu.py --engine diffrt --ref REF.json [--out FILE.json]
"""

import argparse
import gc
import json
import math
import sys
import time

import torch

FULL = dict(hidden_size=2816, intermediate_size=2112, num_hidden_layers=30, num_attention_heads=16,
            num_key_value_heads=8, head_dim=256, global_head_dim=512, num_global_key_value_heads=2,
            num_experts=128, top_k_experts=8, moe_intermediate_size=704, sliding_window=1024,
            vocab_size=262144, max_position_embeddings=262144)
SMALL = dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
             num_key_value_heads=2, head_dim=128, global_head_dim=256, num_global_key_value_heads=1,
             num_experts=16, top_k_experts=4, moe_intermediate_size=256, sliding_window=128,
             vocab_size=32768, max_position_embeddings=8192)
TINY_VISION = dict(model_type="gemma4_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, head_dim=16, patch_size=4,
                   pooling_kernel_size=2, position_embedding_size=64)


def sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, dev, reps=3):
    """Median wall time of fn() in seconds (synchronised: each call is a whole generate())."""
    ts = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def ceilings(dev):
    out = {}
    if not dev.startswith("cuda"):
        return out
    n = 1 << 30  # 1 Gi bf16 elements = 2 GiB per buffer, well past L2
    a = torch.randn(n, device=dev, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    t = timed(lambda: [b.copy_(a) for _ in range(10)], dev) / 10
    out["copy_GBps"] = 2 * a.numel() * 2 / t / 1e9  # bytes read + written
    del a, b
    m = 8192
    x = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    y = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    t = timed(lambda: [x @ y for _ in range(10)], dev) / 10
    out["bf16_matmul_TFLOPs"] = 2 * m**3 / t / 1e12
    del x, y
    torch.cuda.empty_cache()
    return out


def build_model(size, dev, dtype):
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    text = dict(FULL if size == "full" else SMALL)
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=TINY_VISION, canvas_length=256)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = DiffusionGemmaForBlockDiffusion(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval(), cfg


def step_bytes(model, cfg, batch, prompt_len):
    """Bytes one denoising step must read: text weights once, the tied embedding a second time
    (self-conditioning product and LM head both read it), and the prefix KV cache."""
    seen, weights = set(), 0
    for name, p in model.named_parameters():
        if "vision" in name or "embed_vision" in name or p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        weights += p.numel() * p.element_size()
    tc = cfg.text_config
    emb = tc.vocab_size * tc.hidden_size * 2
    kv = 0
    for i, lt in enumerate(tc.layer_types):
        plc = tc.per_layer_config[i] if hasattr(tc, "per_layer_config") else tc
        hd, nkv = plc.head_dim, plc.num_key_value_heads
        t = prompt_len if lt == "full_attention" else min(prompt_len, tc.sliding_window - 1)
        kv += 2 * batch * nkv * t * hd * 2
    return weights, weights + emb + kv


def reference_step_time(model, cfg, dev, batch, prompt_len, n_lo=4, n_hi=16):
    V = cfg.text_config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(5, V, (batch, prompt_len), generator=g).to(dev)
    kw = dict(max_new_tokens=cfg.canvas_length, confidence_threshold=1e-30, stability_threshold=1,
              eos_token_id=None, pad_token_id=None)

    def run(n):
        with torch.inference_mode():
            model.generate(ids, max_denoising_steps=n, **kw)

    run(2)  # warm-up: kernels, allocator, cache shapes
    t_lo = timed(lambda: run(n_lo), dev)
    t_hi = timed(lambda: run(n_hi), dev)
    return (t_hi - t_lo) / (n_hi - n_lo), t_lo


def diffrt_config(size):
    """The benchmark shapes as a diffrt model config (diffrt.cuda.random_model)."""
    t = FULL if size == "full" else SMALL
    return dict(n_layer=t["num_hidden_layers"], n_embd=t["hidden_size"], n_ff=t["intermediate_size"],
                n_head=t["num_attention_heads"], n_vocab=t["vocab_size"], n_expert=t["num_experts"],
                n_expert_used=t["top_k_experts"], n_ff_exp=t["moe_intermediate_size"], head_dim=t["head_dim"],
                global_head_dim=t["global_head_dim"], n_kv_head=t["num_key_value_heads"],
                n_kv_head_full=t["num_global_key_value_heads"], canvas_length=256,
                sliding_window=t["sliding_window"], context_length=t["max_position_embeddings"])


def diffrt_main(args):
    """diffrt rows: per-step time of the device-resident step at each batch, graph and plain stream."""
    import diffrt
    import diffrt.cuda as dc
    import numpy as np
    from diffrt import _cuda

    if not diffrt.cuda_available():
        sys.exit("diffrt: CUDA not available (module not built, or no device)")
    ref = {}
    if args.ref:
        try:
            with open(args.ref) as f:
                ref = json.load(f)
        except (OSError, ValueError) as e:
            print(f"no reference results ({e}); diffrt rows only", flush=True)
    res = {k: ref[k] for k in ("card", "copy_GBps", "bf16_matmul_TFLOPs", "torch", "transformers") if k in ref}
    res.update(size=args.size, device=args.device, card=ref.get("card") or _cuda.device_name(0))
    ref_rows = {r["batch"]: r for r in ref.get("rows", []) if "error" not in r}
    cfg = diffrt_config(args.size)
    rng = np.random.default_rng(1)
    L, V = cfg["canvas_length"], cfg["n_vocab"]
    batches = [int(x) for x in args.batches.split(",")]
    rows = {b: dict(ref_rows.get(b, {"batch": b})) for b in batches}
    res["rows"] = [rows[b] for b in batches]

    def save():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1)

    # one model at a time on the card; int8 = W8A8 (the CPU's policy), int8-w8a16 last (the first to
    # go if the time limit cuts the run: rows are saved as they come)
    for dtype in ("bf16", "int8", "int8-w8a16"):
        t0 = time.perf_counter()
        try:
            model = dc.random_model(cfg, dtype, seed=0)
        except Exception as e:  # noqa: BLE001 - report, keep what was measured
            res[f"diffrt_{dtype}_error"] = f"{type(e).__name__}: {e}"[:300]
            print(json.dumps({dtype: res[f"diffrt_{dtype}_error"]}), flush=True)
            continue
        res[f"diffrt_{dtype}_build_s"] = time.perf_counter() - t0
        res[f"diffrt_{dtype}_weights_GB"] = model.weight_bytes / 1e9
        for b in batches:
            row = rows[b]
            s = None
            try:
                s = _cuda.Session(model, b, args.prompt_len + L)
                t0 = time.perf_counter()
                s.encode(rng.integers(5, V, (b, args.prompt_len)).astype(np.int32), [])
                row[f"diffrt_{dtype}_prefill_s"] = time.perf_counter() - t0
                s.random_canvas(0, 1)
                s.step(0, 0, 0.8, 1, 0.1, False, False, False)  # a canvas's first step: no self-conditioning
                row[f"diffrt_{dtype}_stream_step_ms"] = s.time_steps(args.steps, 0.8, 1, 0.1, False)
                try:
                    row[f"diffrt_{dtype}_step_ms"] = s.time_steps(args.steps, 0.8, 1, 0.1, True)
                    row[f"diffrt_{dtype}_graph"] = True
                except RuntimeError as e:  # graph capture failed: report the plain-stream time
                    row[f"diffrt_{dtype}_graph"] = False
                    row[f"diffrt_{dtype}_graph_error"] = str(e)[:300]
                    row[f"diffrt_{dtype}_step_ms"] = row[f"diffrt_{dtype}_stream_step_ms"]
                try:  # where the step's time goes (plain launches, an event around every op)
                    prof = s.profile_step(0.8, 1, 0.1, True)
                    row[f"diffrt_{dtype}_profile"] = [[n, round(t, 3), c] for n, t, c in prof]
                except RuntimeError as e:
                    row[f"diffrt_{dtype}_profile_error"] = str(e)[:300]
                ms = row[f"diffrt_{dtype}_step_ms"]
                row[f"diffrt_{dtype}_tokens_per_s_48steps"] = b * L / (48 * ms / 1e3)
                if "hbm_floor_ms" in row:
                    row[f"diffrt_{dtype}_over_floor"] = ms / row["hbm_floor_ms"]
                if "ref_bf16_step_ms" in row:
                    row[f"ref_over_diffrt_{dtype}"] = row["ref_bf16_step_ms"] / ms
            except Exception as e:  # noqa: BLE001 - report, keep the other rows
                row[f"diffrt_{dtype}_error"] = f"{type(e).__name__}: {e}"[:300]
            finally:
                s = None  # free the session's device buffers before the next one
            print(json.dumps({k: v for k, v in row.items()
                              if (k.startswith(f"diffrt_{dtype}") and not k.endswith("_profile")) or k == "batch"}),
                  flush=True)
            save()
        del model
        gc.collect()
    save()
    card = res.get("card", args.device)
    nan = math.nan

    def cell(r, key, fmt="{:.1f}"):
        return fmt.format(r[key]) if key in r else ("error" if any(k.endswith("_error") for k in r) else "n/a")

    print("\n| card | batch | HBM floor ms | transformers bf16 step ms | diffrt bf16 step ms (graph) | diffrt bf16 "
          "stream ms | diffrt int8 step ms (graph) | diffrt int8-w8a16 step ms | bf16 / floor | transformers / "
          "diffrt bf16 | int8 speed-up | diffrt bf16 tok/s @48 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for b in batches:
        r = rows[b]
        both = "diffrt_int8_step_ms" in r and "diffrt_bf16_step_ms" in r
        sp = r["diffrt_bf16_step_ms"] / r["diffrt_int8_step_ms"] if both else nan
        print(f"| {card} | {b} | {r.get('hbm_floor_ms', nan):.1f} | {r.get('ref_bf16_step_ms', nan):.1f} | "
              f"{cell(r, 'diffrt_bf16_step_ms')}{'' if r.get('diffrt_bf16_graph', True) else ' (no graph)'} | "
              f"{cell(r, 'diffrt_bf16_stream_step_ms')} | {cell(r, 'diffrt_int8_step_ms')} | "
              f"{cell(r, 'diffrt_int8-w8a16_step_ms')} | "
              f"{cell(r, 'diffrt_bf16_over_floor', '{:.2f}')} | {cell(r, 'ref_over_diffrt_bf16', '{:.2f}')} | "
              f"{sp:.2f} | {cell(r, 'diffrt_bf16_tokens_per_s_48steps', '{:.0f}')} |")
    for b in batches:  # the step's op breakdown, bf16 and int8
        for dtype in ("bf16", "int8"):
            prof = rows[b].get(f"diffrt_{dtype}_profile")
            if prof:
                total = sum(t for _, t, _ in prof) or math.nan
                print(f"\n| batch {b}, {dtype}: op | ms | share | calls |\n|---|---|---|---|")
                for name, t, c in prof[:12]:
                    print(f"| {name} | {t:.2f} | {100 * t / total:.0f}% | {c} |")
    for b in batches:
        errs = {k: v for k, v in rows[b].items() if k.endswith("_error")}
        if errs:
            print(f"batch {b} errors: {errs}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["full", "small"], default="full")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--engine", choices=["transformers", "diffrt"], default="transformers")
    ap.add_argument("--ref", default=None, help="--engine diffrt: the transformers run's JSON (same card)")
    ap.add_argument("--steps", type=int, default=5, help="--engine diffrt: timed steps per measurement")
    args = ap.parse_args()
    if args.engine == "diffrt":
        return diffrt_main(args)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device")
    res = {"size": args.size, "device": dev, "torch": torch.__version__}
    if dev.startswith("cuda"):
        res["card"] = torch.cuda.get_device_name(0)
    import transformers
    res["transformers"] = transformers.__version__
    res.update(ceilings(dev))
    print(json.dumps(res), flush=True)

    t0 = time.perf_counter()
    model, cfg = build_model(args.size, dev, torch.bfloat16)
    res["build_s"] = time.perf_counter() - t0
    res["experts_implementation"] = getattr(model.config.text_config, "_experts_implementation", None)
    res["attn_implementation"] = model.config._attn_implementation
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        w, need = step_bytes(model, cfg, b, args.prompt_len)
        try:
            step, t_lo = reference_step_time(model, cfg, dev, b, args.prompt_len)
        except torch.OutOfMemoryError as e:  # report, do not die: the other rows still count
            rows.append({"batch": b, "error": f"OOM: {e}"[:200]})
            continue
        row = {"batch": b, "prompt_len": args.prompt_len, "weights_GB": w / 1e9, "step_bytes_GB": need / 1e9,
               "ref_bf16_step_ms": step * 1e3, "ref_tokens_per_s_48steps": b * cfg.canvas_length / (48 * step)}
        if "copy_GBps" in res:
            floor = need / (res["copy_GBps"] * 1e9 / 2)  # reads only: half the copy's bytes moved per second
            row["hbm_floor_ms"] = floor * 1e3
            row["ref_over_floor"] = step / floor
        rows.append(row)
        print(json.dumps(row), flush=True)
    res["rows"] = rows
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print("\n| card | batch | weights GB | step reads GB | HBM floor ms | transformers bf16 step ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {res.get('card', dev)} | {r['batch']} | {r['error']} |")
            continue
        print(f"| {res.get('card', dev)} | {r['batch']} | {r['weights_GB']:.1f} | {r['step_bytes_GB']:.1f} | "
              f"{r.get('hbm_floor_ms', math.nan):.1f} | {r['ref_bf16_step_ms']:.1f} | "
              f"{r.get('ref_over_floor', math.nan):.2f} |")


if __name__ == "__main__":
    main()
