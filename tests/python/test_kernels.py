"""CPU kernels against numpy (float64), on every kernel path this machine has.

The path is chosen once per process (DIFFRT_CPU_PATH forces a lower one), so each path runs the
checks in a subprocess: `python test_kernels.py` runs them all and exits non-zero on a mismatch.
Tolerances: f32 results within 2e-6 relative (max |Δ| / max |ref|) of a float64 computation on the
same inputs; weights decoded from F16/BF16/Q8_0 exactly as stored.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

TOL = 2e-6


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _encode(w, kind):
    """(raw bytes [rows, row_bytes], the f64 values the kernel must see)."""
    import ml_dtypes

    if kind == "F32":
        return w.view(np.uint8), w.astype(np.float64)
    if kind == "F16":
        h = w.astype(np.float16)
        return h.view(np.uint8), h.astype(np.float64)
    if kind == "BF16":
        h = w.astype(ml_dtypes.bfloat16)
        return h.view(np.uint8), h.astype(np.float64)
    if kind == "Q8_0":
        import gguf

        q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
        return q, gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
    raise ValueError(kind)


def check_gemm(K):
    rng = np.random.default_rng(0)
    for M, N, Kd in [(1, 1, 32), (5, 17, 64), (37, 70, 300 // 32 * 32), (256, 96, 512), (9, 33, 288)]:
        x = rng.standard_normal((M, Kd), dtype=np.float32)
        w = rng.standard_normal((N, Kd), dtype=np.float32)
        for kind in ("F32", "F16", "BF16", "Q8_0"):
            raw, ref_w = _encode(w, kind)
            ref = x.astype(np.float64) @ ref_w.T
            for serial in (False, True):
                y = K.gemm(x, np.ascontiguousarray(raw), kind, N, Kd, serial=serial)
                assert _rel(y, ref) < TOL, (M, N, Kd, kind, serial, _rel(y, ref))
        # K not a multiple of the 16-wide loads (not representable in Q8_0's blocks of 32)
        for kind in ("F32", "F16", "BF16"):
            k_odd = Kd + 5
            x2 = rng.standard_normal((M, k_odd), dtype=np.float32)
            w2 = rng.standard_normal((N, k_odd), dtype=np.float32)
            raw, ref_w = _encode(w2, kind)
            y = K.gemm(x2, np.ascontiguousarray(raw), kind, N, k_odd)
            assert _rel(y, x2.astype(np.float64) @ ref_w.T) < TOL, (M, N, k_odd, kind)
        # KN layout: x · B with B [K, N] (the soft-embedding matmul)
        b = rng.standard_normal((Kd, N), dtype=np.float32)
        y = K.gemm(x, b.view(np.uint8), "F32", N, Kd, kn=True)
        assert _rel(y, x.astype(np.float64) @ b) < TOL


def check_norms_and_elementwise(K):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 96), dtype=np.float32) * 3
    w = rng.standard_normal(96, dtype=np.float32)
    x64 = x.astype(np.float64)
    n = x64 * (np.mean(x64**2, -1, keepdims=True) + 1e-6) ** -0.5
    assert _rel(K.rms_norm(x, w, 1e-6), n * w) < TOL
    assert _rel(K.rms_norm(x, None, 1e-6), n) < TOL
    g, u = x, rng.standard_normal((7, 96), dtype=np.float32)
    g64 = g.astype(np.float64)
    gelu = 0.5 * g64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (g64 + 0.044715 * g64**3)))
    assert _rel(K.gelu_tanh_mul(g, u), gelu * u) < TOL
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    assert _rel(K.softmax(x), e / e.sum(-1, keepdims=True)) < TOL
    big = rng.standard_normal(1000, dtype=np.float32) * 100
    assert _rel(K.soft_cap(big, 30.0), np.tanh(big.astype(np.float64) / 30) * 30) < TOL
    # widths that are not multiples of the 8/16-element partial sums of the row kernels (tails)
    for cols in (1, 5, 37, 1003):
        x = rng.standard_normal((3, cols), dtype=np.float32) * 4
        w = rng.standard_normal(cols, dtype=np.float32)
        x64 = x.astype(np.float64)
        n = x64 * (np.mean(x64**2, -1, keepdims=True) + 1e-6) ** -0.5
        assert _rel(K.rms_norm(x, w, 1e-6), n * w) < TOL, cols
        e = np.exp(x64 - x64.max(-1, keepdims=True))
        assert _rel(K.softmax(x), e / e.sum(-1, keepdims=True)) < TOL, cols
    # a vocabulary-sized softmax row (the self-conditioning input): its f32 sum of 32000 terms in 16
    # partial sums carries ~sqrt(2000) * 2^-24 relative error, so each element within 1e-5 relative
    x = rng.standard_normal((3, 32000), dtype=np.float32) * 4
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    assert float((np.abs(K.softmax(x) - ref) / ref).max()) < 1e-5


def check_rope(K):
    rng = np.random.default_rng(2)
    T, nh, hd, P = 5, 3, 16, 40
    x = rng.standard_normal((T, nh, hd), dtype=np.float32)
    pos = np.array([0, 3, 7, 39, 12], np.int32)
    ang = rng.standard_normal((P, hd // 2)).astype(np.float32)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    c = np.concatenate([cos[pos], cos[pos]], -1)[:, None].astype(np.float64)
    s = np.concatenate([sin[pos], sin[pos]], -1)[:, None].astype(np.float64)
    x64 = x.astype(np.float64)
    rot = np.concatenate([-x64[..., hd // 2 :], x64[..., : hd // 2]], -1)
    assert _rel(K.rope(x, pos, cos, sin), x64 * c + rot * s) < TOL


def _attention_ref(q, k, v, key_pos0, q_pos0, causal, window):
    S, nh, hd = q.shape
    kv, nk, _ = k.shape
    out = np.zeros((S, nh, hd))
    qp = q_pos0 + np.arange(S)[:, None]
    kp = key_pos0 + np.arange(nk)[None, :]
    vis = np.ones((S, nk), bool)
    if causal:
        vis &= kp <= qp
    if window > 0:
        vis &= kp > qp - window
    for h in range(nh):
        j = h // (nh // kv)
        sc = q[:, h].astype(np.float64) @ k[j].T.astype(np.float64)  # scaling 1.0
        sc = np.where(vis, sc, -np.inf)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h] = p @ v[j].astype(np.float64)
    return out


def check_attention(K):
    rng = np.random.default_rng(3)
    for S, nh, kv, hd, nk, causal, window in [
        (16, 4, 2, 16, 23, False, 0),
        (7, 4, 1, 32, 12, True, 0),
        (70, 2, 2, 8, 77, True, 8),
        (3, 3, 3, 24, 3, True, 1),
    ]:
        q = rng.standard_normal((S, nh, hd), dtype=np.float32)
        k = rng.standard_normal((kv, nk, hd), dtype=np.float32)
        v = rng.standard_normal((kv, nk, hd), dtype=np.float32)
        key_pos0, q_pos0 = 5, 5 + nk - S  # the new tokens are the last S keys
        got = K.attention(q, k, v, key_pos0, q_pos0, causal, window)
        assert _rel(got, _attention_ref(q, k, v, key_pos0, q_pos0, causal, window)) < 1e-5


def check_router(K):
    rng = np.random.default_rng(4)
    M, H, E, k = 9, 64, 16, 4
    r = rng.standard_normal((M, H), dtype=np.float32)
    scale = rng.standard_normal(H, dtype=np.float32)
    proj = rng.standard_normal((E, H), dtype=np.float32) * 10
    pes = rng.standard_normal(E, dtype=np.float32)
    idx, w = K.router_topk(r, scale, proj, pes, k, 1e-6)
    r64 = r.astype(np.float64)
    z = r64 * (np.mean(r64**2, -1, keepdims=True) + 1e-6) ** -0.5 * scale * H**-0.5
    sc = z @ proj.T.astype(np.float64)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref_idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx.astype(int), ref_idx)
    top = np.take_along_axis(p, ref_idx, -1)
    ref_w = top / top.sum(-1, keepdims=True) * pes[ref_idx]
    assert _rel(w, ref_w) < 1e-5
    # ties: equal scores -> lower expert index first (torch.topk order on CPU)
    idx, _ = K.router_topk(
        np.ones((1, H), np.float32),
        np.ones(H, np.float32),
        np.zeros((E, H), np.float32),
        np.ones(E, np.float32),
        k,
        1e-6,
    )
    np.testing.assert_array_equal(idx[0].astype(int), np.arange(k))


def check_grouped_experts(K):
    rng = np.random.default_rng(5)
    M, H, E, I, k = 23, 48, 6, 40, 3
    x = rng.standard_normal((M, H), dtype=np.float32)
    idx = np.stack([rng.permutation(E)[:k] for _ in range(M)]).astype(np.int32)
    w = rng.standard_normal((M, k), dtype=np.float32)
    gate_up = rng.standard_normal((E, 2 * I, H), dtype=np.float32) * 0.2
    down = rng.standard_normal((E, H, I), dtype=np.float32) * 0.2
    got = K.grouped_experts(x, idx, w, gate_up, down, E, I)
    ref = np.zeros((M, H))
    x64 = x.astype(np.float64)
    for t in range(M):
        for s in range(k):
            e = idx[t, s]
            gu = gate_up[e].astype(np.float64) @ x64[t]
            g, u = gu[:I], gu[I:]  # gate rows first, then up
            h = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3))) * u
            ref[t] += w[t, s] * (down[e].astype(np.float64) @ h)
    assert _rel(got, ref) < 1e-5


CHECKS = [check_gemm, check_norms_and_elementwise, check_rope, check_attention, check_router, check_grouped_experts]


def main() -> int:
    from diffrt import _core

    K = _core._kernels
    for check in CHECKS:
        check(K)
    print("path", K.path())
    return 0


def _paths():
    from diffrt import _core

    best = _core.cpu_info()["best_path"]
    order = ["portable", "neon"] if best == "neon" else ["portable", "avx2", "avx512", "amx"]  # ARM64 / x86
    return order[: order.index(best) + 1]


@pytest.mark.parametrize("path", ["portable", "neon", "avx2", "avx512"])
def test_kernels_on_path(path):
    if path not in _paths():
        pytest.skip(f"this CPU has no {path} path")
    env = dict(os.environ, DIFFRT_CPU_PATH=path)
    res = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"path {path}" in res.stdout


def test_a_throwing_task_is_an_error_not_an_abort():
    """An exception in a pool task (on a worker thread or the caller) reaches Python as the error it
    is, and the pool keeps working; before, a worker's exception called std::terminate."""
    from diffrt import _core

    k = _core._kernels
    assert k._pool_run(64, -1) == 64
    for throw_at in (0, 1, 37, 63):
        with pytest.raises(ValueError, match=f"task {throw_at} failed"):
            k._pool_run(64, throw_at)
        assert k._pool_run(64, -1) == 64


if __name__ == "__main__":
    sys.exit(main())

