"""Packed bf16 / int8 CPU GEMMs (cpp/src/kernels/cpu/pack.h) on every kernel path, against numpy.

Two checks per (kind, path, shape):
  1. Against an exact numpy emulation of the same arithmetic (bf16-rounded operands, or the same
     int8 quantisation of weights per row and activations per row, summed exactly): the kernels may
     differ only by f32 summation order, so rel. Frobenius error <= 1e-5.
  2. Against plain f32 x·Wᵀ on Gaussian data, the error the format itself costs:
       bf16  <= 1e-2  (two roundings to 8 mantissa bits: ~2·2^-9/sqrt(3) ≈ 2.3e-3 per product, measured ~2.4e-3)
       w8a16 <= 1.5e-2 (int8 weights, |W| max ≈ 4σ: step/sqrt(12) ≈ 0.9% of σ, plus bf16 activations)
       int8  <= 2e-2  (W8A8: the weight error plus the same for activations, measured ~1.2e-2)
A requested path the CPU lacks runs the next one down (amx -> avx512 -> avx2 -> portable on x86; an
x86 path asked for on ARM64 runs neon); the test checks that the reported path is the best one
available at or below the request, in the order portable < neon < avx2 < avx512 < amx (cpu_features.h).
"""

import ml_dtypes
import numpy as np
import pytest
from diffrt import _core

fg = _core._fast_gemm
ORDER = {p: i for i, p in enumerate(["portable", "neon", "avx2", "avx512", "amx"])}
PATHS = ["portable", "neon"] if fg.best_path() == "neon" else ["portable", "avx2", "avx512", "amx"]  # ARM64 / x86
# The last shape spans several K cache blocks (4096 bf16 / 8192 int8 values, kKBlockGroups).
SHAPES = [(1, 96, 100), (7, 100, 704), (256, 704, 96), (33, 96, 2816), (5, 2816, 64), (40, 48, 9000)]
F32_TOL = {"bf16": 1e-2, "w8a16": 1.5e-2, "int8": 2e-2}


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def raw(w):
    return np.ascontiguousarray(w).view(np.uint8).reshape(w.shape[0], -1)


def bf16(a):
    return a.astype(ml_dtypes.bfloat16).astype(np.float64)


def quant_rows(a):
    """Per-row symmetric int8 exactly as the C++ does it (f32 arithmetic, round half to even)."""
    a = a.astype(np.float32)
    amax = np.abs(a).max(axis=1).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.clip(np.rint(a * inv[:, None]), -127, 127)
    return q.astype(np.float64), (amax / np.float32(127)).astype(np.float64)


def emulate(kind, x, w):
    if kind == "bf16":
        return bf16(x) @ bf16(w).T
    qw, sw = quant_rows(w)
    if kind == "w8a16":
        return (bf16(x) @ qw.T) * sw[None, :]
    qx, sx = quant_rows(x)
    return (qx @ qw.T) * sx[:, None] * sw[None, :]


def packed(w, kind, type_="F32"):
    return fg.Packed(raw(w), type_, w.shape[0], w.shape[1], False, kind)


@pytest.mark.parametrize("kind", ["bf16", "int8", "w8a16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_path_matches_numpy(kind, shape):
    M, N, K = shape
    rng = np.random.default_rng(M * 7 + N + K)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    emu = emulate(kind, x, w)
    p = packed(w, kind)
    best = fg.best_path()
    for path in PATHS:
        ran = p.path(path)
        assert ORDER[ran] <= min(ORDER[path], ORDER[best]), (path, ran)
        y = p.gemm(x, path)
        assert y.shape == (M, N) and np.isfinite(y).all()
        assert rel(y, emu) <= 1e-5, (path, ran, rel(y, emu))
        assert rel(y, ref) <= F32_TOL[kind], (path, ran, rel(y, ref))


def test_the_best_path_of_this_cpu_is_the_one_that_runs():
    """No silent fallback: asking for this CPU's best path runs that path's kernels (AMX CPUs have
    both AMX-BF16 and AMX-INT8; best_path() >= avx512 implies AVX512-BF16 and VNNI)."""
    w = np.ones((32, 64), np.float32)
    best = fg.best_path()
    for kind in ("bf16", "int8", "w8a16"):
        assert packed(w, kind).path(best) == best


def q8_0(w):
    """GGUF Q8_0 rows: blocks of 32 as (f16 scale d, 32 int8), value = d·q. Returns (raw, decoded)."""
    n, k = w.shape
    blocks = w.reshape(n, k // 32, 32)
    d = (np.abs(blocks).max(axis=2) / 127).astype(np.float16)
    df = d.astype(np.float32)
    q = np.clip(np.rint(blocks / np.where(df > 0, df, 1)[..., None]), -127, 127).astype(np.int8)
    out = np.empty((n, k // 32, 34), np.uint8)
    out[..., :2] = d.view(np.uint8).reshape(n, k // 32, 2)
    out[..., 2:] = q.view(np.uint8)
    return out.reshape(n, -1), (q.astype(np.float32) * df[..., None]).reshape(n, k)


@pytest.mark.parametrize("kind", ["bf16", "int8", "w8a16"])
def test_stored_types_and_kn_layout_pack_like_their_values(kind):
    """Packing reads F16 / BF16 / Q8_0 / KN storage as the values they decode to."""
    rng = np.random.default_rng(1)
    M, N, K = 9, 70, 96
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    w16 = w.astype(np.float16)
    wbf = w.astype(ml_dtypes.bfloat16)
    q_raw, q_val = q8_0(w)
    cases = [
        (raw(w16), "F16", False, w16.astype(np.float32)),
        (raw(wbf), "BF16", False, wbf.astype(np.float32)),
        (q_raw, "Q8_0", False, q_val),
        (raw(np.ascontiguousarray(w.T)), "F32", True, w),
    ]
    for data, type_, kn, values in cases:
        got = fg.Packed(data, type_, N, K, kn, kind).gemm(x)
        want = packed(values, kind).gemm(x)
        np.testing.assert_array_equal(got, want, err_msg=f"{type_} kn={kn}")


def test_zero_rows_and_zero_weights_give_zeros():
    x = np.zeros((3, 40), np.float32)
    x[1] = 1.0
    w = np.zeros((20, 40), np.float32)
    w[5] = 2.0
    for kind in ("bf16", "int8", "w8a16"):
        for path in PATHS:
            y = packed(w, kind).gemm(x, path)
            expect = np.zeros((3, 20), np.float32)
            expect[1, 5] = 80.0
            np.testing.assert_allclose(y, expect, rtol=1e-6, atol=0, err_msg=f"{kind} {path}")


def test_activation_rounding_ties_are_even_on_every_path():
    """The per-call activation conversions round half to even on every path, as the C++ reference
    (core/dtype.h) and numpy do: bf16 ties between two bf16 values, int8 ties at q + 0.5. An identity
    W makes y the converted activations themselves, compared element by element."""
    K = 40
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2 + 2**-7, 255 * 2**-8 + 2**-16], np.float32)
    x_bf = np.resize(ties, (3, K)).astype(np.float32)
    x_bf[1] *= -3.0
    x_bf[2, ::3] = 0.0
    # int8: max |x| = 127 makes the scale 1, so x·(127/amax) hits exact halves
    x_i8 = np.resize(np.array([127.0, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -126.5], np.float32), (3, K)).copy()
    x_i8[2] *= -1
    eye = np.eye(K, dtype=np.float32)
    for path in PATHS:
        y = packed(eye, "bf16").gemm(x_bf, path)
        np.testing.assert_array_equal(y, bf16(x_bf).astype(np.float32), err_msg=path)
        y = packed(eye, "int8").gemm(x_i8, path)
        np.testing.assert_allclose(y, emulate("int8", x_i8, eye), rtol=1e-6, atol=0, err_msg=path)
        q, _ = quant_rows(x_i8)
        assert np.array_equal(np.rint(y * 127 / np.abs(x_i8).max(axis=1, keepdims=True)), q), path


def test_bad_arguments_are_value_errors():
    w = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="kind"):
        packed(w, "int4")
    with pytest.raises(ValueError, match="Packed"):
        fg.Packed(raw(w), "F32", 5, 8, False, "bf16")
    with pytest.raises(ValueError, match="x must be"):
        packed(w, "bf16").gemm(np.ones((2, 7), np.float32))
    with pytest.raises(ValueError, match="path"):
        packed(w, "bf16").gemm(np.ones((2, 8), np.float32), "sse9")
