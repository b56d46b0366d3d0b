"""`diffrt run MODEL [PROMPT]`: one-shot generation with a prompt, an interactive chat without.

The answer streams canvas by canvas; --live redraws the canvas being denoised at every step;
--verbose reports tokens/s and steps per canvas. Prompts go through the model's chat template
(multi-turn in the REPL) unless --raw is given or the model has none."""

from __future__ import annotations

import sys

from ..params import TABLE

# Generation flags: (flag, dest, type, help), from the one parameter table. None = the file's default.
SAMPLER_OPTIONS = [(p.cli, p.generate, p.type, p.help) for p in TABLE if p.cli]


def add_parser(sub):
    from .. import _core  # the compute types are the C++ table's (diffrt/compute_type.h)

    p = sub.add_parser("run", help="run a model: one prompt, or an interactive chat")
    p.add_argument("model", metavar="MODEL", help="a model name from the store or a .gguf file")
    p.add_argument("prompt", nargs="*", metavar="PROMPT", help="the prompt (omit for an interactive chat)")
    for flag, dest, typ, help_ in SAMPLER_OPTIONS:
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs (cuda: an NVIDIA GPU, when diffrt was built with CUDA)")
    p.add_argument(
        "--compute-type",
        dest="compute_type",
        default="auto",
        choices=_core.compute_types("cpu"),
        help="compute type: auto = the fastest this CPU supports for the file's weight type "
        f"(on cuda: int8 for Q8_0, bf16 for BF16, else f32; cuda takes {', '.join(_core.compute_types('cuda'))})",
    )
    p.add_argument("--raw", action="store_true", help="send the prompt as is, without the chat template")
    p.add_argument("--system", default=None, help="system prompt (default: the model's own, if any)")
    p.add_argument(
        "--think", action="store_true", help="ask the template for a thinking phase (enable_thinking)"
    )
    p.add_argument("--verbose", action="store_true", help="print tokens/s and steps per canvas")
    p.add_argument("--live", action="store_true", help="show the canvas being denoised, step by step")
    p.set_defaults(func=run)


def resolve_model(name: str) -> str:
    """MODEL argument -> .gguf path (the model store's resolver; a plain path without it). An
    hf.co/ORG/REPO[:QUANT] name not yet in the store is pulled first (diffrt/hub.py)."""
    from .. import hub

    if hub.is_hub_ref(name):
        return hub.resolve(name, progress=True)
    try:
        from ..store import resolve_model as store_resolve
    except ImportError:
        import os

        if not os.path.isfile(name):
            raise FileNotFoundError(f"{name}: no such model file")
        return name
    return store_resolve(name)


class Printer:
    """Streams one answer to `out`: committed text as it arrives, and with `live` the draft of the
    canvas being denoised, redrawn in place (ANSI save/restore cursor, terminals only). Text ends
    before the first stop string; text that might still become one is held back until it cannot."""

    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, out, live: bool, stop=()):
        self.out = out
        self.live = live and out.isatty()
        self.stop = [s for s in stop if s]
        self.printed = ""
        self.text = ""  # the answer so far, cut at a stop string
        self.stopped = False
        self.drafting = False

    def _write(self, s):
        self.out.write(s)
        self.out.flush()

    def step(self, ev):
        if not self.live or ev.text is None or self.stopped:
            return
        if not self.drafting:
            self._write("\x1b7")  # save the cursor where this canvas starts
            self.drafting = True
        draft = ev.text.replace("\n", " ")
        self._write(f"\x1b8\x1b[J{self.DIM}{draft}{self.RESET}")

    def canvas(self, ev) -> bool:
        """Show a committed canvas; False once a stop string has ended the answer."""
        if self.drafting:
            self._write("\x1b8\x1b[J")
            self.drafting = False
        text = ev.text
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            text, self.stopped = text[: min(cuts)], True
        self.text = text
        hold = 0 if self.stopped else max((len(s) - 1 for s in self.stop), default=0)
        shown = text[: len(text) - hold] if hold else text
        # a character split across canvases decodes as U+FFFD until its last byte arrives
        self._show(shown.rstrip("\ufffd") if not self.stopped else shown)
        return not self.stopped

    def _show(self, text):
        if not text.startswith(self.printed):  # an earlier character changed on decoding: show the rest
            common = 0
            while common < min(len(text), len(self.printed)) and text[common] == self.printed[common]:
                common += 1
            self.printed = text[:common]
        self._write(text[len(self.printed) :])
        self.printed = text

    def end(self):
        if self.drafting:
            self._write("\x1b8\x1b[J")
        self._show(self.text)
        self._write("\n")


def _params(args) -> dict:
    kw = {dest: getattr(args, dest) for _, dest, _, _ in SAMPLER_OPTIONS if getattr(args, dest) is not None}
    return kw


def answer(model, prompt_ids, args, out=sys.stdout, err=sys.stderr):
    """Generate for prompt ids, streaming to `out`. Returns (result, the answer text shown); the
    result is None when a stop string ended the answer early."""
    printer = Printer(out, args.live, _stop_strings(model))
    result = None
    stream = model.stream(prompt_ids, **_params(args))
    try:
        for ev in stream:
            if ev.kind == "step":
                printer.step(ev)
            elif ev.kind == "canvas":
                if not printer.canvas(ev):
                    break  # closing the stream cancels the generation
            else:
                result = ev.result
    finally:
        stream.close()
    printer.end()
    if args.verbose and result is not None:
        s = result.stats
        steps = (f"denoise + sampler {s['denoise_s']:.3f} s on the GPU" if getattr(model, "device", "cpu") == "cuda"
                 else f"denoise {s['denoise_s']:.3f} s, sampler {s['sampler_s']:.3f} s")
        err.write(
            f"canvases: {len(result.steps)}  steps per canvas: {result.steps}\n"
            f"new tokens: {s['new_tokens']}  total: {s['total_s']:.3f} s  {s['tokens_per_s']:.1f} tokens/s  "
            f"(prefill {s['prefill_s']:.3f} s, {steps})  seed: {s['seed']}\n"
        )
    return result, printer.text


def _stop_strings(model) -> list[str]:
    from ..gguf_names import KEYS

    stop = model.metadata.get(KEYS["DIFFRT_STOP"]) or []
    return [stop] if isinstance(stop, str) else list(stop)


def _preset_messages(model) -> list[dict]:
    """The model's Modelfile MESSAGEs, put before every conversation."""
    import json

    from ..gguf_names import KEYS

    text = model.metadata.get(KEYS["DIFFRT_MESSAGES"])
    return json.loads(text) if text else []


def _messages_ids(model, messages, args):
    from ..chat import encode_chat

    extra = {"enable_thinking": True} if args.think else {}
    return encode_chat(model.tokenizer, messages, add_generation_prompt=True, **extra)


def _system_prompt(model, args):
    if args.system is not None:
        return args.system or None
    from ..gguf_names import KEYS

    return model.metadata.get(KEYS["DIFFRT_SYSTEM"]) or None


def run(args, stdin=None, out=None, err=None) -> int:
    import diffrt

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr
    path = resolve_model(args.model)
    model = diffrt.load(path, device=getattr(args, "device", None) or "cpu", threads=args.threads,
                        compute_type=getattr(args, "compute_type", None) or "auto")
    tok = model.tokenizer
    if tok is None:
        raise diffrt.ConfigError(f"{path}: the file stores no tokenizer; diffrt run needs one")
    use_chat = not args.raw and bool(tok.chat_template)
    system = _system_prompt(model, args)

    prompt = " ".join(args.prompt)
    if not prompt and not stdin.isatty():
        prompt = stdin.read().strip()
    if prompt:  # one-shot
        if use_chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            ids = _messages_ids(model, msgs, args)
        else:
            ids = tok.encode(prompt)
        answer(model, ids, args, out, err)
        return 0
    return repl(model, args, use_chat, system, stdin, out, err)


def repl(model, args, use_chat, system, stdin, out, err) -> int:
    """Interactive chat: multi-turn history through the chat template; /bye or EOF quits."""
    from ..chat import split_thinking, thinking_markers

    preset = (
        ([{"role": "system", "content": system}] if system else []) + _preset_messages(model)
        if use_chat
        else []
    )
    history = list(preset)
    markers = thinking_markers(model.tokenizer.chat_template) if use_chat else None
    out.write("Type a message; /bye to quit, /clear to forget the conversation, /? for help.\n")
    while True:
        out.write(">>> ")
        out.flush()
        line = stdin.readline()
        if not line:  # EOF
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return 0
        if text == "/clear":
            history = list(preset)
            out.write("Cleared the conversation.\n")
            continue
        if text in ("/?", "/help"):
            out.write("/bye quit   /clear forget the conversation   anything else: your message\n")
            continue
        if use_chat:
            history.append({"role": "user", "content": text})
            ids = _messages_ids(model, history, args)
        else:
            ids = model.tokenizer.encode(text)
        try:
            result, shown = answer(model, ids, args, out, err)
        except ValueError as e:  # e.g. the conversation outgrew the context
            if use_chat:
                history.pop()
            err.write(f"Error: {e}\n")
            continue
        if use_chat:
            reply = shown
            if result is not None and result.answer is not None:
                reply = result.answer
            elif markers:
                reply = split_thinking(shown, markers)[1]
            history.append({"role": "assistant", "content": reply})
