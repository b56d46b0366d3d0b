"""Checkpoint → diffrt GGUF conversion. One converter class per architecture (diffusion_gemma.py);
REGISTRY maps the names a config.json may carry (`architectures` entries, `model_type`) to it.
Adding an architecture = one module + one registry line."""

import json
import os

from ..errors import ConfigError
from .diffusion_gemma import DiffusionGemmaConverter
from .writer import OUT_TYPES

# Names accepted for --type besides OUT_TYPES: "int8" writes Q8_0 (int8 values with one f16 scale
# per 32 weights), which compute_type "int8" loads and repacks per output row (docs/perf.md).
TYPE_ALIASES = {"int8": "q8_0"}

REGISTRY = {}
for _cls in (DiffusionGemmaConverter,):
    for _name in _cls.ARCHITECTURES + _cls.MODEL_TYPES:
        REGISTRY[_name] = _cls


def converter_for(checkpoint_dir):
    """The converter instance for a checkpoint directory, chosen from its config.json."""
    if not os.path.isdir(checkpoint_dir):
        raise ConfigError(f"{checkpoint_dir}: not a directory (expected a Hugging Face checkpoint)")
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: file not found (is {checkpoint_dir} a Hugging Face checkpoint?)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a JSON object")
    names = list(config.get("architectures") or []) + [config.get("model_type")]
    for name in names:
        if name in REGISTRY:
            return REGISTRY[name](checkpoint_dir)
    found = ", ".join(repr(n) for n in names if n) or "nothing"
    raise ConfigError(
        f"{path}: unsupported architecture (found {found}); diffrt converts {', '.join(sorted(REGISTRY))}"
    )


def convert(checkpoint_dir, out_path, out_type="auto", progress=True):
    """Convert a checkpoint directory to one GGUF file at out_path (written atomically)."""
    out_type = TYPE_ALIASES.get(out_type, out_type)
    if out_type not in OUT_TYPES:
        raise ValueError(
            f"unknown output type {out_type!r}; expected one of {', '.join(OUT_TYPES + tuple(TYPE_ALIASES))}"
        )
    return converter_for(checkpoint_dir).convert(out_path, out_type=out_type, progress=progress)


__all__ = ["OUT_TYPES", "REGISTRY", "TYPE_ALIASES", "convert", "converter_for"]
