"""`diffrt show MODEL`: what a model file holds — architecture, sizes, parameters, tensor types,
sampler defaults, chat template. `show_model(path_or_model, out)` prints the full report; each
section is its own function so more views (--modelfile, --parameters, ...) can be added beside it."""

import math
import os
import sys
from collections import Counter

from ..gguf_names import ARCH, KEYS, TENSORS


def add_parser(sub):
    p = sub.add_parser("show", help="show information about a model")
    p.add_argument("model", metavar="MODEL", help="a store name or a .gguf model file")
    views = p.add_mutually_exclusive_group()
    for flag, what in VIEWS.items():
        views.add_argument(f"--{flag}", action="store_true", help=f"show only the {what}")
    p.set_defaults(func=run)


# One-section views (as `ollama show --<flag>`): flag -> what it shows.
VIEWS = {
    "modelfile": "effective Modelfile",
    "parameters": "sampler defaults as PARAMETERs",
    "template": "chat template",
    "system": "system prompt",
    "license": "license",
}


def show_view(path, view, name=None, out=None):
    """Print one of VIEWS for the model file at `path` (only its header is read)."""
    from .. import _core, model_info

    md = _core.GGUFFile(path).metadata()
    text = {
        "modelfile": lambda: model_info.modelfile_text(md, path, name),
        "parameters": lambda: model_info.parameters_text(md),
        "template": lambda: model_info.template(md),
        "system": lambda: model_info.system(md),
        "license": lambda: model_info.license_text(md),
    }[view]()
    if text:
        print(text.rstrip("\n"), file=out or sys.stdout)


def run(args):
    from ..store import looks_like_path, resolve

    path = resolve(args.model)
    name = None if looks_like_path(args.model) else args.model
    for view in VIEWS:
        if getattr(args, view):
            show_view(path, view, name)
            return 0
    show_model(path, sys.stdout)
    return 0


def _open(path_or_model):
    if isinstance(path_or_model, (str, os.PathLike)):
        from ..model import load

        return load(path_or_model)
    return path_or_model


def _fmt_count(n):
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def model_rows(model):
    md, k = model.metadata, KEYS
    embd = model.tensors.get(TENSORS["TOKEN_EMBD"])
    vocab = embd.shape[0] if embd is not None else len(md.get(k["TOKENIZER_TOKENS"], []))
    kv = md.get(k["HEAD_COUNT_KV"])
    pattern = md.get(k["SLIDING_WINDOW_PATTERN"]) or []
    n_swa = sum(1 for s in pattern if s)
    return [
        ("architecture", md.get(k["ARCHITECTURE"])),
        ("name", md.get(k["NAME"])),
        ("layers", f"{md.get(k['BLOCK_COUNT'])} ({n_swa} sliding, {len(pattern) - n_swa} full)"),
        ("hidden size", md.get(k["EMBEDDING_LENGTH"])),
        ("feed-forward length", md.get(k["FEED_FORWARD_LENGTH"])),
        ("attention heads", md.get(k["HEAD_COUNT"])),
        ("kv heads per layer", ",".join(map(str, kv)) if isinstance(kv, list) else kv),
        ("head dim (sliding/full)", f"{md.get(k['KEY_LENGTH_SWA'])}/{md.get(k['KEY_LENGTH'])}"),
        ("sliding window", md.get(k["SLIDING_WINDOW"])),
        (
            "experts (used)",
            (
                f"{md.get(k['EXPERT_COUNT'])} (top-{md.get(k['EXPERT_USED_COUNT'])}), "
                f"width {md.get(k['EXPERT_FEED_FORWARD_LENGTH'])}"
            ),
        ),
        ("vocabulary", vocab),
        ("canvas length", md.get(k["CANVAS_LENGTH"])),
        ("context length", md.get(k["CONTEXT_LENGTH"])),
    ]


def tensor_rows(model):
    # rope_freqs is derived from the config, not a learned parameter.
    params = sum(math.prod(t.shape) for n, t in model.tensors.items() if n != TENSORS["ROPE_FREQS"])
    counts, sizes = Counter(), Counter()
    for t in model.tensors.values():
        counts[t.type] += 1
        sizes[t.type] += t.nbytes
    rows = [("parameters", f"{_fmt_count(params)} ({params:,})"), ("tensors", len(model.tensors))]
    rows += [(f"  {ty}", f"{counts[ty]} tensors, {_fmt_bytes(sizes[ty])}") for ty in sorted(counts)]
    rows.append(
        ("file size", _fmt_bytes(os.path.getsize(model.path)) if getattr(model, "path", None) else "?")
    )
    return rows


def sampler_rows(model):
    md, k = model.metadata, KEYS
    eos = md.get(k["DIFFRT_EOS_IDS"])
    pad = md.get(k["DIFFRT_PAD_ID"], -1)
    return [
        ("max denoising steps", md.get(k["MAX_STEPS"])),
        (
            "temperature t_max → t_min",
            f"{md.get(k['T_MAX']):.4g} → {md.get(k['T_MIN']):.4g}"
            if md.get(k["T_MAX"]) is not None
            else None,
        ),
        ("entropy bound", md.get(k["ENTROPY_BOUND"])),
        ("stability threshold", md.get(k["STABILITY_THRESHOLD"])),
        ("confidence threshold", md.get(k["CONFIDENCE_THRESHOLD"])),
        ("max new tokens", md.get(k["DIFFRT_MAX_NEW_TOKENS"])),
        ("eos token ids", ",".join(map(str, eos)) if eos else "none"),
        ("pad token id", pad if pad is not None and pad >= 0 else "none"),
    ]


def template_rows(model):
    md, k = model.metadata, KEYS
    tmpl = md.get(k["CHAT_TEMPLATE"])
    mf = md.get(k["DIFFRT_MODELFILE"])
    return [
        ("chat template", f"yes ({len(tmpl)} chars)" if tmpl else "no"),
        ("embedded Modelfile", "yes" if mf else "no"),
    ]


def _print_section(out, title, rows):
    print(f"  {title}", file=out)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"    {label:<{width}}    {value if value is not None else '-'}", file=out)
    print(file=out)


def show_model(path_or_model, out=sys.stdout):
    model = _open(path_or_model)
    if model.metadata.get(KEYS["ARCHITECTURE"]) != ARCH:
        print(f"  (architecture {model.metadata.get(KEYS['ARCHITECTURE'])!r}: not {ARCH})", file=out)
    _print_section(out, "Model", model_rows(model))
    _print_section(out, "Tensors", tensor_rows(model))
    _print_section(out, "Sampler defaults", sampler_rows(model))
    _print_section(out, "Prompt", template_rows(model))
