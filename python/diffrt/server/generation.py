"""A generation request from either API, checked and turned into prompt ids and sampler settings on
the event loop (so bad requests get a 400 at once, even when the worker is busy), then run on the
worker: committed canvases become text deltas (cut at EOS, stop strings and num_predict), per-step
drafts become draft events when asked for."""

from __future__ import annotations

import dataclasses
import time

from .. import chat as chatmod
from .. import model_info
from .. import modelfile as mfmod
from .. import params as params_table
from ..errors import ConfigError, DiffrtError
from ..gguf_names import KEYS
from .registry import ModelRef, RequestError

# Modelfile PARAMETER name -> keyword of model.generate / model.stream.
GENERATE_KWARGS = {p.name: p.generate for p in params_table.TABLE if p.generate}
# Ollama options that mean nothing to a diffusion sampler: accepted and ignored, so that clients
# sending their usual settings still work. Anything else unknown is a 400.
IGNORED_OPTIONS = {
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty", "penalize_newline", "mirostat", "mirostat_tau", "mirostat_eta",
    "tfs_z", "num_keep", "num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_thread", "numa",
    "low_vram", "vocab_only", "f16_kv", "logits_all",
}


def merge_options(ref: ModelRef, options, where: str = "options") -> dict:
    """The model's defaults with the request's options applied (Modelfile PARAMETER names)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise RequestError(f"'{where}' must be an object")
    params = dict(ref.defaults)
    try:
        for name, value in options.items():
            if name in IGNORED_OPTIONS or value is None:
                continue
            if name == "stop":
                values = [value] if isinstance(value, str) else value
                if not isinstance(values, list):
                    raise RequestError(f"{where}: stop must be a string or a list of strings")
                params["stop"] = [mfmod.convert_value("stop", v, f"{where}: ") for v in values]
            else:
                params[name] = mfmod.convert_value(name, value, f"{where}: ")
        mfmod.check_temperatures(params, f"{where}: ")
        # The sampler's own check, here on the event loop: a request it would refuse gets its 400
        # now, and never reaches a batch it would fail along with the requests beside it.
        sampler = params_table.transformers_defaults()
        sampler.update({GENERATE_KWARGS[k]: v for k, v in params.items()
                        if GENERATE_KWARGS.get(k) in params_table.SAMPLER_KWARGS})
        params_table.check_sampler(sampler)
    except (mfmod.ModelfileError, ValueError) as e:
        raise RequestError(f"{where}: {e}" if not str(e).startswith(where) else str(e)) from None
    return params


def eos_ids(md: dict) -> set:
    """The file's end-of-answer ids plus the tokenizer's EOS (ModelRef.eos_ids keeps them per model)."""
    from ..tokenizer import file_eos_ids

    ids = set(file_eos_ids(md))
    if isinstance(md.get(KEYS["EOS_ID"]), int):
        ids.add(md[KEYS["EOS_ID"]])
    return ids


@dataclasses.dataclass
class Prepared:
    ref: ModelRef
    prompt_ids: list
    params: dict  # PARAMETER name -> value (defaults + options)
    keep_alive: float
    drafts: bool = False  # stream per-step drafts too

    @property
    def max_new_tokens(self) -> int:
        return self.params.get("num_predict") or 256

    def generate_kwargs(self) -> dict:
        return {GENERATE_KWARGS[k]: v for k, v in self.params.items() if k in GENERATE_KWARGS}


def text_content(content, where="message") -> str:
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)):
                raise RequestError(f"{where}: only text content parts are supported")
            parts.append(p["text"])
        return "".join(parts)
    raise RequestError(f"{where}: content must be a string")


def check_messages(messages) -> list:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with 'role' and 'content'")
        if m.get("images"):
            raise RequestError(f"messages[{i}]: images are not supported yet")
        if m.get("tool_calls"):
            raise RequestError(f"messages[{i}]: tool calls are not supported yet")
        msg = {"role": m["role"], "content": text_content(m.get("content"), f"messages[{i}]")}
        for k in ("thinking", "reasoning_content"):
            if isinstance(m.get(k), str):
                msg[k] = m[k]
        out.append(msg)
    return out


def render(ref: ModelRef, messages: list, template: str | None = None, **kwargs) -> list:
    """Chat messages → prompt ids through the chat template (request's, else the model's)."""
    tmpl = template or ref.template
    if template:
        try:
            mfmod.check_template(template, "template: ")
        except mfmod.ModelfileError as e:
            raise RequestError(str(e)) from None
    if not tmpl:
        raise RequestError(f"model '{ref.name}' has no chat template; use /api/generate with raw=true")
    tok = ref.tokenizer
    try:
        text = chatmod.render_chat(tmpl, messages, tok.special_tokens_map(), add_generation_prompt=True, **kwargs)
    except (ConfigError, ValueError) as e:
        raise RequestError(str(e)) from None
    except Exception as e:  # a jinja error inside the template (raise_exception, undefined, ...)
        raise RequestError(f"the chat template failed: {e}") from None
    return tok.encode(text, add_bos=False)  # the template writes BOS itself


def chat_messages(ref: ModelRef, messages: list, system: str | None = None) -> list:
    """Modelfile MESSAGEs first; the model's SYSTEM unless the conversation has its own."""
    msgs = model_info.messages(ref.metadata) + messages
    sys_prompt = system if system is not None else model_info.system(ref.metadata)
    if sys_prompt and not any(m["role"] == "system" for m in msgs):
        msgs = [{"role": "system", "content": sys_prompt}] + msgs
    return msgs


def check_context(ref: ModelRef, prompt_ids: list, params: dict):
    canvas = ref.metadata.get(KEYS["CANVAS_LENGTH"]) or 1
    ctx = params.get("num_ctx") or ref.metadata.get(KEYS["CONTEXT_LENGTH"])
    n_new = -(-(params.get("num_predict") or 256) // canvas) * canvas  # whole canvases
    if ctx and len(prompt_ids) + n_new > ctx:
        raise RequestError(f"the prompt ({len(prompt_ids)} tokens) plus num_predict rounded up to whole "
                           f"canvases ({n_new}) exceeds the context window ({ctx}); shorten the prompt, "
                           "lower num_predict or raise num_ctx")
    if not prompt_ids:
        raise RequestError("the prompt is empty")


# --- the worker side ------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    text: str
    completion_tokens: int  # generated tokens kept (an EOS that ended the text counts)
    done_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    load_s: float
    total_s: float
    steps: int


class TextStream:
    """Committed tokens → text deltas. Ends at the first EOS, the first stop string or num_predict
    tokens; holds back text that may still turn into a stop string or an incomplete character."""

    def __init__(self, tokenizer, stops, eos_ids, limit):
        self.tok, self.stops, self.eos, self.limit = tokenizer, [s for s in stops if s], set(eos_ids), limit
        self.ids, self.text, self.sent, self.done_reason, self.n_eos = [], "", 0, None, 0

    def push(self, tokens) -> str:
        for t in tokens:
            if self.done_reason:
                break
            t = int(t)
            if t in self.eos:
                self.done_reason, self.n_eos = "stop", 1
            elif len(self.ids) >= self.limit:
                self.done_reason = "length"
            else:
                self.ids.append(t)
        text = self.tok.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            text, self.done_reason = text[:cut], "stop"
        self.text = text
        safe = len(text)
        if not self.done_reason:
            while safe and text[safe - 1] == "\ufffd":  # a character split across canvases
                safe -= 1
            for s in self.stops:  # a stop string may be completed by the next canvas
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:k]):
                        safe -= k
                        break
        return self._take(max(safe, self.sent))

    def finish(self) -> str:
        self.done_reason = self.done_reason or "length"
        return self._take(len(self.text))

    def _take(self, upto) -> str:
        delta, self.sent = self.text[self.sent:upto], max(self.sent, upto)
        return delta


def run(job, registry, prep: Prepared) -> Outcome:
    """On the worker: load (or reuse) the model, generate, emit ("text", delta) per committed canvas
    and ("draft", text) per step when asked; return the Outcome."""
    t0 = time.monotonic()
    model = registry.acquire(prep.ref)
    load_s = time.monotonic() - t0
    ts = TextStream(prep.ref.tokenizer, prep.params.get("stop") or [], prep.ref.eos_ids,
                    prep.max_new_tokens)
    steps = 0
    try:
        for kind, tokens in _events(model, prep, job):
            if kind == "draft":
                steps += 1
                job.emit(("draft", prep.ref.tokenizer.decode(tokens)))
                continue
            delta = ts.push(tokens)
            if delta:
                job.emit(("text", delta))
            if ts.done_reason:
                break  # closing the stream stops the generation
        if job.cancelled.is_set():
            ts.done_reason = "cancelled"
        delta = ts.finish()
        if delta:
            job.emit(("text", delta))
    except DiffrtError as e:
        raise RequestError(str(e), 500) from None
    finally:
        registry.release(prep.ref, prep.keep_alive)
    return Outcome(ts.text, len(ts.ids) + ts.n_eos, ts.done_reason, len(prep.prompt_ids), load_s,
                   time.monotonic() - t0, steps)


def _events(model, prep: Prepared, job):
    """The model's stream as ("draft", argmax ids of a step) and ("canvas", committed ids of a
    canvas). Stops (closing the model's stream) when the request is cancelled."""
    stream = model.stream(prep.prompt_ids, **prep.generate_kwargs())
    try:
        for ev in stream:
            if job.cancelled.is_set():
                return
            kind = getattr(ev, "kind", None)
            if kind == "step":
                if prep.drafts:
                    yield "draft", ev.tokens
            elif kind == "canvas":
                yield "canvas", ev.tokens
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
