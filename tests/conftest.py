"""Shared, session-scoped test artefacts: tiny DiffusionGemma checkpoints and transformers references.

Fixtures (all session-scoped factories; results are cached for the whole test run):
  tiny_checkpoint(name) -> Path      a checkpoint dir built by tools/make_tiny_model.py
  tiny_hf_model(name)   -> model     DiffusionGemmaForBlockDiffusion.from_pretrained(dir).eval()
  tiny_reference(name, prompt_len=12, n_canvas=2, seed=0, batch=1) -> dict[str, np.ndarray]
                                     tools/dump_reference.py output (key names in its docstring)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Named tiny configs: keyword overrides for make_tiny_model (defaults = spec Appendix A).
TINY_CONFIGS: dict[str, dict] = {
    # Appendix A: hidden 64, 4 layers s,f,s,f, W=8, canvas 16, vocab 512, fp32.
    "default": {},
    # 6 layers, transformers' 5 sliding : 1 full pattern; use with prompts longer than W=8.
    "long": dict(layers=6),
    # Full layers with a wider head and as many KV heads as the sliding layers.
    "geometry": dict(head_dim=16, global_head_dim=64, kv_heads=2, global_kv_heads=2, heads=4),
    "many_experts": dict(experts=16, top_k=4),
    # Nothing a power of two: hidden 96, 3 heads (1 KV head), head dims 24 / 48, vocab 300.
    "odd": dict(hidden=96, intermediate=160, moe_intermediate=48, heads=3, kv_heads=1, global_kv_heads=1,
                head_dim=24, global_head_dim=48, vocab=300),
    # bf16 storage, random weights conditioned like a trained model (decisive routing, unit logits).
    "bf16": dict(dtype="bfloat16", condition=True),
    # The "bf16" model's values in a float32 model (converted --type bf16: a BF16 file, model dtype f32).
    "bf16_values": dict(condition=True, bf16_values=True),
    # Default model in 3 safetensors shards + model.safetensors.index.json.
    "sharded": dict(shards=3),
    # Conditioned, with rows of 256 / 512 (multiples of Q8_0's 32 and of 256) ...
    "wide": dict(hidden=256, intermediate=512, moe_intermediate=64, condition=True),
    # ... and of 96 / 160 / 48 (48: no whole Q8_0 block, so the converter keeps those rows in F16).
    "odd_cond": dict(hidden=96, intermediate=160, moe_intermediate=48, heads=3, kv_heads=1, global_kv_heads=1,
                     head_dim=24, global_head_dim=48, vocab=300, condition=True),
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from make_tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in TINY_CONFIGS:
            raise KeyError(f"unknown tiny config {name!r}; known: {sorted(TINY_CONFIGS)}")
        if name not in built:
            built[name] = make_tiny_model(root / name, **TINY_CONFIGS[name])
        return built[name]

    return get


@pytest.fixture(scope="session")
def tiny_hf_model(tiny_checkpoint):
    from dump_reference import load_model

    models = {}

    def get(name: str):
        if name not in models:
            models[name] = load_model(tiny_checkpoint(name))
        return models[name]

    return get


@pytest.fixture(scope="session")
def tiny_reference(tiny_checkpoint, tiny_hf_model):
    from dump_reference import dump_reference

    dumps = {}

    def get(name: str, prompt_len: int = 12, n_canvas: int = 2, seed: int = 0, batch: int = 1):
        key = (name, prompt_len, n_canvas, seed, batch)
        if key not in dumps:
            dumps[key] = dump_reference(
                tiny_checkpoint(name), None, n_canvas, seed,
                prompt_len=prompt_len, batch=batch, model=tiny_hf_model(name),
            )
        return dumps[key]

    return get


# --- converted GGUF files ---------------------------------------------------------
@pytest.fixture(scope="session")
def converted(tiny_checkpoint, tmp_path_factory):
    """converted(name, out_type="auto") -> Path of tiny_checkpoint(name) converted once per session."""
    from diffrt.convert import convert

    root = tmp_path_factory.mktemp("converted")
    files: dict[tuple[str, str], Path] = {}

    def get(name: str, out_type: str = "auto") -> Path:
        if (name, out_type) not in files:
            path = root / f"{name}-{out_type}.gguf"
            convert(str(tiny_checkpoint(name)), str(path), out_type=out_type, progress=False)
            files[(name, out_type)] = path
        return files[(name, out_type)]

    return get
