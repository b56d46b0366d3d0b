"""The CUDA backend (diffrt._cuda): every op against numpy / the CPU kernels, and the CUDA session
and generation against the CPU engine on the tiny models. Tests marked `gpu` are skipped when
diffrt.cuda_available() is False (no module, driver or GPU); the others run everywhere.

Tolerances (stated, not tuned):
  ops, f32: 2e-6 relative (max |Δ| / max |ref|) against float64 on the same inputs (f32 rounding in
    another summation order; 4e-6 for the K = 40000 split-K GEMM, whose parts are 5000-term f32
    sums); bf16 weights: the same, against the bf16-rounded weights; the tensor-core GEMM rounds
    activations to bf16 too, so it is checked against float64 on both rounded operands (f32
    accumulation: 1e-5). W8A8 (int8 activations per row, exact int32 sums): 1e-5 against float64 on
    the values the int8 operands stand for; in the grouped experts the int8 rounding of the hidden
    activation can land one step apart from the float64 reference's: 2e-2.
  sampler ops: argmax, draws, acceptance and renoise exactly equal to the CPU sampler (same Philox
    streams); entropy within 1e-6 relative (double sums in another order).
  int8 weights (W8A16, and W8A8 without tensor cores): the same bounds against float64 on the
    dequantized weights q * scale (the host quantization is reproduced in numpy), bf16-rounded for
    the tensor-core kernel.
  session logits, compute f32: ‖Δ‖/‖ref‖ <= 1e-4 against the CPU engine in f32 (measured parity of
    the CPU engine with transformers is 1e-5; two f32 engines differ by summation order, amplified by
    the random tiny models' attention). compute bf16 (tensor cores, bf16 activations in every GEMM):
    <= 5e-2, the bound test_parity.py states for bf16 (a few bf16 ulps, 2^-8, over 4 layers).
    compute int8 / int8-w8a16 (per-row int8 weights, up to 1/254 of the row maximum off per weight,
    plus int8 / bf16 activations): a sanity bound of 0.15, not a parity claim (no measurement yet).
  generation: tape-replayed and seeded runs give the same tokens as the CPU engine.
"""

from __future__ import annotations

import importlib.util

import diffrt
import numpy as np
import pytest

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not diffrt.cuda_available(), reason="no CUDA device (diffrt.cuda_available() is False)")

OP_TOL = 2e-6
LONG_K_TOL = 4e-6  # f32 sums over K = 40000 in 8 split-K parts: 1.4e-6 in a numpy emulation (FMA)
LOGITS_F32_TOL = 1e-4
LOGITS_BF16_TOL = 5e-2
LOGITS_INT8_TOL = 0.15


def _built_with_cuda() -> bool:
    return importlib.util.find_spec("diffrt._cuda") is not None


def rel_max(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def rel_norm(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bf16(x) -> np.ndarray:
    """Round f32 to the nearest bf16 (ties to even), kept as f32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32)


def q8(w) -> np.ndarray:
    """The values int8 weights stand for: per-row q * scale, scale = max|row| / 127 (as quantize_rows_i8)."""
    w = np.ascontiguousarray(w, np.float32)
    s = (np.abs(w).max(1, keepdims=True) / np.float32(127)).astype(np.float32)
    q = np.where(s > 0, np.clip(np.rint(w / np.where(s > 0, s, 1)), -127, 127), 0).astype(np.float32)
    return (q * s).astype(np.float32)


def q8_act(x) -> np.ndarray:
    """The values int8 activations stand for in the W8A8 GEMMs (the CPU's rule): per row amax / 127,
    q = round-half-even(x * (127 / amax)) clamped to ±127, value q * (amax / 127)."""
    x = np.ascontiguousarray(x, np.float32)
    amax = np.abs(x).max(1, keepdims=True).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.clip(np.rint((x * inv).astype(np.float32)), -127, 127).astype(np.float32)
    return (q * (amax / np.float32(127))).astype(np.float32)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


# ---- without a GPU ------------------------------------------------------------------------------


def test_cuda_module_imports_without_gpu():
    if not _built_with_cuda():
        pytest.skip("diffrt was built without the CUDA module (no nvcc)")
    import diffrt._cuda as c

    n = c.device_count()
    assert isinstance(n, int) and n >= 0
    assert diffrt.cuda_available() == (n > 0)
    assert isinstance(c.built_with_cuda_version, int) and c.built_with_cuda_version >= 12000
    if n == 0:
        assert diffrt.cuda_available() is False
        with pytest.raises(ValueError, match="no CUDA device"):
            c.random_model({"n_layer": 1, "n_embd": 8, "n_ff": 8, "n_head": 1, "n_vocab": 8, "n_expert": 2,
                            "n_expert_used": 1, "n_ff_exp": 4, "head_dim": 4, "n_kv_head": 1, "canvas_length": 4},
                           "bf16", 0)


def test_load_cuda_without_gpu_is_a_clear_error(converted):
    if diffrt.cuda_available():
        pytest.skip("a GPU is available")
    with pytest.raises(ValueError, match="cuda"):
        diffrt.load(converted("default"), device="cuda")


def test_cuda_helpers_refuse_cpu_models(converted):
    # The GPU entry points name what is wrong instead of failing inside the engine.
    import diffrt.cuda as dc

    cpu_model = diffrt.load(converted("default"))
    with pytest.raises(ValueError, match="device='cuda'"):
        dc.batch_engine(cpu_model, 2, 256)
    with pytest.raises(ValueError, match="device='cuda'"):
        dc.generate(cpu_model, [[1, 2, 3]])
    with pytest.raises(ValueError, match="dtype"):
        dc.random_model({"n_layer": 1}, "fp8")


# ---- ops ----------------------------------------------------------------------------------------


@gpu
@needs_gpu
# (37, 70, 40000): two output tiles over a long K, the shape of the self-conditioning product:
# split-K (8 parts summed in order in a second pass; the test binding's workspace holds half the
# rows, so the row-chunk loop runs too).
@pytest.mark.parametrize("M,N,K", [(1, 5, 3), (37, 70, 45), (130, 64, 200), (37, 70, 40000)])
@pytest.mark.parametrize("dtype", ["f32", "bf16", "int8", "int8-w8a8"])
@pytest.mark.parametrize("kn", [False, True])
def test_gemm(M, N, K, dtype, kn):
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(M * 1000 + N + K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    if M > 1:
        x[0] = 0.0  # an all-zero row: scale 0, output 0 (no division by zero)
    w = rng.standard_normal((K, N) if kn else (N, K)).astype(np.float32)
    wv = {"f32": w, "bf16": bf16(w), "int8": q8(w), "int8-w8a8": q8(w)}[dtype].astype(np.float64)
    ref = x.astype(np.float64) @ (wv if kn else wv.T)
    y = ck.gemm(x, w, dtype, kn, False)  # no tensor cores: f32 activations whatever the weights
    assert y.shape == (M, N) and np.isfinite(y).all()
    assert rel_max(y, ref) <= (OP_TOL if K < 32768 else LONG_K_TOL)
    if dtype == "int8-w8a8" and not kn:  # int8 tensor cores: activations int8 per row, exact int32 sums
        y = ck.gemm(x, w, dtype, kn, True)
        ref = q8_act(x).astype(np.float64) @ wv.T
        assert np.isfinite(y).all() and rel_max(y, ref) <= 1e-5
    elif dtype != "f32":  # tensor cores: weights and activations in bf16, f32 accumulation (KN: W8A16)
        y = ck.gemm(x, w, dtype, kn, True)
        wb = bf16(wv.astype(np.float32)).astype(np.float64)
        ref = bf16(x).astype(np.float64) @ (wb if kn else wb.T)
        assert np.isfinite(y).all() and rel_max(y, ref) <= 1e-5


@gpu
@needs_gpu
def test_norm_activation_softmax_softcap():
    from diffrt._core import _kernels as cpu
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((13, 300)) * 3).astype(np.float32)
    w = rng.standard_normal(300).astype(np.float32)
    for ww in (w, None):
        ref = x.astype(np.float64) / np.sqrt((x.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-6)
        if ww is not None:
            ref = ref * ww
        y = ck.rms_norm(x, ww, 1e-6)
        assert rel_max(y, ref) <= OP_TOL
        assert rel_max(y, cpu.rms_norm(x, ww, 1e-6)) <= OP_TOL
    u = rng.standard_normal((13, 300)).astype(np.float32)
    assert rel_max(ck.gelu_tanh_mul(x, u), gelu(x.astype(np.float64)) * u) <= OP_TOL
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    assert rel_max(ck.softmax(x), e / e.sum(1, keepdims=True)) <= OP_TOL
    big = (rng.standard_normal(5000) * 80).astype(np.float32)
    assert rel_max(ck.soft_cap(big, 30.0), np.tanh(big.astype(np.float64) / 30) * 30) <= OP_TOL


@gpu
@needs_gpu
@pytest.mark.parametrize("hd,partial", [(256, 1.0), (512, 0.25), (24, 1.0)])
def test_rope(hd, partial):
    from diffrt._core import _kernels as cpu
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(hd)
    T, nh, P = 7, 3, 40
    x = rng.standard_normal((T, nh, hd)).astype(np.float32)
    pos = rng.integers(0, P, T).astype(np.int32)
    n = int(partial * hd // 2)
    inv = np.zeros(hd // 2)
    inv[:n] = 1e6 ** (-2 * np.arange(n) / hd)
    f = np.arange(P)[:, None] * inv[None, :]
    cos, sin = np.cos(f).astype(np.float32), np.sin(f).astype(np.float32)
    y = ck.rope(x, pos, cos, sin)
    assert rel_max(y, cpu.rope(x, pos, cos, sin)) <= OP_TOL
    # the fused q/k path: per-head RMSNorm (with and without weight), then RoPE
    w = rng.uniform(0.5, 1.5, hd).astype(np.float32)
    for ww in (w, None):
        normed = cpu.rms_norm(x.reshape(T * nh, hd), ww, 1e-6).reshape(T, nh, hd)
        y = ck.norm_rope(x, ww, 1e-6, pos, cos, sin)
        assert rel_max(y, cpu.rope(normed, pos, cos, sin)) <= OP_TOL


@gpu
@needs_gpu
@pytest.mark.parametrize("hd,nh,kv", [(256, 8, 4), (512, 8, 2), (24, 3, 1)])
@pytest.mark.parametrize("causal,window", [(False, 0), (True, 0), (True, 5)])
def test_attention(hd, nh, kv, causal, window):
    from diffrt._core import _kernels as cpu
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(hd + nh + window)
    S, nk = 9, 20
    q = (rng.standard_normal((S, nh, hd)) * 0.1).astype(np.float32)
    k = (rng.standard_normal((kv, nk, hd)) * 0.1).astype(np.float32)
    v = rng.standard_normal((kv, nk, hd)).astype(np.float32)
    key_pos0, q_pos0 = 3, 3 + nk - S  # the last S keys are the queries themselves
    for vv in (v, k):  # K = V sharing: the same array for both
        out = ck.attention(q, k, vv, key_pos0, q_pos0, causal, window)
        assert np.isfinite(out).all()
        assert rel_max(out, cpu.attention(q, k, vv, key_pos0, q_pos0, causal, window)) <= 1e-5


@gpu
@needs_gpu
def test_router_topk():
    from diffrt._core import _kernels as cpu
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(3)
    M, H, E, K = 29, 96, 16, 4
    r = rng.standard_normal((M, H)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, H).astype(np.float32)
    proj = rng.standard_normal((E, H)).astype(np.float32)
    pes = rng.uniform(0.5, 1.5, E).astype(np.float32)
    gi, gw = ck.router_topk(r, scale, proj, pes, K, 1e-6)
    ci, cw = cpu.router_topk(r, scale, proj, pes, K, 1e-6)
    np.testing.assert_array_equal(gi, ci)
    assert rel_max(gw, cw) <= 1e-5


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype,tc", [("f32", False), ("bf16", False), ("bf16", True), ("int8", False), ("int8", True),
                                      ("int8-w8a8", True)])
def test_grouped_experts(dtype, tc):
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(4)
    M, H, E, K, Ie = 70, 48, 8, 3, 20
    x = rng.standard_normal((M, H)).astype(np.float32)
    idx = np.stack([rng.permutation(E)[:K] for _ in range(M)]).astype(np.int32)
    idx[:, 0] = 2  # one busy expert: more than one 64-row tile
    w = rng.uniform(0.1, 1.0, (M, K)).astype(np.float32)
    gu = (rng.standard_normal((E * 2 * Ie, H)) * 0.2).astype(np.float32)
    dn = (rng.standard_normal((E * H, Ie)) * 0.2).astype(np.float32)
    a8 = dtype == "int8-w8a8"
    gq, dq = {"f32": (gu, dn), "bf16": (bf16(gu), bf16(dn))}.get(dtype, (q8(gu), q8(dn)))
    if tc and not a8:
        gq, dq = bf16(gq), bf16(dq)
    act = q8_act if a8 else bf16 if tc else (lambda v: v)  # what the kernel feeds each GEMM
    xs = act(x)
    ref = np.zeros((M, H))
    for t in range(M):
        for s in range(K):
            e = idx[t, s]
            a = gq[e * 2 * Ie:(e + 1) * 2 * Ie].astype(np.float64) @ xs[t].astype(np.float64)
            h = gelu(a[:Ie]) * a[Ie:]
            h = act(h.astype(np.float32)[None])[0].astype(np.float64)
            ref[t] += w[t, s] * (dq[e * H:(e + 1) * H].astype(np.float64) @ h)
    out = ck.grouped_experts(x, idx, w, gu, dn, E, Ie, dtype, tc)
    assert np.isfinite(out).all()
    # tensor cores round (or quantize) the gelu output h inside the kernel from an f32 value; the
    # reference rounds its float64 h, so single elements can land one bf16 ulp (one int8 step) apart:
    # 1e-2 (int8: 2e-2), not 1e-5.
    assert rel_max(out, ref) <= (2e-2 if a8 else 1e-2 if tc else 1e-5)


@gpu
@needs_gpu
@pytest.mark.parametrize("V,n,L", [(1000, 10, 5), (70001, 3, 2)])
def test_token_stats_same_draws_as_cpu(V, n, L):
    from diffrt._core import sampler
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(V)
    raw = (rng.standard_normal((n, V)) * 3).astype(np.float32)
    raw[0, 17] = raw[0, 923] = raw[0].max() + 1  # a tie for the first maximum
    for seed, canvas, step in [(0, 0, 0), (12345, 2, 7)]:
        pl, amax, H, smp = ck.token_stats(raw, 0.7, seed, canvas, step, L, False)
        cpl, camax, cH, csmp = sampler.token_stats(raw, 0.7, seed, canvas, step, L)
        np.testing.assert_array_equal(pl, cpl)
        np.testing.assert_array_equal(amax, camax)
        np.testing.assert_array_equal(smp, csmp)
        assert rel_max(H, cH) <= 1e-6
    pl16, *_ = ck.token_stats(raw, 0.7, 0, 0, 0, L, True)
    np.testing.assert_array_equal(pl16, bf16(cpl))


@gpu
@needs_gpu
def test_acceptance_and_renoise_match_cpu():
    from diffrt._core import sampler
    from diffrt._cuda import _kernels as ck

    rng = np.random.default_rng(6)
    B, L, V = 3, 100, 5000
    H = np.round(rng.exponential(0.05, (B, L)), 2).astype(np.float32)  # many exact ties
    H[1, 5] = 0.0
    smp = rng.integers(0, V, (B, L)).astype(np.int32)
    for bound in (0.1, 1.0):
        acc, cv, mean = ck.accept_renoise(H, smp, V, bound, 99, 1, 3, None)
        for r in range(B):
            np.testing.assert_array_equal(acc[r], sampler.accept(H[r], bound))
            noise = [sampler.randint(99, 1, 3, 2, r, j, V) for j in range(L)]
            np.testing.assert_array_equal(cv[r], np.where(acc[r] == 1, smp[r], noise))
        np.testing.assert_allclose(mean, H.astype(np.float64).mean(1), rtol=1e-6)
    tape = rng.integers(0, V, (B, L)).astype(np.int32)
    acc, cv, _ = ck.accept_renoise(H, smp, V, 0.1, 99, 1, 3, tape)
    np.testing.assert_array_equal(cv, np.where(acc == 1, smp, tape))
    init = ck.init_canvas(B, L, V, 5, 2)
    np.testing.assert_array_equal(init, [[sampler.randint(5, 2, 0, 0, r, j, V) for j in range(L)] for r in range(B)])


# ---- session and generation against the CPU engine ----------------------------------------------


def _engines(path, compute="f32"):
    from diffrt import _core, _cuda

    return _core.Model.load(str(path), 0, "f32"), _cuda.Model.load(str(path), compute)


def _run_both(cpu_m, gpu_m, prompt_lens, n_commits=1, seed=0):
    """Yields (label, cpu logits, gpu logits) for denoise steps around prefill and commits."""
    from diffrt import _core, _cuda

    cfg = cpu_m.config()
    L, V = cfg["canvas_length"], cfg["n_vocab"]
    B = len(prompt_lens)
    ctx = max(prompt_lens) + (n_commits + 1) * L
    cs, gs = _core.Session(cpu_m, B, ctx), _cuda.Session(gpu_m, B, ctx)
    rng = np.random.default_rng(seed)
    for r, P in enumerate(prompt_lens):
        ids = rng.integers(0, V, (1, P)).astype(np.int32)
        cs.encode(ids, [r])
        gs.encode(ids, [r])
    for c in range(n_commits + 1):
        canvas = rng.integers(0, V, (B, L)).astype(np.int32)
        a = cs.denoise(canvas, None)
        yield f"dec{c}", a, gs.denoise(canvas, None)
        sc = (a / np.float32(0.8)).astype(np.float32)
        yield f"dec{c}.sc", cs.denoise(canvas, sc), gs.denoise(canvas, sc)
        if c < n_commits:
            cs.encode(canvas, [])
            gs.encode(canvas, [])
            assert [cs.n_cached(r) for r in range(B)] == [gs.n_cached(r) for r in range(B)]


@gpu
@needs_gpu
@pytest.mark.parametrize("name", ["default", "long", "geometry", "many_experts", "odd"])
def test_session_logits_f32_match_cpu(converted, name):
    cpu_m, gpu_m = _engines(converted(name))
    assert gpu_m.compute_type == "f32"
    for label, a, b in _run_both(cpu_m, gpu_m, [12, 21], n_commits=2):
        assert np.isfinite(b).all(), label
        assert rel_norm(b, a) <= LOGITS_F32_TOL, (name, label, rel_norm(b, a))


@gpu
@needs_gpu
def test_session_bf16_model(converted):
    path = converted("bf16")
    cpu_m, gpu_m = _engines(path, "f32")  # bf16 weights held exactly in f32: the f32 bound
    for label, a, b in _run_both(cpu_m, gpu_m, [12, 9]):
        assert rel_norm(b, a) <= LOGITS_F32_TOL, label
    _, gpu_tc = _engines(path, "bf16")  # tensor cores, bf16 activations
    assert gpu_tc.compute_type == "bf16"
    for label, a, b in _run_both(cpu_m, gpu_tc, [12, 9]):
        assert np.isfinite(b).all() and rel_norm(b, a) <= LOGITS_BF16_TOL, (label, rel_norm(b, a))


@gpu
@needs_gpu
@pytest.mark.parametrize("ct", ["int8", "int8-w8a16"])
def test_session_int8(converted, ct):
    cpu_m, gpu_m = _engines(converted("default"), ct)
    assert gpu_m.compute_type == ct
    for label, a, b in _run_both(cpu_m, gpu_m, [12, 21]):
        assert np.isfinite(b).all() and rel_norm(b, a) <= LOGITS_INT8_TOL, (label, rel_norm(b, a))


@gpu
@needs_gpu
def test_python_api_on_cuda(converted):
    path = converted("default")
    m = diffrt.load(path, device="cuda", compute_type="f32")
    c = diffrt.load(path, compute_type="f32")
    s, t = m.session(batch=1, max_context=64), c.session(batch=1, max_context=64)
    ids = np.arange(3, 15)
    s.encode(ids)
    t.encode(ids)
    canvas = np.arange(m.config["canvas_length"]) % m.config["n_vocab"]
    assert s.n_cached == t.n_cached == 12
    assert rel_norm(s.denoise(canvas), t.denoise(canvas)) <= LOGITS_F32_TOL
    with pytest.raises(ValueError):
        s.denoise(canvas[:-1])


@gpu
@needs_gpu
def test_cli_and_server_on_cuda(converted, tmp_path, monkeypatch, capsys):
    # `diffrt run --device cuda` answers; the server built with the cuda loader serves a request
    # through its GPU batch engine.
    import functools

    httpx = pytest.importorskip("httpx")
    pytest.importorskip("starlette")  # the server's dependency (a bare device image may lack it)
    from diffrt.cli import main
    from diffrt.embed import create
    from diffrt.model import load
    from diffrt.server.app import create_app

    path = converted("default", "f32")
    assert main(["run", str(path), "hello", "--device", "cuda", "--max-new-tokens", "16", "--steps", "3",
                 "--seed", "1", "--raw", "--verbose"]) == 0
    assert "on the GPU" in capsys.readouterr().err  # the answer itself may be empty (an early EOS)
    monkeypatch.setenv("DIFFRT_MODELS", str(tmp_path / "store"))
    create("tiny", f"FROM {path}\nPARAMETER num_predict 16\nPARAMETER steps 3\n")
    app = create_app(loader=functools.partial(load, device="cuda"), max_queue=2, parallel=2)

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gpu") as client:
            r = await client.post("/api/generate", json={"model": "tiny", "prompt": "hello", "stream": False,
                                                          "options": {"seed": 1}}, timeout=300)
            return r, await client.get("/api/ps")

    import asyncio

    try:
        r, ps = asyncio.run(ask())
    finally:
        app.state.diffrt.scheduler.close()
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True
    assert ps.json()["models"][0]["size_vram"] > 0  # the weights live on the GPU


def _gen_kwargs(L):
    return {"max_new_tokens": 2 * L, "steps": 4, "stability_threshold": -1, "eos_ids": []}


@gpu
@needs_gpu
@pytest.mark.parametrize("tape", [True, False])
def test_generation_same_tokens_as_cpu(converted, tape):
    from diffrt import _core, _cuda

    cpu_m, gpu_m = _engines(converted("default"))
    cfg = cpu_m.config()
    L, V = cfg["canvas_length"], cfg["n_vocab"]
    prompts = [list(range(3, 15)), list(range(40, 47))]
    B, kw = len(prompts), _gen_kwargs(L)
    if tape:
        rng = np.random.default_rng(11)
        kw.update(tape_init=rng.integers(0, V, (2, B, L)).astype(np.int32),
                  tape_samples=rng.integers(0, V, (8, B, L)).astype(np.int32),
                  tape_renoise=rng.integers(0, V, (8, B, L)).astype(np.int32))
    ref = _core.generate(cpu_m, prompts, seed=7, **kw)
    out = _cuda.Session(gpu_m, B, 12 + 2 * L).generate(prompts, seed=7, **kw)
    np.testing.assert_array_equal(np.asarray(out["tokens"]), np.asarray(ref["tokens"]))


@gpu
@needs_gpu
def test_generation_callbacks_match_cpu(converted):
    # The same step and canvas events from the GPU session as from the CPU engine (tape replay),
    # and returning False from a callback cancels the loop on both.
    from diffrt import _core, _cuda

    cpu_m, gpu_m = _engines(converted("default"))
    cfg = cpu_m.config()
    L, V = cfg["canvas_length"], cfg["n_vocab"]
    prompts = [list(range(3, 15))]
    rng = np.random.default_rng(12)
    kw = dict(_gen_kwargs(L), tape_init=rng.integers(0, V, (2, 1, L)).astype(np.int32),
              tape_samples=rng.integers(0, V, (8, 1, L)).astype(np.int32),
              tape_renoise=rng.integers(0, V, (8, 1, L)).astype(np.int32))

    def run(gen):
        events = []
        out = gen(on_step=lambda e: events.append(("step", e["step"], e["argmax"].copy(), e["accepted"].copy())),
                  on_canvas=lambda e: events.append(("canvas", e["canvas"], e["tokens"].copy())))
        return out, events

    ref, ref_ev = run(lambda **cb: _core.generate(cpu_m, prompts, seed=3, **kw, **cb))
    out, ev = run(lambda **cb: _cuda.Session(gpu_m, 1, 12 + 2 * L).generate(prompts, seed=3, **kw, **cb))
    assert len(ev) == len(ref_ev) and len(ev) == 2 * 4 + 2
    for a, b in zip(ev, ref_ev):
        assert a[:2] == b[:2]
        for x, y in zip(a[2:], b[2:]):
            np.testing.assert_array_equal(x, y)
    stop = _cuda.Session(gpu_m, 1, 12 + 2 * L).generate(prompts, seed=3, on_step=lambda e: False, **kw)
    assert stop["cancelled"] and stop["steps"] == [1]


@gpu
@needs_gpu
@pytest.mark.parametrize("slots", [1, 3])
def test_batch_engine_on_gpu_equals_alone(converted, slots):
    # The server's batching on a GPU session: requests with their own parameters, seeds and prompt
    # lengths, joining at canvas boundaries, give exactly what each gives alone through the GPU
    # generate() (rows of a device step do not depend on each other or on their slot).
    from diffrt import _cuda

    _, gpu_m = _engines(converted("default"))
    L = gpu_m.config()["canvas_length"]
    reqs = [
        (list(range(3, 15)), {"max_new_tokens": 2 * L, "steps": 6, "seed": 1}),
        ([5] * 13, {"max_new_tokens": L, "steps": 3, "seed": 2, "t_min": 0.1, "t_max": 0.3}),
        ([9, 8], {"max_new_tokens": 2 * L, "steps": 9, "seed": 3, "entropy_bound": 0.5, "confidence_threshold": 0.5}),
        ([42] * 20, {"max_new_tokens": L, "steps": 4, "seed": 77, "stability_threshold": 2, "eos_ids": [7, 8],
                     "pad_id": 0}),
    ]
    eng = _cuda.BatchEngine(gpu_m, slots, 64 + 2 * L)
    ids = {eng.submit(p, **kw): i for i, (p, kw) in enumerate(reqs)}
    got = {i: [] for i in ids.values()}
    while not eng.idle:
        for kind, rid, canvas, step, tokens, done, cancelled in eng.step():
            assert not cancelled
            if kind == "canvas":
                got[ids[rid]] += tokens
    for i, (p, kw) in enumerate(reqs):
        ref = _cuda.Session(gpu_m, 1, len(p) + 2 * L).generate([p], **kw)
        assert got[i] == ref["tokens"][0], f"request {i}"


@gpu
@needs_gpu
def test_device_step_matches_cpu_sampler(converted):
    from diffrt._core import sampler
    from diffrt._cuda import Session

    _, gpu_m = _engines(converted("default"))
    cfg = gpu_m.config()
    L, V = cfg["canvas_length"], cfg["n_vocab"]
    B, seed, T = 2, 5, np.float32(0.8)
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, V, (B, 10)).astype(np.int32)
    canvas = rng.integers(0, V, (B, L)).astype(np.int32)
    sessions = [Session(gpu_m, B, 10 + L) for _ in range(3)]
    for s in sessions:
        s.encode(prompt, [])
        s.set_canvas(canvas)

    # step 0 (no self-conditioning) against the CPU sampler on the same logits
    s = sessions[0]
    s.step(0, 0, float(T), seed, 0.1, False, False, False)
    d = s.read_step(True)
    np.testing.assert_array_equal(d["logits"], sessions[1].denoise(canvas, None))
    pl, amax, H, smp = sampler.token_stats(d["logits"].reshape(B * L, V), T, seed, 0, 0, L)
    np.testing.assert_array_equal(d["argmax"].ravel(), amax)
    np.testing.assert_array_equal(d["sampled"].ravel(), smp)
    assert rel_max(d["entropy"].ravel(), H) <= 1e-6
    for r in range(B):
        acc = sampler.accept(d["entropy"][r], 0.1)
        np.testing.assert_array_equal(d["accepted"][r], acc)
        noise = [sampler.randint(seed, 0, 0, 2, r, j, V) for j in range(L)]
        np.testing.assert_array_equal(d["canvas"][r], np.where(acc == 1, d["sampled"][r], noise))

    # step 1 with self-conditioning from step 0: the logits equal the host path's
    s.step(0, 1, float(T), seed, 0.1, True, False, False)
    d1 = s.read_step(True)
    ref = sessions[1].denoise(d["canvas"], pl.reshape(B, L, V))
    assert rel_norm(d1["logits"], ref) <= 1e-6

    # the same two steps replayed from CUDA graphs: identical results
    g = sessions[2]
    g.step(0, 0, float(T), seed, 0.1, False, False, True)
    g.step(0, 1, float(T), seed, 0.1, True, False, True)
    dg = g.read_step(True)
    assert g.graph_used
    np.testing.assert_array_equal(dg["canvas"], d1["canvas"])
    np.testing.assert_array_equal(dg["logits"], d1["logits"])


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["f32", "bf16", "int8"])
def test_random_model_steps(dtype):
    import diffrt.cuda as dc
    from diffrt._cuda import Session

    cfg = {"n_layer": 3, "n_embd": 64, "n_ff": 96, "n_head": 4, "n_vocab": 1000, "n_expert": 8, "n_expert_used": 2,
           "n_ff_exp": 32, "head_dim": 32, "global_head_dim": 64, "n_kv_head": 2, "n_kv_head_full": 1,
           "canvas_length": 16, "sliding_window": 8, "is_sliding": [True, True, False]}
    m = dc.random_model(cfg, dtype, seed=1)
    assert m.compute_type == dtype and m.weight_bytes > 0
    s = Session(m, 2, 64)
    s.encode(np.arange(40, dtype=np.int32).reshape(2, 20), [])
    s.random_canvas(0, 3)
    ms = s.time_steps(3, graph=True)
    assert ms > 0
    prof = s.profile_step()  # op by op: every kind of op of a step shows up once with its calls
    names = {name.split(" ")[0] for name, _, _ in prof}
    assert {"gemm", "grouped_experts", "norm_rope", "token_stats", "accept_renoise"} <= names
    assert all(t >= 0 and n >= 1 for _, t, n in prof)
    assert dict((n, c) for n, _, c in prof)["accept_renoise"] == 1
    d = s.read_step(False)
    assert ((d["canvas"] >= 0) & (d["canvas"] < 1000)).all()
    assert np.isfinite(d["entropy"]).all()
