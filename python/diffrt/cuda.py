"""The CUDA backend from Python.

    diffrt.cuda_available()                       # False without the module, a driver or a GPU; never raises
    m = diffrt.load(path, device="cuda")          # weights uploaded once (compute_type auto|f32|bf16|int8|int8-w8a16)
    s = m.session(batch=4)                        # the usual Session API, run on the GPU
    diffrt.cuda.generate(m, prompts, **params)    # the C++ generation loop, every step on the GPU
    diffrt.cuda.batch_engine(m, slots, ctx)       # the server's canvas batching on the GPU
    diffrt.cuda.random_model(config, "bf16")      # random weights made on the device (benchmarks)

The generation loop (runtime/generate.cpp) and the server's batch engine drive the session's
device-resident step: decoder pass + sampler replayed as a CUDA graph, with only [B, L] results
copied back per step. `Session._s.step(...)` / `time_steps(...)` run it directly (tools/bench_gpu.py).
"""

from __future__ import annotations


def cuda_available() -> bool:
    """True when diffrt was built with CUDA and a driver and at least one GPU are usable."""
    try:
        from . import _cuda
    except ImportError:
        return False
    try:
        return bool(_cuda.cuda_available())
    except Exception:  # noqa: BLE001 - a broken driver means "not available", never an import failure
        return False


def _module():
    if not cuda_available():
        raise ValueError("device='cuda': no CUDA device available (or diffrt was built without CUDA); use device='cpu'")
    from . import _cuda

    return _cuda


def load_engine(model):
    """The _cuda.Model for a diffrt.Model opened with device="cuda"."""
    return _module().Model.load(model.path, getattr(model, "requested_compute_type", "auto"))


def random_model(config: dict, dtype: str = "bf16", seed: int = 0):
    """A _cuda.Model with random weights of the given shape (keys as Model.config; head_dim /
    n_kv_head may be ints with global_head_dim / n_kv_head_full for the full layers)."""
    from . import _core

    concrete = [t for t in _core.compute_types("cuda") if t != "auto"]
    if dtype not in concrete:  # checked before asking for a device, so it is said without a GPU too
        raise ValueError(f"dtype must be one of {', '.join(concrete)}, got {dtype!r}")
    return _module().random_model(dict(config), dtype, int(seed))


def batch_engine(model, slots: int, max_context: int):
    """A _cuda.BatchEngine (the server's canvas batching) for a diffrt.Model opened with device="cuda"."""
    if getattr(model, "device", None) != "cuda":
        raise ValueError("diffrt.cuda.batch_engine: load the model with device='cuda'")
    return _module().BatchEngine(model.engine, int(slots), int(max_context))


def generate(model, prompts, *, seed: int = 0, tape=None, max_context: int | None = None, on_step=None,
             on_canvas=None, **params) -> dict:
    """Runs the C++ generation loop with a GPU session. prompts: list of token-id lists. params:
    max_new_tokens, steps, t_min, t_max, entropy_bound, stability_threshold, confidence_threshold,
    eos_ids, pad_id, self_cond_bf16. tape: dict with int32 arrays init/samples/renoise [n, B, L].
    on_step / on_canvas: called with the same event dicts as diffrt._core.generate (False cancels).
    Returns the same dict as diffrt._core.generate: {"tokens": [[...] per row], "steps": [...], ...}."""
    import numpy as np

    if getattr(model, "device", None) != "cuda":
        raise ValueError("diffrt.cuda.generate: load the model with device='cuda'")
    rows = [[int(t) for t in p] for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("prompts: expected a non-empty list of non-empty token lists")
    cfg = model.config
    L = int(cfg["canvas_length"])
    mnt = int(params.get("max_new_tokens") or cfg["sampler"]["max_new_tokens"])
    need = max(len(r) for r in rows) + -(-mnt // L) * L
    _cuda = _module()
    s = _cuda.Session(model.engine, len(rows), int(max_context or need))
    kw = {k: params[k] for k in ("max_new_tokens", "steps", "t_min", "t_max", "entropy_bound", "stability_threshold",
                                 "confidence_threshold", "eos_ids", "pad_id", "self_cond_bf16") if k in params}
    if tape is not None:
        for k in ("init", "samples", "renoise"):
            kw["tape_" + k] = np.ascontiguousarray(tape[k], dtype=np.int32)
    return s.generate(rows, seed=int(seed), on_step=on_step, on_canvas=on_canvas, **kw)
