#!/usr/bin/env python3
"""Write a large synthetic DiffusionGemma checkpoint (random f32 weights, right names and shapes)
without building a torch model, to measure the converter's memory on multi-GB inputs.

    python tools/make_synthetic_checkpoint.py OUT_DIR [--layers 20 --hidden 1024 ...]
    /usr/bin/time -v diffrt convert OUT_DIR -o big.gguf --type bf16

Shards are written one at a time (each ~--shard-gb), so this tool's own memory is one shard. The
text weights only; the vision tower is omitted (the converter ignores it anyway).
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from tokenizers.models import BPE

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from diffrt.convert.diffusion_gemma import tensor_shapes


def config(a):
    types = [
        "full_attention" if (i + 1) % 6 == 0 or i == a.layers - 1 else "sliding_attention"
        for i in range(a.layers)
    ]
    width = len(str(a.layers - 1))  # transformers zero-pads the per-layer keys
    plc = {
        str(i).zfill(width): {"head_dim": a.global_head_dim, "num_key_value_heads": a.global_kv_heads}
        for i, t in enumerate(types)
        if t == "full_attention"
    }
    text = {
        "model_type": "diffusion_gemma_text",
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": a.head_dim,
        "per_layer_config": plc,
        "layer_types": types,
        "vocab_size": a.vocab,
        "num_experts": a.experts,
        "top_k_experts": a.top_k,
        "moe_intermediate_size": a.moe_intermediate,
        "sliding_window": 512,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "tie_word_embeddings": True,
        "use_bidirectional_attention": None,
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1e6, "rope_type": "proportional"},
            "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"},
        },
    }
    return {
        "architectures": ["DiffusionGemmaForBlockDiffusion"],
        "model_type": "diffusion_gemma",
        "canvas_length": 256,
        "dtype": "float32",
        "tie_word_embeddings": True,
        "text_config": text,
    }


def shapes(a, types):
    """{HF name: shape} of the text weights: the converter's own table (derived tensors left out)."""
    full = [t == "full_attention" for t in types]
    table = tensor_shapes(
        vocab=a.vocab,
        hidden=a.hidden,
        intermediate=a.intermediate,
        n_expert=a.experts,
        moe_intermediate=a.moe_intermediate,
        n_head=a.heads,
        layer_types=types,
        head_dims=[a.global_head_dim if f else a.head_dim for f in full],
        n_kv=[a.global_kv_heads if f else a.kv_heads for f in full],
        hd_full=a.global_head_dim,
    )
    return {hf: shape for _, _, hf, shape in table if hf is not None}


def tokenizer_json(vocab):
    # A trivial byte-level-ish BPE over single characters: enough for the converter's tokenizer keys.
    chars = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [chr(c) for c in range(32, 127)]
    tok = Tokenizer(BPE({c: i for i, c in enumerate(chars[:vocab])}, [], unk_token="<unk>"))
    return tok.to_str()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    for name, default in (
        ("layers", 20),
        ("hidden", 1024),
        ("intermediate", 2048),
        ("heads", 8),
        ("kv_heads", 4),
        ("head_dim", 128),
        ("global_head_dim", 256),
        ("global_kv_heads", 2),
        ("experts", 16),
        ("top_k", 4),
        ("moe_intermediate", 512),
        ("vocab", 32768),
    ):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=default)
    p.add_argument("--shard-gb", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    os.makedirs(a.out_dir, exist_ok=True)
    cfg = config(a)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out_dir, "tokenizer.json"), "w") as f:
        f.write(tokenizer_json(a.vocab))
    with open(os.path.join(a.out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "mask_token": "<mask>",
                "add_bos_token": True,
            },
            f,
        )

    rng = np.random.default_rng(a.seed)
    table = shapes(a, cfg["text_config"]["layer_types"])
    limit = int(a.shard_gb * (1 << 30))
    groups, cur, cur_bytes = [], [], 0
    for name, shape in table.items():
        nbytes = int(np.prod(shape)) * 4
        if cur and cur_bytes + nbytes > limit:
            groups.append(cur)
            cur, cur_bytes = [], 0
        cur.append(name)
        cur_bytes += nbytes
    groups.append(cur)
    weight_map = {}
    for k, names in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: rng.standard_normal(table[n], dtype=np.float32) * 0.02 for n in names}
        save_file(tensors, os.path.join(a.out_dir, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
        del tensors
        print(f"wrote {fname}", file=sys.stderr)
    total = sum(int(np.prod(s)) * 4 for s in table.values())
    with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"{len(table)} tensors, {total / 1e9:.2f} GB in {len(groups)} shards", file=sys.stderr)


if __name__ == "__main__":
    main()
