#!/usr/bin/env python3
"""Dump transformers reference tensors of a DiffusionGemma checkpoint for parity tests.

The encoder and decoder are called exactly as `DiffusionGemmaGenerationMixin.generate` calls them
(same mask helpers, DynamicCache built from the text config, int32 position ids): the prompt is
prefilled at positions 0..P-1; canvas c is denoised at positions P+c*L .. P+c*L+L-1 against the cache;
then its commit is encoded at those same positions before canvas c+1. Instead of sampling, each
canvas is a fixed seeded random canvas and the commit is the argmax of the self-conditioned pass.

Keys of the returned dict / .npz (B = batch, P = prompt length, L = canvas length, V = vocab,
H = hidden, kv_i / hd_i = KV heads / head dim of layer i, T_c = cache length after enc{c}:
T_0 = P, T_c = P + c*L; a sliding layer holds min(T_c, W-1) entries):

  prompt_ids          int64 [B, P]     the prompt
  canvas_length       int64 []         L
  n_canvas            int64 []         C
  enc{c}.ids          int64 [B, n]     tokens encoded by encoder pass c (c=0: prompt; c>0: dec{c-1}.commit)
  enc{c}.pos          int64 [n]        their absolute positions
  enc{c}.embed        f32 [B, n, H]    scaled embeddings fed to encoder layer 0
  enc{c}.layer{i}.out f32 [B, n, H]    encoder layer i output (after layer_scalar)
  enc{c}.layer{i}.k   f32 [B, kv_i, S, hd_i]  cache keys after pass c (post k_norm + RoPE), S as held
  enc{c}.layer{i}.v   f32 [B, kv_i, S, hd_i]  cache values after pass c (post v_norm)
  enc{c}.seq_len      int64 []         cache.get_seq_length() after pass c (= T_c)
  dec{c}.canvas       int64 [B, L]     the fixed random canvas (torch.Generator seeded seed*1000+c)
  dec{c}.pos          int64 [L]        canvas positions T_c .. T_c+L-1
  dec{c}.logits       f32 [B, L, V]    soft-capped logits, no self-conditioning (first step)
  dec{c}.sc_logits_in f32 [B, L, V]    self-conditioning input: dec{c}.logits / T at step N (T = t_max),
                                       via transformers' LinearTemperatureScheduleLogitsProcessor,
                                       cast to the embedding dtype (as generate() does)
  dec{c}.logits_sc    f32 [B, L, V]    logits for the same canvas with sc_logits_in
  dec{c}.commit       int64 [B, L]     argmax(dec{c}.logits_sc) (or of dec{c}.logits with
                                       commit_from="logits"): what enc{c+1} encodes
  dec{c}.input        f32 [B, L, H]    decoder layer-0 input (self_conditioning output), no-SC pass
  dec{c}.layer{i}.out f32 [B, L, H]    decoder layer i output, no-SC pass
  dec{c}.norm         f32 [B, L, H]    decoder final norm output, no-SC pass
  dec{c}.sc.input / dec{c}.sc.layer{i}.out / dec{c}.sc.norm   the same for the self-conditioned pass

The cache dumped as enc{c} is the one dec{c} reads. bf16 checkpoints run in bf16 and are dumped as
f32 (exact). Torch runs with a fixed thread count (default 1) for reproducible matmuls.

    python tools/dump_reference.py CKPT OUT.npz [--prompt-len 12 --canvases 2 --seed 0 --batch 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def default_prompt(prompt_len: int, vocab_size: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """Deterministic prompt ids [batch, prompt_len], avoiding the special ids 0..8."""
    rng = np.random.default_rng(seed)
    return rng.integers(9, vocab_size, size=(batch, prompt_len), dtype=np.int64)


def _f32(t) -> np.ndarray:
    import torch

    return t.detach().to(torch.float32).cpu().numpy().copy()


def load_model(ckpt_dir, attn_implementation: str = "sdpa"):
    """The HF model in its stored dtype, eval mode."""
    import json

    import torch
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaForBlockDiffusion

    stored = json.loads((Path(ckpt_dir) / "config.json").read_text()).get("dtype", "float32")
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(
        ckpt_dir, dtype=getattr(torch, stored), attn_implementation=attn_implementation
    )
    return model.eval()


def dump_reference(
    ckpt_dir,
    prompt_ids=None,
    n_canvas: int = 2,
    seed: int = 0,
    *,
    prompt_len: int = 12,
    batch: int = 1,
    threads: int = 1,
    model=None,
    attn_implementation: str = "sdpa",
    commit_from: str = "logits_sc",
) -> dict[str, np.ndarray]:
    """Run the encoder/decoder passes described in the module docstring; return name -> array.

    commit_from: "logits_sc" (default) or "logits": which pass's argmax is committed and encoded
    next (with max_denoising_steps=1, generate() commits argmax(dec{c}.logits)).
    """
    import torch
    from transformers import DynamicCache
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        LinearTemperatureScheduleLogitsProcessor,
    )

    if commit_from not in ("logits", "logits_sc"):
        raise ValueError(f"commit_from must be 'logits' or 'logits_sc', got {commit_from!r}")
    if n_canvas < 1:
        raise ValueError(f"n_canvas must be >= 1, got {n_canvas}")
    torch.set_num_threads(threads)
    if model is None:
        model = load_model(ckpt_dir, attn_implementation)
    cfg = model.config
    tc = cfg.get_text_config(decoder=True)
    V, L, n_layers = tc.vocab_size, cfg.canvas_length, tc.num_hidden_layers
    if prompt_ids is None:
        prompt_ids = default_prompt(prompt_len, V, batch, seed)
    prompt = torch.as_tensor(np.asarray(prompt_ids), dtype=torch.long)
    if prompt.ndim == 1:
        prompt = prompt[None]
    B, P = prompt.shape
    if prompt.min() < 0 or prompt.max() >= V:
        raise ValueError(f"prompt ids must lie in [0, {V})")

    gcfg = model.generation_config
    n_steps = gcfg.max_denoising_steps or 48
    t_min = 0.4 if gcfg.t_min is None else gcfg.t_min
    t_max = 0.8 if gcfg.t_max is None else gcfg.t_max
    temperature = LinearTemperatureScheduleLogitsProcessor(t_min, t_max, n_steps)
    emb_dtype = model.model.decoder.embed_tokens.weight.dtype

    encoder = model.model.encoder
    decoder = model.model.decoder
    out: dict[str, np.ndarray] = {
        "prompt_ids": prompt.numpy().copy(),
        "canvas_length": np.array(L, dtype=np.int64),
        "n_canvas": np.array(n_canvas, dtype=np.int64),
    }

    # Forward hooks record intermediates under the current prefix.
    rec: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_mod, _inp, output):
            rec[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        return fn

    handles = [encoder.language_model.embed_tokens.register_forward_hook(hook("enc.embed"))]
    for i, layer in enumerate(encoder.language_model.layers):
        handles.append(layer.register_forward_hook(hook(f"enc.layer{i}.out")))
    handles.append(decoder.self_conditioning.register_forward_hook(hook("dec.input")))
    for i, layer in enumerate(decoder.layers):
        handles.append(layer.register_forward_hook(hook(f"dec.layer{i}.out")))
    handles.append(decoder.norm.register_forward_hook(hook("dec.norm")))

    def take(kind: str, prefix: str) -> None:
        for k in sorted(rec):
            if k.startswith(kind + "."):
                out[prefix + k[len(kind) + 1 :]] = _f32(rec[k])
        rec.clear()

    cache = DynamicCache(config=tc)
    cur_len = 0
    enc_ids = prompt
    try:
        with torch.no_grad():
            for c in range(n_canvas):
                # Encoder pass: prefill (c = 0) or the commit of canvas c-1, as generate() does it.
                n = enc_ids.shape[1]
                enc_pos = torch.arange(cur_len, cur_len + n, dtype=torch.int32)[None]
                attn = torch.ones((B, cur_len + n), dtype=torch.bool)
                masks = encoder.create_masks_for_generate(
                    config=cfg,
                    inputs_embeds=torch.empty((B, n, 0), dtype=model.dtype),
                    attention_mask=attn,
                    past_key_values=cache,
                    position_ids=enc_pos,
                )
                rec.clear()
                cache = encoder(
                    input_ids=enc_ids, attention_mask=masks, past_key_values=cache, position_ids=enc_pos
                ).past_key_values
                cur_len += n
                out[f"enc{c}.ids"] = enc_ids.numpy().copy()
                out[f"enc{c}.pos"] = enc_pos[0].numpy().astype(np.int64)
                take("enc", f"enc{c}.")
                for i in range(n_layers):
                    out[f"enc{c}.layer{i}.k"] = _f32(cache.layers[i].keys)
                    out[f"enc{c}.layer{i}.v"] = _f32(cache.layers[i].values)
                out[f"enc{c}.seq_len"] = np.array(cache.get_seq_length(), dtype=np.int64)
                if cache.get_seq_length() != cur_len:
                    raise RuntimeError(f"cache length {cache.get_seq_length()} != {cur_len}")

                # Decoder passes over a fixed random canvas, without and with self-conditioning.
                gen = torch.Generator().manual_seed(seed * 1000 + c)
                canvas = torch.randint(0, V, (B, L), generator=gen)
                dec_pos = torch.arange(cur_len, cur_len + L, dtype=torch.int32)[None]
                dec_attn = torch.ones((B, cur_len + L), dtype=torch.bool)
                dec_masks = decoder.create_diffusion_decoder_attention_mask(
                    config=cfg,
                    inputs_embeds=canvas.unsqueeze(-1),
                    past_key_values=cache,
                    decoder_attention_mask=dec_attn,
                )

                def run(sc):
                    return model(
                        decoder_input_ids=canvas,
                        self_conditioning_logits=sc,
                        decoder_attention_mask=dec_masks,
                        past_key_values=cache,
                        decoder_position_ids=dec_pos,
                    ).logits

                rec.clear()
                logits = run(None)
                take("dec", f"dec{c}.")
                step = torch.tensor(n_steps, dtype=torch.int32)
                sc_in = temperature(None, logits, cur_step=step).to(emb_dtype)
                logits_sc = run(sc_in)
                take("dec", f"dec{c}.sc.")
                commit = (logits_sc if commit_from == "logits_sc" else logits).argmax(-1)
                out[f"dec{c}.canvas"] = canvas.numpy().copy()
                out[f"dec{c}.pos"] = dec_pos[0].numpy().astype(np.int64)
                out[f"dec{c}.logits"] = _f32(logits)
                out[f"dec{c}.sc_logits_in"] = _f32(sc_in)
                out[f"dec{c}.logits_sc"] = _f32(logits_sc)
                out[f"dec{c}.commit"] = commit.numpy().copy()
                if cache.get_seq_length() != cur_len:
                    raise RuntimeError("the decoder wrote to the cache")
                enc_ids = commit
    finally:
        for h in handles:
            h.remove()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt_dir")
    ap.add_argument("out_npz")
    ap.add_argument("--prompt-len", type=int, default=12)
    ap.add_argument("--prompt-ids", default=None, help="comma-separated ids (overrides --prompt-len)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--canvases", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    a = ap.parse_args(argv)
    prompt = None
    if a.prompt_ids:
        prompt = np.array([[int(x) for x in a.prompt_ids.split(",")]] * a.batch, dtype=np.int64)
    d = dump_reference(
        a.ckpt_dir, prompt, a.canvases, a.seed, prompt_len=a.prompt_len, batch=a.batch,
        threads=a.threads, attn_implementation=a.attn,
    )
    np.savez(a.out_npz, **d)
    print(f"{a.out_npz}: {len(d)} arrays")


if __name__ == "__main__":
    main()
