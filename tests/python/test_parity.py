"""diffrt's CPU engine against transformers 5.23.0 (tools/dump_reference.py) on tiny models.

For every encoder pass (prefill, then commits) the KV cache of every layer, and for every canvas
the denoiser logits without and with self-conditioning, are compared as ‖Δ‖/‖ref‖.

f32 checkpoints: 1e-5 relative (the f32 path is the exact one; what remains is f32 rounding in a
different summation order, amplified ~2x per layer by the random tiny models' attention at
scaling 1.0 — measured 2e-6 .. 8e-6). Logits are checked twice: end to end (our own cache) and
teacher-forced (the reference cache loaded into the session), which isolates one decoder pass.
Exception, measured and stated: on "long" (6 layers) the third canvas (dec2, after two commits)
is checked teacher-forced only. There transformers f32 itself is 1.6e-5 away from a float64 run of
the same model (we are 1.3e-5 away from float64, and 1.07e-5 from transformers f32): the chaos of
random weights makes 1e-5 end to end unreachable for any f32 implementation that does not
reproduce MKL's summation order. Teacher-forced dec2 is 7.6e-6; the KV caches of all passes,
including both commits, are held to 1e-5 end to end.

bf16 checkpoint: diffrt computes in f32 on the bf16 weights while transformers rounds every
intermediate to bf16 (2^-8 relative per op). The model is conditioned like a trained one
(tools/make_tiny_model.py condition=True) so routing is decisive; we state the tolerance reached:
KV within 1.5e-2 and logits within 5e-2 relative (measured 7.5e-3 and 2.8e-2), i.e. a few bf16
ulps (2^-8 = 3.9e-3) accumulated over 4 layers.
"""

from __future__ import annotations

import diffrt
import numpy as np
import pytest

F32_TOL = 1e-5
BF16_KV_TOL = 1.5e-2
BF16_LOGITS_TOL = 5e-2

# (config, prompt length, canvases, canvases checked end to end): "long" prompts exceed the sliding
# window W = 8 and commit two canvases (enc1, enc2) before the last denoise.
CASES = [
    ("default", 12, 2, 2),
    ("long", 21, 3, 2),
    ("geometry", 12, 2, 2),
    ("many_experts", 12, 2, 2),
    ("odd", 12, 2, 2),
]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def teacher_forced_logits(model, ref, c, self_cond=False):
    """Logits of dec{c} from a session whose cache is the reference cache enc{c}."""
    B = ref["prompt_ids"].shape[0]
    s = model.session(batch=B)
    T = int(ref[f"enc{c}.seq_len"])
    for i in range(model.config["n_layer"]):
        for b in range(B):
            k = np.ascontiguousarray(ref[f"enc{c}.layer{i}.k"][b], dtype=np.float32)
            v = np.ascontiguousarray(ref[f"enc{c}.layer{i}.v"][b], dtype=np.float32)
            s._s._load_kv(i, b, T, k, v)
    return s.denoise(
        ref[f"dec{c}.canvas"], self_cond_logits=ref[f"dec{c}.sc_logits_in"] if self_cond else None
    )


def run_parity(model, ref, n_canvas, kv_tol, logits_tol, e2e_canvases=None):
    cfg = model.config
    e2e_canvases = n_canvas if e2e_canvases is None else e2e_canvases
    s = model.session(batch=ref["prompt_ids"].shape[0])
    worst = {"kv": 0.0, "logits": 0.0}
    for c in range(n_canvas):
        s.encode(ref[f"enc{c}.ids"])
        assert s.n_cached == int(ref[f"enc{c}.seq_len"])
        for i in range(cfg["n_layer"]):
            for b in range(s.batch):
                k, v = s._s._kv(i, b)
                rk = rel(k, ref[f"enc{c}.layer{i}.k"][b])
                rv = rel(v, ref[f"enc{c}.layer{i}.v"][b])
                assert rk <= kv_tol and rv <= kv_tol, f"enc{c} layer {i} row {b}: K {rk:.2e}, V {rv:.2e}"
                worst["kv"] = max(worst["kv"], rk, rv)
        canvas = ref[f"dec{c}.canvas"]
        for sc in (False, True):
            key = f"dec{c}.logits_sc" if sc else f"dec{c}.logits"
            r = rel(teacher_forced_logits(model, ref, c, sc), ref[key])
            assert r <= logits_tol, f"{key} (teacher-forced cache) {r:.2e}"
            worst["logits"] = max(worst["logits"], r)
            if c < e2e_canvases:
                logits = s.denoise(canvas, self_cond_logits=ref[f"dec{c}.sc_logits_in"] if sc else None)
                r = rel(logits, ref[key])
                assert r <= logits_tol, f"{key} (end to end) {r:.2e}"
                worst["logits"] = max(worst["logits"], r)
        assert s.n_cached == int(ref[f"enc{c}.seq_len"]), "denoise must leave the cache unchanged"
    return worst


@pytest.mark.parametrize("name,prompt_len,n_canvas,e2e", CASES)
def test_parity_f32(name, prompt_len, n_canvas, e2e, converted, tiny_reference):
    model = diffrt.load(converted(name))
    ref = tiny_reference(name, prompt_len=prompt_len, n_canvas=n_canvas)
    run_parity(model, ref, n_canvas, F32_TOL, F32_TOL, e2e)


def test_parity_f32_batch(converted, tiny_reference):
    # Two rows with different prompts in one session: rows are independent sequences.
    model = diffrt.load(converted("default"))
    ref = tiny_reference("default", prompt_len=10, n_canvas=2, batch=2)
    run_parity(model, ref, 2, F32_TOL, F32_TOL)


def test_parity_bf16_weights_in_f32(converted, tiny_reference):
    """BF16-stored weights in the f32 engine against transformers f32 on the same values, at the f32
    tolerance: unlike test_parity_bf16 this does not depend on which bf16 kernels torch has on
    this CPU, so it holds on every machine and every diffrt path."""
    path = converted("bf16_values", "bf16")
    model = diffrt.load(path, compute_type="f32")
    assert model.tensors["blk.0.attn_q.weight"].type == "BF16"
    ref = tiny_reference("bf16_values", prompt_len=12, n_canvas=2)
    run_parity(model, ref, 2, F32_TOL, F32_TOL)


def test_parity_bf16(converted, tiny_reference):
    import torch

    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        # Measured: without AVX-512 torch's bf16 path itself moves by 6.2e-2 on this model (the
        # reference changes, not diffrt); test_parity_bf16_weights_in_f32 covers these machines.
        pytest.skip(f"transformers' bf16 reference differs on a {torch.backends.cpu.get_cpu_capability()} CPU")
    # compute_type="f32": the f32 engine on bf16 weights ("auto" would pick the packed bf16 GEMMs on
    # a CPU with AVX512-BF16; those are checked against this path in their own tests).
    model = diffrt.load(converted("bf16"), compute_type="f32")
    assert model.compute_type == "f32"
    ref = tiny_reference("bf16", prompt_len=12, n_canvas=2)
    run_parity(model, ref, 2, BF16_KV_TOL, BF16_LOGITS_TOL)
