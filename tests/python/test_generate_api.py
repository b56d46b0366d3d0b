"""Model.generate / Model.stream: parameter validation before compute, prompts of every form,
batches of different prompt lengths, streaming events, cancellation, and no allocation per step."""

import numpy as np
import pytest

diffrt = pytest.importorskip("diffrt")
from diffrt import _core


@pytest.fixture(scope="module")
def model(converted):
    return diffrt.load(str(converted("default")))


IDS = [11, 50, 200, 7, 99, 300]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"t_min": 0.8, "t_max": 0.8}, "t_min must be < t_max"),
        ({"t_min": 0.9, "t_max": 0.5}, "t_min must be < t_max"),
        ({"t_min": -0.1}, "t_min must be >= 0"),
        ({"entropy_bound": 0.0}, "entropy_bound"),
        ({"entropy_bound": -1.0}, "entropy_bound"),
        ({"steps": 0}, "steps"),
        ({"confidence_threshold": 0.0}, "confidence_threshold"),
        ({"stability_threshold": -1}, "stability_threshold"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"t_max": float("nan")}, "t_max"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_parameters(model, kw, match):
    with pytest.raises(ValueError, match=match):
        model.generate(IDS, **kw)


@pytest.mark.parametrize(
    "prompt,match",
    [
        ([], "empty"),
        ("", "empty"),
        ([[1, 2], []], "empty"),
        ([1, 512], "outside the vocabulary"),
        ([1, -3], "outside the vocabulary"),
        (3.5, "prompt"),
    ],
)
def test_invalid_prompts(model, prompt, match):
    with pytest.raises(ValueError, match=match):
        model.generate(prompt)


def test_prompt_too_long_for_context(model):
    ctx = model.metadata["diffusion-gemma.context_length"]
    with pytest.raises(ValueError, match="context"):
        model.generate(IDS, max_new_tokens=ctx)


def test_core_validates_too(model):
    # The C++ loop checks on its own (for C++ callers): InvalidArgument -> ValueError.
    eng = model.engine
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        _core.generate(eng, [IDS], t_min=0.5, t_max=0.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _core.generate(eng, [[1, 100000]])


def test_result_fields_and_rounding_up(model):
    r = model.generate(IDS, max_new_tokens=20, seed=3, eos_ids=[], pad_id=-1)
    assert len(r.raw_tokens) == 1 and len(r.raw_tokens[0]) == 32  # 20 rounds up to 2 canvases of 16
    assert r.tokens == r.raw_tokens[0] and isinstance(r.text, str)
    assert len(r.steps) == 2 and all(1 <= s <= 48 for s in r.steps)
    assert r.stats["new_tokens"] == 32 and r.stats["tokens_per_s"] > 0
    assert r.stats["decoder_passes"] == [sum(r.steps)]


def test_str_prompt_uses_tokenizer_with_bos(model):
    tok = model.tokenizer
    ids = tok.encode("the model is good")
    assert ids[0] == tok.bos_id  # tiny tokenizer: add_bos_token true
    a = model.generate("the model is good", seed=5, max_new_tokens=16)
    b = model.generate(ids, seed=5, max_new_tokens=16)
    assert a.raw_tokens == b.raw_tokens and a.text == b.text


def test_batch_rows_with_different_prompt_lengths(model):
    # Each row keeps its own positions: with per-row tapes, a batch row equals the row run alone.
    rng = np.random.default_rng(0)
    prompts = [[int(x) for x in rng.integers(9, 512, size=n)] for n in (5, 13)]
    tapes = [
        {
            "init": rng.integers(0, 512, size=(2, 16)),
            "samples": rng.integers(0, 512, size=(96, 16)),
            "renoise": rng.integers(0, 512, size=(96, 16)),
        }
        for _ in prompts
    ]
    kw = {"max_new_tokens": 32, "eos_ids": [], "pad_id": -1}
    alone = [model.generate(p, tape=t, **kw) for p, t in zip(prompts, tapes)]
    batch_tape = {k: np.stack([t[k] for t in tapes], axis=1) for k in ("init", "samples", "renoise")}
    both = model.generate(prompts, tape=batch_tape, **kw)
    assert both.raw_tokens == [a.raw_tokens[0] for a in alone]
    assert isinstance(both.tokens, list) and len(both.tokens) == 2


def test_tape_shape_errors(model):
    with pytest.raises(ValueError, match="tape"):
        model.generate(IDS, tape={"init": np.zeros((1, 16))})
    with pytest.raises(ValueError, match=r"tape\['samples'\]"):
        model.generate(
            IDS, tape={"init": np.zeros((1, 16)), "samples": np.zeros((3, 15)), "renoise": np.zeros((3, 16))}
        )
    with pytest.raises(ValueError, match="tape has 3 steps"):
        model.generate(
            IDS,
            max_new_tokens=16,
            tape={"init": np.zeros((1, 16)), "samples": np.zeros((3, 16)), "renoise": np.zeros((3, 16))},
        )


def test_on_step_and_cancel(model):
    seen = []

    def on_step(ev):
        seen.append((ev.canvas, ev.step, len(ev.tokens)))
        return ev.step < 2  # cancel after the third step

    r = model.generate(IDS, seed=1, max_new_tokens=32, on_step=on_step)
    assert r.cancelled and seen == [(0, 0, 16), (0, 1, 16), (0, 2, 16)]
    assert r.raw_tokens == [[]] and r.steps == [3]


def test_callback_exception_propagates(model):
    def boom(ev):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        model.generate(IDS, seed=1, on_step=boom)


def test_stream_events(model):
    events = list(model.stream(IDS, seed=2, max_new_tokens=32, eos_ids=[], pad_id=-1))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("canvas") == 2
    result = events[-1].result
    assert kinds.count("step") == sum(result.steps)
    canvases = [e for e in events if e.kind == "canvas"]
    assert canvases[0].tokens + canvases[1].tokens == result.tokens
    assert canvases[1].text == result.text
    # the last draft of each canvas is what was committed
    last_draft = [events[i - 1].tokens for i, e in enumerate(events) if e.kind == "canvas"]
    assert last_draft == [c.tokens for c in canvases]
    again = model.generate(IDS, seed=2, max_new_tokens=32, eos_ids=[], pad_id=-1)
    assert again.raw_tokens == result.raw_tokens


def test_stream_closed_early_cancels(model):
    gen = model.stream(IDS, seed=2, max_new_tokens=64)
    first = next(gen)
    assert first.kind == "step"
    gen.close()  # must not hang: the worker is told to stop and joined


def test_no_allocation_per_step(model):
    # Same call with 4 and with 12 steps per canvas: the operator-new count must not grow with steps.
    eng = model.engine
    kw = {
        "max_new_tokens": 32,
        "t_min": 0.4,
        "t_max": 0.8,
        "entropy_bound": 0.1,
        "stability_threshold": 1,
        "confidence_threshold": 1e-9,
        "eos_ids": [],
        "pad_id": -1,
        "seed": 1,
    }
    counts = []
    for steps in (4, 12, 4, 12):
        before = _core._debug_alloc_count()
        out = _core.generate(eng, [IDS], steps=steps, **kw)
        counts.append(_core._debug_alloc_count() - before)
        assert out["steps"] == [steps, steps]
    assert counts[2] == counts[3], counts
