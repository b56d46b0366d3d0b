"""Whole-generation parity with transformers by tape replay (spec §10.3): transformers' generate()
runs with torch.randint / torch.multinomial wrapped to record their results; diffrt replays those
draws and must produce token-identical output (pads included) and the same steps per canvas."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffrt = pytest.importorskip("diffrt")

from record_tape import record_reference  # noqa: E402  (tools/, on sys.path via conftest)


def prompt(n, batch=1, vocab=512, seed=0):
    return np.random.default_rng(seed).integers(9, vocab, size=(batch, n)).astype(np.int64)


@pytest.fixture(scope="module")
def default_pair(converted, tiny_hf_model):
    return diffrt.load(str(converted("default"))), tiny_hf_model("default")


def replay(model, prompt_ids, tape, **kw):
    rows = [list(map(int, r)) for r in prompt_ids]
    r = model.generate(rows if len(rows) > 1 else rows[0], tape=tape, **kw)
    return np.array(r.raw_tokens), r


def test_defaults(default_pair):
    # No parameters on either side: each takes its own defaults (generation_config.json vs the file).
    model, hf = default_pair
    ids = prompt(12)
    ref, tape, steps = record_reference(hf, ids, seed=1)
    got, r = replay(model, ids, tape)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps


def test_early_stopping(default_pair):
    # Low temperature + a confidence threshold the canvases reach after a few dozen steps; batch 2
    # so that one row finishes (and is frozen) while the other still denoises. (On random tiny
    # weights the argmax never repeats, so stability_threshold=0 is what makes rows stop here.)
    model, hf = default_pair
    ids = prompt(10, batch=2, seed=3)
    kw = {
        "max_new_tokens": 48,
        "steps": 48,
        "t_min": 0.01,
        "t_max": 0.05,
        "entropy_bound": 0.5,
        "stability_threshold": 0,
        "confidence_threshold": 0.5,
    }
    ref, tape, steps = record_reference(hf, ids, seed=2, **kw)
    assert sum(steps) < 48 * len(steps)  # the case really stops early
    tpf = record_reference.tokens_per_forward
    got, r = replay(model, ids, tape, **kw)
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps
    # per-row decoder passes (a frozen row stops counting), as transformers' tokens_per_forward
    # (transformers divides in fp32)
    np.testing.assert_array_equal(np.float32(r.stats["tokens_per_forward"]), tpf.astype(np.float32))


@pytest.mark.parametrize("stability", [1, 3])
def test_stability_stopping(default_pair, stability):
    # A constant canvas: the argmax settles and rows stop once it repeats stability + 1 times
    # (the confidence threshold is set out of the way).
    model, hf = default_pair
    ids = prompt(10, batch=2, seed=3)
    canvas = np.random.default_rng(0).integers(0, 512, size=(2, 16))
    kw = {"max_new_tokens": 48, "stability_threshold": stability, "confidence_threshold": 10.0}
    ref, tape, steps = record_reference(hf, ids, seed=2, fixed_canvas=canvas, **kw)
    assert min(steps) < 48
    got, r = replay(model, ids, tape, **kw)
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps


def test_eos_and_pad(default_pair):
    model, hf = default_pair
    ids = prompt(12, seed=5)
    kw = {"max_new_tokens": 48, "eos_token_id": None, "pad_token_id": None}
    plain, _, _ = record_reference(hf, ids, seed=4, **kw)
    L = 16
    eos = int(plain[0, L + 5])  # a token of the second canvas: EOS there, pads after it, stop
    ref, tape, steps = record_reference(
        hf, ids, seed=4, max_new_tokens=48, eos_token_id=[eos], pad_token_id=0
    )
    assert ref.shape[1] == 2 * L and (ref[0, L + 6 :] == 0).all() and ref[0, L + 5] == eos
    got, r = replay(model, ids, tape, max_new_tokens=48, eos_ids=[eos], pad_id=0)
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps
    assert r.tokens == [t for t in ref[0].tolist() if t != 0]  # pads removed


def test_long_prompt_several_canvases(converted, tiny_hf_model):
    # 6 layers (5 sliding : 1 full), prompt 20 > W = 8; max_new_tokens 40 rounds up to 3 canvases.
    model, hf = diffrt.load(str(converted("long"))), tiny_hf_model("long")
    ids = prompt(20, seed=7)
    kw = {"max_new_tokens": 40, "eos_token_id": None, "pad_token_id": None}
    ref, tape, steps = record_reference(hf, ids, seed=6, **kw)
    assert ref.shape[1] == 48
    got, r = replay(model, ids, tape, max_new_tokens=40, eos_ids=[], pad_id=-1)
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps


def test_batch2(default_pair):
    model, hf = default_pair
    ids = prompt(12, batch=2, seed=9)
    ref, tape, steps = record_reference(hf, ids, seed=8, max_new_tokens=32)
    got, r = replay(model, ids, tape, max_new_tokens=32)
    np.testing.assert_array_equal(got, ref)
    assert r.steps == steps
