"""The CPU engine's Python API (diffrt.load / Model.session / Session) and its fixed buffers:
errors for bad input, cache semantics, and zero allocations in a denoising step."""

from __future__ import annotations

import os

import diffrt
import numpy as np
import pytest
from diffrt import _core


@pytest.fixture(scope="module")
def model(converted):
    return diffrt.load(converted("default"))


def test_config(model):
    cfg = model.config
    assert (
        cfg["n_layer"] == 4 and cfg["n_embd"] == 64 and cfg["n_vocab"] == 512 and cfg["canvas_length"] == 16
    )
    assert cfg["head_dim"] == [16, 32, 16, 32] and cfg["n_kv_head"] == [2, 1, 2, 1]
    assert cfg["is_sliding"] == [True, False, True, False]
    assert cfg["final_logit_softcapping"] == 30.0
    assert model.metadata["general.architecture"] == "diffusion-gemma"


def test_session_shapes_and_cache(model):
    s = model.session(batch=1, max_context=64)
    rng = np.random.default_rng(0)
    s.encode(rng.integers(0, 512, 12))
    assert s.n_cached == 12
    canvas = rng.integers(0, 512, 16)
    a = s.denoise(canvas)
    assert a.shape == (16, 512) and a.dtype == np.float32
    assert np.all(np.abs(a) <= 30.0)  # soft-capped
    b = s.denoise(canvas[None])
    assert b.shape == (1, 16, 512)
    np.testing.assert_array_equal(a, b[0])  # denoise leaves the cache unchanged: same result again
    c = s.denoise(canvas, self_cond_logits=a)
    assert c.shape == (16, 512) and not np.array_equal(a, c)
    s.reset()
    assert s.n_cached == 0


def test_chunked_encode_equals_one_pass(model):
    # A prompt longer than a canvas is encoded in chunks of L; splitting it by hand must agree.
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 512, 40)
    canvas = rng.integers(0, 512, 16)
    s1 = model.session(max_context=64)
    s1.encode(ids)
    s2 = model.session(max_context=64)
    for part in (ids[:5], ids[5:23], ids[23:]):
        s2.encode(part)
    assert s1.n_cached == s2.n_cached == 40
    np.testing.assert_allclose(s1.denoise(canvas), s2.denoise(canvas), rtol=0, atol=1e-4)


def test_batch_rows_are_independent(model):
    rng = np.random.default_rng(2)
    p0, p1 = rng.integers(0, 512, 9), rng.integers(0, 512, 14)
    canvas = rng.integers(0, 512, (2, 16))
    s = model.session(batch=2, max_context=64)
    s.encode(p0[None], rows=[0])
    s.encode(p1[None], rows=[1])
    assert (s.n_cached_row(0), s.n_cached_row(1)) == (9, 14)
    both = s.denoise(canvas)
    for r, p in ((0, p0), (1, p1)):
        one = model.session(batch=1, max_context=64)
        one.encode(p)
        np.testing.assert_allclose(both[r], one.denoise(canvas[r]), rtol=0, atol=1e-5)


def test_bad_input(model):
    s = model.session(batch=1, max_context=32)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.encode([1, 2, 512])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.encode([-1])
    with pytest.raises(ValueError, match="integer array"):
        s.encode(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="max_context"):
        s.encode(np.zeros(33, np.int64))
    assert s.n_cached == 0  # nothing happened
    s.encode(np.zeros(17, np.int64))
    with pytest.raises(ValueError, match="exceeds max_context"):
        s.denoise(np.zeros(16, np.int64))  # 17 + 16 > 32
    s.reset()
    with pytest.raises(ValueError, match="expected shape"):
        s.denoise(np.zeros(15, np.int64))
    with pytest.raises(ValueError, match="self_cond_logits"):
        s.denoise(np.zeros(16, np.int64), self_cond_logits=np.zeros((16, 511), np.float32))
    with pytest.raises(ValueError, match="smaller than one canvas"):
        model.session(max_context=8)
    with pytest.raises(ValueError, match="batch"):
        model.session(batch=0)
    with pytest.raises(ValueError, match="device"):
        diffrt.load(model.path, device="tpu")
    with pytest.raises(ValueError, match="cuda"):
        diffrt.load(model.path, device="cuda")


def test_missing_tensor_is_a_format_error(converted, tmp_path):
    # Rename one tensor in a copy of the file: the engine names the tensor it misses.
    src = converted("default").read_bytes()
    name = b"blk.2.ffn_up.weight"
    assert src.count(name) == 1
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(src.replace(name, b"blk.2.ffn_uq.weight"))
    with pytest.raises(diffrt.FormatError, match="blk.2.ffn_up.weight"):
        _ = diffrt.load(bad).config  # the engine loads (and validates) on first use


def test_denoise_allocates_nothing(model):
    # the counter itself must work, else every "== 0" below holds vacuously: creating a session
    # allocates. Under tools/sanitize.sh the preloaded ASan runtime's operator new wins over ours.
    before = _core._debug_alloc_count()
    model.session(batch=1, max_context=32)
    if _core._debug_alloc_count() == before and "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("allocation counting is replaced by the AddressSanitizer runtime")
    assert _core._debug_alloc_count() > before
    s = model.session(batch=2, max_context=64)
    s.encode(np.arange(20).reshape(2, 10))
    canvas = np.ascontiguousarray(np.arange(32, dtype=np.int32).reshape(2, 16))
    s.denoise(canvas)  # first call: nothing lazy should remain, but do not count it
    assert s._s._debug_denoise_allocs(canvas, 5) == 0
    sc = np.ascontiguousarray(s.denoise(canvas))
    assert s._s._debug_denoise_allocs(canvas, 3, sc) == 0  # self-conditioned steps too
    # committing a canvas (an encoder pass of L tokens per row) allocates nothing either
    assert s._s._debug_encode_allocs(canvas) == 0
    assert s.n_cached == 26


def test_every_storage_type_runs_in_f32(converted):
    # F32, F16, BF16 and Q8_0 files all load and run on the f32 engine. The "bf16" tiny model's
    # weights are bf16 values: F32 and F16 hold them exactly, so those logits agree to f32 rounding;
    # Q8_0 re-quantises them (8-bit per-block scales): measured 4.8e-2 relative, bound 1e-1.
    rng = np.random.default_rng(3)
    prompt, canvas = rng.integers(9, 512, 12), rng.integers(0, 512, 16)

    def logits(out_type):
        m = diffrt.load(converted("bf16", out_type), compute_type="f32")
        s = m.session(max_context=64)
        s.encode(prompt)
        return m, s.denoise(canvas)

    m, ref = logits("f32")
    assert m.tensors["blk.0.attn_q.weight"].type == "F32"
    for out_type, stored, tol in (("auto", "BF16", 1e-5), ("f16", "F16", 1e-5), ("q8_0", "Q8_0", 1e-1)):
        m, got = logits(out_type)
        assert m.tensors["blk.0.attn_q.weight"].type == stored
        assert np.isfinite(got).all()
        r = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        assert r <= tol, f"{out_type}: {r:.2e}"


def test_the_engine_refuses_an_unknown_architecture(tmp_path):
    """The C++ architecture table (models/architectures.h) answers for files that reach the engine
    without the Python model's check: a ConfigError naming what it runs."""
    import gguf

    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "diffusion-gemma" in _core.architectures()
    with pytest.raises(diffrt.ConfigError, match="architecture 'llama' is not supported .*'diffusion-gemma'"):
        _core.Model.load(str(path), 0, "auto")
