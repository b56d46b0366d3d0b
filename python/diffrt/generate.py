"""Model.generate / Model.stream: prompts in, the C++ block-diffusion loop (spec §10.2), text out.

Parameters left as None take the file's sampler defaults (`diffusion.eb_*`, `diffrt.max_new_tokens`,
`diffrt.eos_token_ids`, `diffrt.pad_token_id`), else transformers' defaults. Everything is
validated here, before any compute, and raises ValueError naming the parameter.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .gguf_names import KEYS
from .params import SAMPLER_KWARGS, TABLE, check_sampler, transformers_defaults
from .tokenizer import file_eos_ids

# transformers' DiffusionGemmaGenerationConfig defaults (spec §10.1)
_HF_DEFAULTS = transformers_defaults()


@dataclass
class GenerationResult:
    """tokens: new ids with pads removed (a list per row for a batch); text: decoded without special
    tokens; steps: denoising steps executed per canvas; stats: timings and rates. For a template
    with a thinking channel, `thinking` and `answer` hold the two parts of `text`."""

    tokens: list
    text: object
    steps: list[int]
    stats: dict
    raw_tokens: list[list[int]] = field(repr=False, default_factory=list)  # per row, pads included
    thinking: object = None
    answer: object = None
    cancelled: bool = False


@dataclass
class StreamEvent:
    """kind 'step': a denoising step's draft (argmax canvas); kind 'canvas': a committed canvas;
    kind 'done': the end, with `result`. tokens/text are row 0's for a single prompt, else per row."""

    kind: str
    canvas: int = 0
    step: int = 0
    tokens: object = None  # step: the draft canvas; canvas: the canvas's new ids (pads removed)
    text: object = None  # step: draft text; canvas: all text so far
    accepted: object = None  # step: accepted mask
    temperature: float = 0.0
    result: GenerationResult | None = None


def _f32_decimal(x):
    """A value stored as fp32 in the file, read back as the decimal the converter was given
    (0.4000000059604645 -> 0.4): transformers forms t_max - t_min from Python floats in double."""
    return float(str(np.float32(x)))


def sampler_defaults(metadata: dict) -> dict:
    """The file's generation defaults, in generate()'s parameter names."""
    keys = {q.generate: q.key for q in TABLE if q.generate in SAMPLER_KWARGS}
    out = {}
    for name, key in keys.items():
        v = metadata.get(key)
        if v is None:
            v = _HF_DEFAULTS[name]
        elif isinstance(_HF_DEFAULTS[name], float):
            v = _f32_decimal(v)
        out[name] = v
    out["eos_ids"] = file_eos_ids(metadata)
    pad = metadata.get(KEYS["DIFFRT_PAD_ID"], metadata.get(KEYS["PAD_ID"]))
    out["pad_id"] = int(pad) if pad is not None and int(pad) >= 0 else None
    seed = metadata.get(KEYS["DIFFRT_SEED"])  # a Modelfile's PARAMETER seed; absent: fresh per call
    if seed is not None:
        out["seed"] = int(seed)
    return out


def _is_ids(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim == 1 and np.issubdtype(x.dtype, np.integer)
    return isinstance(x, (list, tuple)) and all(isinstance(i, (int, np.integer)) for i in x) and len(x) > 0


def prepare_prompts(prompt, tokenizer) -> tuple[list[list[int]], bool]:
    """(rows of ids, batched?). str -> tokenizer; list[int] -> one row; list of those -> a batch."""

    def one(p, where):
        if isinstance(p, str):
            if not p:
                raise ValueError(f"{where} is empty")
            if tokenizer is None:
                raise ValueError("this model has no tokenizer: pass token ids")
            return tokenizer.encode(p)
        if _is_ids(p):
            return [int(i) for i in p]
        if isinstance(p, (list, tuple, np.ndarray)) and len(p) == 0:
            raise ValueError(f"{where} is empty")
        raise ValueError(f"{where} must be a str or a list of token ids, got {type(p).__name__}")

    if isinstance(prompt, np.ndarray) and prompt.ndim == 2:
        prompt = [row for row in prompt]
    if isinstance(prompt, (str, np.ndarray)) or _is_ids(prompt):
        return [one(prompt, "prompt")], False
    if isinstance(prompt, (list, tuple)):
        if len(prompt) == 0:
            raise ValueError("prompt is empty")
        return [one(p, f"prompt[{i}]") for i, p in enumerate(prompt)], True
    raise ValueError(
        f"prompt must be a str, a list of token ids, or a list of those; got {type(prompt).__name__}"
    )


def resolve_params(defaults: dict, **given) -> dict:
    """Merge the call's parameters over the defaults and validate them (ValueError)."""
    p = dict(defaults)
    for k, v in given.items():
        if v is not None:
            p[k] = v

    def need_int(name):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer (got {v!r})")
        p[name] = int(v)

    def need_float(name):
        v = p[name]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, np.floating, np.integer))
            or not np.isfinite(v)
        ):
            raise ValueError(f"{name} must be a finite number (got {v!r})")
        p[name] = float(v)

    # Types here; each parameter's own range from the table (diffrt/params.py); then the sampler's
    # check, SamplerParams::validate() in C++, which every other front end asks too.
    by_kw = {q.generate: q for q in TABLE if q.generate}
    for name in SAMPLER_KWARGS:
        q = by_kw[name]
        need_int(name) if q.type is int else need_float(name)
        err = q.check(p[name])
        if err:
            raise ValueError(f"{name} {err} (got {p[name]!r})")
    check_sampler(p)
    seed = p.get("seed")
    if seed is None:
        seed = int(time.time_ns() & 0xFFFFFFFFFFFF)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64) (got {seed!r})")
    p["seed"] = int(seed)
    return p


def _tape_arrays(tape, batch, L):
    if tape is None:
        return None, None, None
    if not isinstance(tape, dict) or not {"init", "samples", "renoise"} <= set(tape):
        raise ValueError("tape must be a dict with 'init', 'samples' and 'renoise'")
    out = []
    for name in ("init", "samples", "renoise"):
        a = np.asarray(tape[name])
        if a.ndim == 2 and batch == 1:
            a = a[:, None, :]
        if a.ndim != 3 or a.shape[1:] != (batch, L):
            raise ValueError(
                f"tape['{name}'] must have shape [n, {batch}, {L}] (or [n, {L}] for one prompt), "
                f"got {list(np.shape(tape[name]))}"
            )
        out.append(np.ascontiguousarray(a, dtype=np.int32))
    if out[1].shape[0] != out[2].shape[0]:
        raise ValueError("tape['samples'] and tape['renoise'] must have the same number of steps")
    return tuple(out)


class Generator:
    """The generation front end of one model: defaults, prompt handling, validation, decoding."""

    def __init__(self, model):
        self.model = model
        md = model.metadata
        self.defaults = sampler_defaults(md)
        self.canvas_length = int(md.get(KEYS["CANVAS_LENGTH"]))
        self.context_length = int(md.get(KEYS["CONTEXT_LENGTH"]) or 0)
        self.vocab_size = int(model.tensors["token_embd.weight"].shape[0])
        self.tokenizer = getattr(model, "tokenizer", None)

    # ---- validation -------------------------------------------------------------------------
    def prepare(self, prompt, tape=None, **params):
        rows, batched = prepare_prompts(prompt, self.tokenizer)
        p = resolve_params(self.defaults, **params)
        for r, ids in enumerate(rows):
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt{f'[{r}]' if batched else ''} has token id {bad[0]} outside the "
                    f"vocabulary [0, {self.vocab_size})"
                )
        L = self.canvas_length
        n_canvas = -(-p["max_new_tokens"] // L)
        need = max(len(ids) for ids in rows) + n_canvas * L
        if self.context_length and need > self.context_length:
            raise ValueError(
                f"prompt of {max(len(i) for i in rows)} tokens + max_new_tokens={p['max_new_tokens']} "
                f"({n_canvas} canvas(es) of {L}) needs {need} positions; the model's context is "
                f"{self.context_length}"
            )
        tape_arrays = _tape_arrays(tape, len(rows), L)
        return rows, batched, p, tape_arrays

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, prompt, tape=None, on_step=None, on_canvas=None, **params) -> GenerationResult:
        rows, batched, p, tape_arrays = self.prepare(prompt, tape, **params)
        from . import _core

        init, samples, renoise = tape_arrays if tape_arrays else (None, None, None)
        step_cb = None
        if on_step is not None:

            def step_cb(ev):
                return on_step(self._step_event(ev, batched))

        canvas_cb = None
        if on_canvas is not None:

            def canvas_cb(ev):
                return on_canvas(ev)

        if getattr(self.model, "device", "cpu") == "cuda":
            return self._run_cuda(rows, batched, p, tape_arrays, step_cb, canvas_cb)
        out = _core.generate(
            self.model.engine,
            rows,
            max_new_tokens=p["max_new_tokens"],
            steps=p["steps"],
            t_min=p["t_min"],
            t_max=p["t_max"],
            entropy_bound=p["entropy_bound"],
            stability_threshold=p["stability_threshold"],
            confidence_threshold=p["confidence_threshold"],
            eos_ids=p["eos_ids"],
            pad_id=-1 if p["pad_id"] is None else p["pad_id"],
            seed=p["seed"],
            tape_init=init,
            tape_samples=samples,
            tape_renoise=renoise,
            on_step=step_cb,
            on_canvas=canvas_cb,
        )
        return self._result(out, p, batched)

    def _run_cuda(self, rows, batched, p, tape_arrays, step_cb, canvas_cb) -> GenerationResult:
        # The same C++ loop with a GPU session: each step (pass and sampler) on the device, the loop's
        # stopping rule and the callbacks on the host.
        from . import cuda

        tape = dict(zip(("init", "samples", "renoise"), tape_arrays)) if tape_arrays else None
        keys = ("max_new_tokens", "steps", "t_min", "t_max", "entropy_bound", "stability_threshold",
                "confidence_threshold", "eos_ids")
        out = cuda.generate(self.model, rows, seed=p["seed"], tape=tape, on_step=step_cb, on_canvas=canvas_cb,
                            pad_id=-1 if p["pad_id"] is None else p["pad_id"], **{k: p[k] for k in keys})
        return self._result(out, p, batched)

    def _strip(self, ids, pad_id):
        return [int(t) for t in ids if pad_id is None or t != pad_id]

    def _step_event(self, ev, batched):
        draft = ev["argmax"]
        tokens = [list(map(int, r)) for r in draft]
        text = [self.decode(t) for t in tokens] if self.tokenizer else None
        return StreamEvent(
            "step",
            canvas=ev["canvas"],
            step=ev["step"],
            tokens=tokens if batched else tokens[0],
            text=(text if batched else text[0]) if text else None,
            accepted=ev["accepted"] if batched else ev["accepted"][0],
            temperature=ev["temperature"],
        )

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if self.tokenizer else ""

    def _result(self, out, p, batched) -> GenerationResult:
        raw = [list(map(int, t)) for t in out["tokens"]]
        toks = [self._strip(t, p["pad_id"]) for t in raw]
        texts = [self.decode(t) for t in toks]
        thinking = answer = None
        if self.tokenizer is not None:
            from .chat import split_thinking, thinking_markers

            markers = thinking_markers(self.tokenizer.chat_template)
            if markers:
                specials = [s for s in self.tokenizer.special_strings() if s not in markers]
                parts = []
                for t in toks:
                    s = self.tokenizer.decode(t, skip_special_tokens=False)
                    for sp in specials:
                        s = s.replace(sp, "")
                    parts.append(split_thinking(s, markers))
                thinking = [a for a, _ in parts]
                answer = [b for _, b in parts]
        n_new = sum(len(t) for t in toks)
        passes = out["decoder_passes"]
        stats = {
            "total_s": out["total_s"],
            "prefill_s": out["prefill_s"],
            "encode_s": out["encode_s"],
            "denoise_s": out["denoise_s"],
            "sampler_s": out["sampler_s"],
            "new_tokens": n_new,
            "tokens_per_s": n_new / out["total_s"] if out["total_s"] > 0 else 0.0,
            "decoder_passes": passes,
            "tokens_per_forward": [len(t) / n if n else 0.0 for t, n in zip(toks, passes)],
            "canvases": len(out["steps"]),
            "seed": p["seed"],
        }
        one = (lambda x: x) if batched else (lambda x: x[0] if x is not None else None)
        return GenerationResult(
            tokens=one(toks),
            text=one(texts),
            steps=list(out["steps"]),
            stats=stats,
            raw_tokens=raw,
            thinking=one(thinking),
            answer=one(answer),
            cancelled=bool(out["cancelled"]),
        )

    # ---- streaming ----------------------------------------------------------------------------
    def stream(self, prompt, **kw):
        """Yields StreamEvents: 'step' per denoising step, 'canvas' per commit, then 'done'. The loop
        runs in a worker thread; closing the generator early cancels it after the current step."""
        rows, batched, p, _ = self.prepare(
            prompt, kw.get("tape"), **{k: v for k, v in kw.items() if k != "tape"}
        )
        events: queue.Queue = queue.Queue()
        stop = threading.Event()
        committed = [[] for _ in rows]
        pad = p["pad_id"]

        def on_step(ev):
            events.put(ev)
            return not stop.is_set()

        def on_canvas(ev):
            new = [self._strip(r, pad) for r in ev["tokens"]]
            for acc, n in zip(committed, new):
                acc.extend(n)
            text = [self.decode(c) for c in committed]
            events.put(
                StreamEvent(
                    "canvas",
                    canvas=ev["canvas"],
                    step=ev["steps"],
                    tokens=new if batched else new[0],
                    text=text if batched else text[0],
                )
            )
            return not stop.is_set()

        def work():
            try:
                events.put(
                    StreamEvent("done", result=self.run(prompt, on_step=on_step, on_canvas=on_canvas, **kw))
                )
            except BaseException as e:  # noqa: BLE001 (handed to the consumer, which re-raises it)
                events.put(e)

        t = threading.Thread(target=work, name="diffrt-generate", daemon=True)
        t.start()
        try:
            while True:
                ev = events.get()
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
                if ev.kind == "done":
                    return
        finally:
            stop.set()
            t.join()
