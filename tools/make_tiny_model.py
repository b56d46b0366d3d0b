#!/usr/bin/env python3
"""Build a tiny random DiffusionGemma checkpoint with transformers 5.23.0.

The directory looks exactly like a real checkpoint: config.json (with per_layer_config),
model.safetensors (or shards + model.safetensors.index.json), generation_config.json,
tokenizer.json (byte-level BPE trained to exactly `vocab` entries), tokenizer_config.json with a
Gemma-style chat template.

Every weight that transformers initialises to a constant (norm weights, router scale and
per-expert scale, both stacks' layer_scalar buffers, the vision position table) is randomised, so a
runtime that ignores one of them fails its parity test. `condition=True` scales random weights the
way a trained model is scaled (see DESIGN.md "Beware random weights in low precision") so that
bf16 runs are not chaotic.

The output is deterministic given the arguments (same bytes on the same software stack).

    python tools/make_tiny_model.py OUT_DIR [--hidden 64 --layers 4 ...]
    from make_tiny_model import make_tiny_model; make_tiny_model(out_dir, layers=6)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

# Defaults = spec Appendix A.
DEFAULTS = dict(
    hidden=64,
    layers=4,
    heads=4,
    kv_heads=2,
    head_dim=16,
    global_head_dim=32,
    global_kv_heads=1,
    intermediate=128,
    experts=4,
    top_k=2,
    moe_intermediate=32,
    sliding_window=8,
    layer_types=None,  # None: s,f,s,f for 4 layers, else transformers' 5 sliding : 1 full
    canvas=16,
    vocab=512,
    dtype="float32",
    seed=0,
    shards=1,
    max_new_tokens=32,
    condition=False,
    bf16_values=False,  # float32 model whose every value is a bf16 number (parity of BF16 files in f32)
)

# Gemma-style special tokens at fixed ids.
SPECIAL_TOKENS = [
    "<pad>",  # 0
    "<eos>",  # 1
    "<bos>",  # 2
    "<unk>",  # 3
    "<mask>",  # 4
    "<start_of_turn>",  # 5
    "<end_of_turn>",  # 6
    "<start_of_thinking>",  # 7
    "<end_of_thinking>",  # 8
]
END_OF_TURN_ID = 6

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{%- if loop.first and system -%}{{ system + '\\n\\n' }}{%- endif -%}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

_ZEN_ROT13 = None  # filled lazily from the stdlib `this` module (stable text since Python 2.2)

_WORDS = (
    "the of and to in is it that was for on are as with his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which "
    "do their time if will way about many then them write would like so these her long make thing see "
    "him two has look more day could go come did number sound no most people my over know water than "
    "call first who may down side been now find any new work part take get place made live where after "
    "back little only round man year came show every good me give our under name very through just form "
    "sentence great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large spell add "
    "even land here must big high such follow act why ask men change went light kind off need house "
    "picture try us again animal point mother world near build self earth father head stand own page "
    "should country found answer school grow study still learn plant cover food sun four between state "
    "keep eye never last let thought city tree cross farm hard start might story saw far sea draw left "
    "late run while press close night real life few north open seem together next white children begin "
    "model token canvas diffusion encoder decoder layer expert router attention window sliding cache"
).split()


def _corpus() -> list[str]:
    """Deterministic English-like text: the Zen of Python plus seeded sentences from a word list."""
    import codecs
    import contextlib
    import io

    global _ZEN_ROT13
    if _ZEN_ROT13 is None:
        with contextlib.redirect_stdout(io.StringIO()):
            import this  # noqa: F401  (prints the Zen on first import)
        _ZEN_ROT13 = codecs.decode(this.s, "rot13")
    rng = random.Random(1234)  # fixed: the tokenizer depends only on the vocabulary size
    lines = _ZEN_ROT13.splitlines()
    for _ in range(4000):
        n = rng.randint(4, 14)
        s = " ".join(rng.choice(_WORDS) for _ in range(n))
        lines.append(s[0].upper() + s[1:] + rng.choice([".", ".", "?", "!", ","]))
    lines.append("0123456789 +-*/=()[]{}<>:;'\"\n\t")
    return lines


def build_tokenizer(vocab_size: int):
    """Byte-level BPE with the special tokens at ids 0..8, trained to exactly vocab_size entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab must be >= {len(SPECIAL_TOKENS) + 256} for a byte-level BPE, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"tokenizer trained to {tok.get_vocab_size()} entries, wanted {vocab_size}")
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)]
    )
    return tok


def _layer_types(cfg) -> list[str]:
    if cfg["layer_types"]:
        names = {"s": "sliding_attention", "sliding": "sliding_attention", "f": "full_attention",
                 "full": "full_attention", "sliding_attention": "sliding_attention",
                 "full_attention": "full_attention"}
        types = cfg["layer_types"]
        if isinstance(types, str):
            types = types.split(",")
        out = [names[t.strip()] for t in types]
        if len(out) != cfg["layers"]:
            raise ValueError(f"layer_types has {len(out)} entries for {cfg['layers']} layers")
        return out
    if cfg["layers"] == 4:
        # Appendix A: s,f,s,f (both kinds twice in a tiny model).
        return ["sliding_attention", "full_attention"] * 2
    return None  # transformers' default 5 sliding : 1 full, last forced full


def build_config(cfg):
    from transformers.models.diffusion_gemma.configuration_diffusion_gemma import DiffusionGemmaConfig

    text = dict(
        vocab_size=cfg["vocab"],
        hidden_size=cfg["hidden"],
        intermediate_size=cfg["intermediate"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kv_heads"],
        head_dim=cfg["head_dim"],
        global_head_dim=cfg["global_head_dim"],
        num_global_key_value_heads=cfg["global_kv_heads"],
        num_experts=cfg["experts"],
        top_k_experts=cfg["top_k"],
        moe_intermediate_size=cfg["moe_intermediate"],
        sliding_window=cfg["sliding_window"],
        layer_types=_layer_types(cfg),
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        patch_size=4,
        position_embedding_size=64,
        pooling_kernel_size=2,
    )
    return DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=cfg["canvas"])


def _randomise(model, cfg, gen) -> None:
    """Give every constant-initialised tensor random values; optionally condition like a trained model."""
    import torch

    def uniform_(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    with torch.no_grad():
        # Weights are tied between the stacks, so walking the decoder covers the encoder text weights.
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith(("norm.weight", "layernorm.weight", "layernorm_1.weight", "layernorm_2.weight")):
                uniform_(p, 0.5, 1.5)
            elif name.endswith(("router.scale", "router.per_expert_scale")):
                uniform_(p, 0.5, 1.5)
            elif name.endswith("position_embedding_table"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        dec = model.model.decoder
        enc = model.model.encoder.language_model
        for layer in dec.layers:
            uniform_(layer.layer_scalar, 0.5, 1.5)
        for layer in enc.layers:
            uniform_(layer.layer_scalar, 0.5, 1.5)  # drawn after the decoder's: different values
        if cfg["condition"]:
            tc = model.config.text_config
            for i, layer in enumerate(dec.layers):
                hd = tc.per_layer_config[i].head_dim
                # Attention scaling is 1.0; q/k norm weights carry 1/sqrt(hd) in trained models.
                layer.self_attn.q_norm.weight.mul_(hd**-0.25)
                layer.self_attn.k_norm.weight.mul_(hd**-0.25)
                # Random router scores are ~1e-2 apart: near ties flip on a bf16 ulp. Make them decisive.
                layer.router.proj.weight.mul_(300.0)
            # Tied LM head with std 0.02 gives logits of ~0.2 and argmax near-ties everywhere; trained
            # logits spread over several units. Inputs are RMS-normed, so only the logit scale changes.
            dec.embed_tokens.weight.mul_(25.0)


def _shard_size(model_dir_size: int, shards: int) -> int:
    return -(-model_dir_size // shards)


def make_tiny_model(out_dir, **overrides) -> Path:
    """Write a tiny checkpoint into out_dir (created; existing files overwritten) and return its Path."""
    import torch
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
        EntropyBoundSamplerConfig,
    )
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaForBlockDiffusion
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown tiny-model options: {sorted(unknown)}")
    cfg = {**DEFAULTS, **overrides}
    if cfg["dtype"] not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {cfg['dtype']!r}")
    for kv in ("kv_heads", "global_kv_heads"):
        if cfg[kv] and cfg["heads"] % cfg[kv]:
            raise ValueError(f"heads ({cfg['heads']}) must be a multiple of {kv} ({cfg[kv]})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg["seed"])
    config = build_config(cfg)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    _randomise(model, cfg, gen)
    dtype = getattr(torch, cfg["dtype"])
    if cfg["bf16_values"]:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(t.to(torch.bfloat16).to(t.dtype))
    model = model.to(dtype)
    model.config.dtype = dtype
    model.generation_config = DiffusionGemmaGenerationConfig(
        max_new_tokens=cfg["max_new_tokens"],
        max_denoising_steps=48,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        t_min=0.4,
        t_max=0.8,
        stability_threshold=1,
        confidence_threshold=0.005,
        bos_token_id=2,
        eos_token_id=[1, END_OF_TURN_ID],
        pad_token_id=0,
    )

    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    if cfg["shards"] <= 1:
        model.save_pretrained(out)
    else:
        _save_sharded(model, out, cfg["shards"])

    tok = build_tokenizer(cfg["vocab"])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=SPECIAL_TOKENS[5:],
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
        model_max_length=131072,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    # transformers 5 writes the template to chat_template.jinja only; older readers (and our converter)
    # look in tokenizer_config.json, so record it there too, with the BOS behaviour.
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc.update(add_bos_token=True, add_eos_token=False, chat_template=CHAT_TEMPLATE)
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")
    return out


def _save_sharded(model, out: Path, shards: int) -> None:
    """save_pretrained with a max_shard_size that yields exactly `shards` files (searched: tensors are atomic)."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    size = _shard_size(total, shards)
    for _ in range(200):
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, max_shard_size=size)
            n = len(list(Path(tmp).glob("model-*.safetensors")))
            if n == shards:
                for f in Path(tmp).iterdir():
                    shutil.copy2(f, out / f.name)
                return
        size = int(size * (1.03 if n > shards else 0.97)) + 1
    raise ValueError(f"could not split the model into exactly {shards} shards")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    for key, val in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if key == "condition":
            ap.add_argument(flag, action="store_true", help="scale random weights like a trained model")
        elif key == "layer_types":
            ap.add_argument(flag, default=None, help="comma list of sliding|full (or s|f)")
        elif key == "dtype":
            ap.add_argument(flag, default=val, choices=["float32", "bfloat16"])
        else:
            ap.add_argument(flag, type=type(val), default=val)
    args = vars(ap.parse_args(argv))
    out = make_tiny_model(args.pop("out_dir"), **args)
    print(out)


if __name__ == "__main__":
    main()
