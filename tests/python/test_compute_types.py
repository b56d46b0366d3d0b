"""compute_type bf16 / int8 against the exact f32 path, on the conditioned bf16 tiny model.

The model ("bf16" in tests/conftest.py) is random but conditioned like a trained one (decisive
routing, unit-scale logits), so low-precision paths can be judged on it (DESIGN.md: an
unconditioned random model is chaotic in bf16). Same file, same prompt, same 4 random canvases
(denoised without and with self-conditioning: 8 logit tensors, 128 positions); the f32 path is the
reference. Stated bounds, with what was measured on this machine's AVX-512 path in brackets:

  compute type   layer-0 K         worst logits rel. err.   top-1 agreement (all positions)
  bf16           <= 1e-2 [1.9e-3]  <= 3e-2   [8.4e-3]   >= 0.95  [0.99]
  int8 (mix)     <= 3e-2 [1.0e-2]  <= 1.2e-1 [8.9e-2]   >= 0.85  [0.95]
  int8-w8a16     <= 3e-2 [6.7e-3]  <= 8e-2   [4.8e-2]   >= 0.90  [0.96]

bf16 is one rounding of weights and activations to 8 mantissa bits (2^-9 relative each) per GEMM;
int8 rounds both to a max-scaled 8-bit grid (step/sqrt(12) ≈ 0.3% of max per operand, several
times bf16's) and the errors add over 4 layers of attention and MoE. A position whose top two
logits lie within that error may flip, hence agreement below 1.
"""

from __future__ import annotations

import diffrt
import numpy as np
import pytest

PROMPT = np.array([[2, 17, 33, 101, 250, 7, 64, 300, 12, 5, 99, 180]], np.int32)
# compute type: (layer-0 K bound, logits bound, top-1 agreement bound)
BOUNDS = {"bf16": (1e-2, 3e-2, 0.95), "int8": (3e-2, 1.2e-1, 0.85), "int8-w8a16": (3e-2, 8e-2, 0.90)}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(path, compute_type):
    """(resolved type, [(logits, self-conditioned logits)] of 4 canvases after the prompt, layer-0 K)."""
    model = diffrt.load(path, compute_type=compute_type)
    s = model.session(batch=1)
    s.encode(PROMPT)
    k0, _ = s._s._kv(0, 0)
    L, V = model.config["canvas_length"], model.config["n_vocab"]
    rng = np.random.default_rng(3)
    out = []
    for _ in range(4):
        canvas = rng.integers(0, V, size=(1, L), dtype=np.int32)
        logits = s.denoise(canvas)
        out.append((logits, s.denoise(canvas, self_cond_logits=logits)))
    return model.compute_type, out, k0


@pytest.fixture(scope="module")
def bf16_file(converted):
    return converted("bf16")


@pytest.fixture(scope="module")
def f32_run(bf16_file):
    return run(bf16_file, "f32")


@pytest.mark.parametrize("compute_type", ["bf16", "int8", "int8-w8a16"])
def test_low_precision_logits_track_f32(compute_type, bf16_file, f32_run):
    _, ref, ref_k0 = f32_run
    resolved, got, k0 = run(bf16_file, compute_type)
    assert resolved == compute_type
    k_tol, tol, agree_min = BOUNDS[compute_type]
    assert rel(k0, ref_k0) <= k_tol
    same = []
    for (a, a_sc), (b, b_sc) in zip(got, ref):
        for x, y in ((a, b), (a_sc, b_sc)):
            assert np.isfinite(x).all()
            r = rel(x, y)
            assert r <= tol, f"{compute_type}: logits rel. error {r:.3e} > {tol}"
            same.append(x.argmax(-1) == y.argmax(-1))
    agree = float(np.mean(same))
    assert agree >= agree_min, f"{compute_type}: top-1 agreement {agree:.3f} < {agree_min}"


def test_auto_rule(bf16_file, converted):
    """auto: bf16 weights -> bf16 on the x86 paths (AVX2, AVX-512, AMX: faster than f32 there), f32 on
    portable and NEON; f32 -> f32; Q8_0 -> int8."""
    from diffrt import _core

    bf16_fast = _core.cpu_info()["path"] in ("avx2", "avx512", "amx")
    assert diffrt.load(bf16_file).compute_type == ("bf16" if bf16_fast else "f32")
    assert diffrt.load(converted("default")).compute_type == "f32"
    assert diffrt.load(converted("bf16", "q8_0")).compute_type == "int8"
    assert diffrt.load(bf16_file, compute_type="f32").compute_type == "f32"


def test_bad_compute_type_is_a_value_error(bf16_file):
    with pytest.raises(ValueError, match="compute_type"):
        diffrt.load(bf16_file, compute_type="int4")


def test_q8_0_file_runs_int8_close_to_its_own_f32(converted):
    """A Q8_0 file: int8 (re-quantised per row at load) stays near the f32 path on the same file."""
    path = converted("bf16", "q8_0")
    _, ref, _ = run(path, "f32")
    resolved, got, _ = run(path, "auto")
    assert resolved == "int8"
    for (a, a_sc), (b, b_sc) in zip(got, ref):
        assert rel(a, b) <= BOUNDS["int8"][1] and rel(a_sc, b_sc) <= BOUNDS["int8"][1]


def test_packed_steps_allocate_nothing(bf16_file):
    for ct in ("bf16", "int8"):
        model = diffrt.load(bf16_file, compute_type=ct)
        s = model.session(batch=1)
        s.encode(PROMPT)
        L = model.config["canvas_length"]
        canvas = np.ascontiguousarray(np.arange(L, dtype=np.int32).reshape(1, L))
        sc = np.ascontiguousarray(s.denoise(canvas))
        assert s._s._debug_denoise_allocs(canvas, 2, sc) == 0, ct
        assert s._s._debug_denoise_allocs(canvas, 2) == 0, ct


FORCED_PATH_SCRIPT = """
import sys
import numpy as np
import diffrt
from diffrt import _core
path, out = sys.argv[1], sys.argv[2]
res = {"path": np.array(_core.cpu_info()["path"]), "auto": np.array(diffrt.load(path).compute_type)}
for ct in ("bf16", "int8"):
    m = diffrt.load(path, compute_type=ct)
    s = m.session(batch=1)
    s.encode(np.array(PROMPT_IDS, np.int32))
    L = m.config["canvas_length"]
    res[ct] = s.denoise(np.arange(L, dtype=np.int32).reshape(1, L) * 7 % m.config["n_vocab"])
np.savez(out, **res)
""".replace("PROMPT_IDS", repr(PROMPT.tolist()))


def run_forced(path, cpu_path, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / f"{cpu_path}.npz"
    env = dict(os.environ, DIFFRT_CPU_PATH=cpu_path)
    subprocess.run(
        [sys.executable, "-c", FORCED_PATH_SCRIPT, str(path), str(out)], env=env, check=True, timeout=300
    )
    return np.load(out)


def test_every_forced_cpu_path_gives_the_same_model_output(bf16_file, tmp_path):
    """DIFFRT_CPU_PATH forces the packed GEMMs down to avx2 / portable inside a whole model, and auto
    resolves to f32 on portable (bf16 on the x86 paths). The kernels of every path agree to ~1e-8
    on the same inputs (test_fast_gemm.py), but rounding activations to bf16 / int8 is discontinuous:
    a 1e-7 difference upstream (f32 summation order in attention) can move one element across a
    rounding boundary, one bf16 ulp (2^-8) of that element, which the bidirectional decoder then
    spreads (measured: one token 1.6e-4 after decoder layer 1, 3.6e-3 at the logits for bf16; 1e-7
    for int8 where no boundary was crossed). So paths are held to the bounds of their compute type
    against f32 (BOUNDS), not to a kernel-level tolerance."""
    from diffrt import _core

    best = _core._fast_gemm.best_path()
    lower = "neon" if best == "neon" else "avx2"  # ARM64 / x86
    runs = {p: run_forced(bf16_file, p, tmp_path) for p in ("portable", lower, best)}
    for p, r in runs.items():
        assert str(r["path"]) == p
        assert str(r["auto"]) == ("bf16" if p in ("avx2", "avx512", "amx") else "f32")
        for ct in ("bf16", "int8"):
            assert rel(r[ct], runs[best][ct]) <= BOUNDS[ct][1], (p, ct, rel(r[ct], runs[best][ct]))


def test_convert_type_int8_writes_q8_0(tiny_checkpoint, tmp_path):
    """`diffrt convert --type int8` is the documented alias of q8_0: the same bytes' types, and the
    file loads with compute_type auto = int8."""
    from diffrt.cli import main

    out = tmp_path / "int8.gguf"
    assert main(["convert", str(tiny_checkpoint("bf16")), "-o", str(out), "--type", "int8", "--no-progress"]) == 0
    import gguf

    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types == {"Q8_0", "F32"}  # weight matrices int8, norms/scales/router f32
    assert diffrt.load(out).compute_type == "int8"


def test_run_cli_compute_type_option():
    import argparse

    from diffrt.commands import run as run_cmd

    sub = argparse.ArgumentParser().add_subparsers()
    run_cmd.add_parser(sub)
    p = sub.choices["run"]
    assert p.parse_args(["m.gguf", "--compute-type", "int8"]).compute_type == "int8"
    assert p.parse_args(["m.gguf"]).compute_type == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["m.gguf", "--compute-type", "int4"])


def test_denoise_into_caller_buffer(bf16_file):
    """Session.denoise(out=buf) writes the same logits as a fresh array, into buf, and returns it."""
    model = diffrt.load(bf16_file, compute_type="int8")
    s = model.session(batch=1)
    s.encode(PROMPT)
    L, V = model.config["canvas_length"], model.config["n_vocab"]
    canvas = np.random.default_rng(5).integers(0, V, size=L, dtype=np.int32)
    fresh = s.denoise(canvas)
    buf = np.full((L, V), np.nan, np.float32)
    assert s.denoise(canvas, out=buf) is buf
    np.testing.assert_array_equal(buf, fresh)
    sc = s.denoise(canvas, self_cond_logits=fresh)
    assert s.denoise(canvas, self_cond_logits=fresh, out=buf) is buf
    np.testing.assert_array_equal(buf, sc)
    with pytest.raises(ValueError, match="out"):
        s.denoise(canvas, out=np.zeros((L, V), np.float64))
