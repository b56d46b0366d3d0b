"""_core.BatchEngine (canvas-level batching): requests with different parameters, prompt lengths and
seeds, denoised together in fixed slots and joining at canvas boundaries, give exactly what each
gives alone through generate() with the same seed; a tick allocates nothing; bad requests are
refused with ValueError and the engine keeps working."""

import numpy as np
import pytest

diffrt = pytest.importorskip("diffrt")
from diffrt import _core


@pytest.fixture(scope="module")
def model(converted):
    return diffrt.load(str(converted("default")))


def core(model):
    return model.engine


def run_all(eng, reqs):
    """Submit every request, tick until idle; returns {index: (canvas token lists, drafts, done events)}."""
    ids = {eng.submit(prompt, **kw): i for i, (prompt, kw) in enumerate(reqs)}
    out = {i: ([], [], []) for i in ids.values()}
    while not eng.idle:
        for kind, rid, canvas, step, tokens, done, cancelled in eng.step():
            canvases, drafts, dones = out[ids[rid]]
            if kind == "canvas":
                assert canvas == len(canvases)
                canvases.append(tokens)
            elif kind == "step":
                drafts.append((canvas, step, tokens))
            else:
                dones.append(cancelled)
    return out


def alone(model, prompt, kw):
    kw = {k: v for k, v in kw.items() if k != "want_steps"}
    return _core.generate(core(model), [prompt], **kw)["tokens"][0]


REQUESTS = [
    ([11, 50, 200, 7, 99, 300], dict(max_new_tokens=32, steps=6, seed=1)),
    ([5] * 13, dict(max_new_tokens=48, steps=3, seed=2, t_min=0.1, t_max=0.3)),
    ([9, 8], dict(max_new_tokens=16, steps=9, seed=3, entropy_bound=0.5, confidence_threshold=0.5)),
    ([100, 101, 102], dict(max_new_tokens=40, steps=5, seed=1, eos_ids=[7, 8, 9], pad_id=0)),
    ([42] * 20, dict(max_new_tokens=32, steps=4, seed=77, stability_threshold=2)),
    ([11, 50, 200, 7, 99, 300], dict(max_new_tokens=32, steps=6, seed=1)),  # a twin of the first
]


@pytest.mark.parametrize("slots", [1, 3, 4])
def test_batched_equals_alone(model, slots):
    eng = _core.BatchEngine(core(model), slots, 128)
    got = run_all(eng, REQUESTS)
    for i, (prompt, kw) in enumerate(REQUESTS):
        canvases, _, dones = got[i]
        assert dones == [False]
        assert sum(canvases, []) == alone(model, prompt, kw), f"request {i}"
    assert got[0][0] == got[5][0]


def test_drafts_and_eos(model):
    eng = _core.BatchEngine(core(model), 2, 128)
    reqs = [(p, dict(kw, want_steps=True)) for p, kw in REQUESTS[:4]]
    got = run_all(eng, reqs)
    for i, (prompt, kw) in enumerate(reqs):
        canvases, drafts, _ = got[i]
        assert len(drafts) >= len(canvases) >= 1
        # the last draft of each canvas is its commit (before the EOS -> pad rewrite)
        last = {c: t for c, s, t in drafts}
        for c, toks in enumerate(canvases):
            if kw.get("pad_id") is None:
                assert last[c] == toks
    assert sum(got[1][0], []) == alone(model, *REQUESTS[1])


def test_join_while_others_run_and_cancel(model):
    eng = _core.BatchEngine(core(model), 2, 128)
    p0, kw0 = REQUESTS[1]
    a = eng.submit(p0, **kw0)
    early = [ev[4] for _ in range(2) for ev in eng.step() if ev[0] == "canvas"]  # a runs alone a while
    b = eng.submit(*REQUESTS[0][:1], **REQUESTS[0][1])
    c = eng.submit([1, 2, 3], max_new_tokens=64, steps=8, seed=5)
    d = eng.submit([1, 2, 3], max_new_tokens=64, steps=8, seed=6)
    eng.cancel(d)  # queued: dropped without an event
    toks = {a: early, b: [], c: []}
    ended = {}
    while not eng.idle:
        for kind, rid, canvas, step, tokens, done, cancelled in eng.step():
            assert rid != d
            if kind == "canvas":
                toks[rid].append(tokens)
                if rid == c:
                    eng.cancel(c)
            elif kind == "done":
                ended[rid] = cancelled
    assert ended == {a: False, b: False, c: True}
    assert len(toks[c]) == 1
    assert sum(toks[b], []) == alone(model, *REQUESTS[0])
    assert sum(toks[a], []) == alone(model, p0, kw0)


def test_bad_requests_then_keeps_working(model):
    eng = _core.BatchEngine(core(model), 2, 64)
    for prompt, kw, match in [
        ([], {}, "empty"),
        ([1, 100000], {}, "outside the vocabulary"),
        ([1, 2], {"t_min": 0.5, "t_max": 0.5}, "t_min"),
        ([1, 2], {"steps": 0}, "steps"),
        ([1] * 40, {"max_new_tokens": 32}, "context"),
    ]:
        with pytest.raises(ValueError, match=match):
            eng.submit(prompt, **kw)
    assert eng.idle
    got = run_all(eng, REQUESTS[:1])
    assert sum(got[0][0], []) == alone(model, *REQUESTS[0])
    with pytest.raises(ValueError, match="slots"):
        _core.BatchEngine(core(model), 0, 64)


def test_no_allocation_per_tick(model):
    # Same requests with 4 and with 12 steps per canvas: the operator-new count must not grow with
    # the number of ticks (admission and canvas events may allocate; a step must not).
    eng = _core.BatchEngine(core(model), 3, 128)
    kw = dict(max_new_tokens=32, confidence_threshold=1e-9, eos_ids=[], pad_id=-1)
    counts = []
    for steps in (4, 12, 4, 12):
        reqs = [([11, 50, 200], dict(kw, steps=steps, seed=s)) for s in (1, 2, 3, 4)]
        before = _core._debug_alloc_count()
        run_all(eng, reqs)
        counts.append(_core._debug_alloc_count() - before)
    assert counts[2] == counts[3], counts


@pytest.mark.parametrize("compute_type", ["bf16", "int8"])
def test_batched_equals_alone_packed_paths(converted, compute_type):
    # The packed bf16 / int8 GEMMs see 16 to 48 rows here and 16 alone: each row's result must not
    # depend on how many rows share the pass.
    m = diffrt.load(str(converted("bf16")), compute_type=compute_type)
    eng = _core.BatchEngine(core(m), 3, 128)
    reqs = REQUESTS[:4]
    got = run_all(eng, reqs)
    for i, (prompt, kw) in enumerate(reqs):
        assert sum(got[i][0], []) == alone(m, prompt, kw), f"request {i}"
