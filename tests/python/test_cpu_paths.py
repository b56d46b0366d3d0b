"""Whole generations with every compute type on every CPU path this machine can run.

DIFFRT_CPU_PATH forces the kernels down (portable, avx2), so an AVX-512 machine also runs the
kernels that AVX2-only CPUs and other architectures use; each path runs in its own process (the
path is chosen once per process). Files: the shipped default model (F32, vocabulary 6144: the
self-conditioning product has K = 6144) and Q8_0 files with rows of 64, 96/160 (with F16 rows of
48 beside them) and 256/512 elements. Each compute type, in each process:
  - generates two canvases (self-conditioned steps included), frees the model, loads the file
    again and generates again: the same tokens (load -> free -> load -> generate);
  - denoises one canvas without and with self-conditioning, for the comparisons below.
Bounds: the f32 path is the exact one and every path's f32 logits agree to 1e-5 (relative); each
low-precision type is held to its test_compute_types.BOUNDS against the same type on the best path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_compute_types import BOUNDS, rel

ROOT = Path(__file__).resolve().parents[2]
COMPUTE_TYPES = ("f32", "bf16", "int8", "int8-w8a8", "int8-w8a16")
LOW_BOUND = {"bf16": BOUNDS["bf16"][1], "int8": BOUNDS["int8"][1], "int8-w8a8": BOUNDS["int8"][1],
             "int8-w8a16": BOUNDS["int8-w8a16"][1]}

SCRIPT = r"""
import gc, json, sys
import numpy as np
import diffrt
from diffrt import _core

files, cts, out = json.loads(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
res = {"path": np.array(_core.cpu_info()["path"])}
for name, path in files.items():
    for ct in cts:
        runs = []
        for attempt in range(2):  # load -> generate -> free, twice
            m = diffrt.load(path, compute_type=ct)
            L, V = m.config["canvas_length"], m.config["n_vocab"]
            prompt = [int(i) % V for i in (2, 17, 33, 101, 250, 7, 64, 300, 12, 5)]
            g = m.generate(prompt, max_new_tokens=2 * L, steps=6, seed=11, eos_ids=[])
            runs.append(np.array(g.raw_tokens, np.int32))
            if attempt == 0:
                s = m.session(batch=1)
                s.encode(np.array([prompt], np.int32))
                canvas = (np.arange(L, dtype=np.int32).reshape(1, L) * 7 + 3) % V
                lg = s.denoise(canvas)
                res[f"{name}|{ct}|logits"] = lg
                res[f"{name}|{ct}|self_cond"] = s.denoise(canvas, self_cond_logits=lg)
                del s
            res[f"{name}|{ct}|resolved"] = np.array(m.compute_type)
            res[f"{name}|{ct}|vocab"] = np.array(V)
            del m, g
            gc.collect()
        res[f"{name}|{ct}|tokens"] = runs[0]
        res[f"{name}|{ct}|tokens_reloaded"] = runs[1]
np.savez(out, **res)
"""


def cpu_paths() -> list[str]:
    from diffrt import _core

    best = _core._fast_gemm.best_path()
    order = ["portable", "neon"] if best == "neon" else ["portable", "avx2", "avx512", "amx"]  # ARM64 / x86
    return order[: order.index(best) + 1] if best in order else ["portable"]


@pytest.fixture(scope="module")
def path_runs(converted, tmp_path_factory):
    files = {
        "default": str(ROOT / "models" / "default.gguf"),
        "q8_64": str(converted("bf16", "q8_0")),
        "q8_96": str(converted("odd_cond", "q8_0")),
        "q8_256": str(converted("wide", "q8_0")),
    }
    out_dir = tmp_path_factory.mktemp("cpu_paths")
    runs = {}
    for p in cpu_paths():
        out = out_dir / f"{p}.npz"
        env = dict(os.environ, DIFFRT_CPU_PATH=p)
        proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(files), ",".join(COMPUTE_TYPES), str(out)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"path {p}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        runs[p] = dict(np.load(out))
    return files, runs


def test_every_path_generates_with_every_compute_type(path_runs):
    files, runs = path_runs
    for p, r in runs.items():
        assert str(r["path"]) == p
        for name in files:
            for ct in COMPUTE_TYPES:
                key = f"{name}|{ct}"
                assert str(r[f"{key}|resolved"]) == ct, (p, key)
                toks, again = r[f"{key}|tokens"], r[f"{key}|tokens_reloaded"]
                V = int(r[f"{key}|vocab"])
                L = r[f"{key}|logits"].shape[-2]
                assert toks.shape == (1, 2 * L), (p, key, toks.shape)
                assert ((toks >= 0) & (toks < V)).all(), (p, key)
                np.testing.assert_array_equal(toks, again, err_msg=f"{p} {key}: reloaded model generated otherwise")
                for part in ("logits", "self_cond"):
                    assert np.isfinite(r[f"{key}|{part}"]).all(), (p, key, part)


def test_f32_is_the_same_on_every_path(path_runs):
    files, runs = path_runs
    paths = list(runs)
    for name in files:
        for part in ("logits", "self_cond"):
            ref = runs[paths[-1]][f"{name}|f32|{part}"]
            for p in paths[:-1]:
                r = rel(runs[p][f"{name}|f32|{part}"], ref)
                assert r <= 1e-5, f"{name} {part}: path {p} vs {paths[-1]}: rel. error {r:.2e}"


def test_low_precision_agrees_across_paths(path_runs):
    """Each path's low-precision logits against the same compute type on the best path. Rounding
    activations to bf16 / int8 is discontinuous, so a path is held to its type's bound against f32
    (test_compute_types.BOUNDS; how far each type is from f32 is tested there), not to 1e-5."""
    files, runs = path_runs
    best = list(runs)[-1]
    for p, r in runs.items():
        for name in files:
            for ct, bound in LOW_BOUND.items():
                for part in ("logits", "self_cond"):
                    e = rel(r[f"{name}|{ct}|{part}"], runs[best][f"{name}|{ct}|{part}"])
                    assert e <= bound, f"{p} vs {best}: {name} {ct} {part}: rel. error {e:.3e} > {bound}"
