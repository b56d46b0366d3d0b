"""Chat messages -> prompt text with the model's stored chat template, rendered through jinja2 the
way transformers' `apply_chat_template` renders it (same sandboxed environment and globals), and
the split of a reply into thinking-channel text and the answer."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache

from .errors import ConfigError

# Names a message's reasoning may come under; transformers copies it to `thinking` and
# `reasoning_content` so templates of either convention read it.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Not jinja's own filter, which escapes HTML characters.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class _GenerationBlock(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} marks assistant text for training masks; render as is.
        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def _alias_reasoning(message: dict) -> dict:
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def render_chat(
    template: str | None,
    messages: list[dict],
    special_tokens: dict[str, str] | None = None,
    add_generation_prompt: bool = True,
    **kwargs,
) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]). Keys whose value is
    None are dropped (as transformers does); `special_tokens` ({'bos_token': '<bos>', ...}) and
    extra kwargs (e.g. enable_thinking=True) are visible to the template."""
    if not template:
        raise ConfigError("this model has no chat template (tokenizer.chat_template); use raw prompts")
    if not messages:
        raise ValueError("cannot render an empty conversation: give at least one message")
    chat = []
    for m in messages:
        if not isinstance(m, dict):
            raise TypeError(f"chat messages must be dicts with 'role' and 'content', got {m!r}")
        chat.append(_alias_reasoning({k: v for k, v in m.items() if v is not None}))
    tools = kwargs.pop("tools", None)
    documents = kwargs.pop("documents", None)
    context = {**(special_tokens or {}), **kwargs}  # kwargs win over special tokens, as in transformers
    return _compile(template).render(
        messages=chat,
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        **context,
    )


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> list[int]:
    """Rendered and tokenized as transformers does: the template writes BOS itself, so the text is
    encoded without adding special tokens."""
    text = render_chat(
        tokenizer.chat_template,
        messages,
        tokenizer.special_tokens_map(),
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
    return tokenizer.encode(text, add_bos=False)


# Gemma-style thinking channels: <start_of_thinking>...<end_of_thinking> (the tiny models) and
# Gemma 4's <|channel>thought ... <channel|>. Only pairs the template itself mentions are used.
_THINKING_PAIRS = [
    ("<start_of_thinking>", "<end_of_thinking>"),
    ("<|channel>thought", "<channel|>"),
    ("<think>", "</think>"),
]


def thinking_markers(template: str | None) -> tuple[str, str] | None:
    """The (open, close) thinking markers the template defines, or None."""
    if not template:
        return None
    for open_, close in _THINKING_PAIRS:
        if open_.split("thought")[0] in template and close in template:
            return open_, close
    return None


def split_thinking(text: str, markers: tuple[str, str] | None) -> tuple[str, str]:
    """(thinking, answer). Text inside the markers is thinking; an unclosed block is all thinking."""
    if not markers:
        return "", text
    open_, close = markers
    thinking, answer, rest = [], [], text
    pattern = re.compile(re.escape(open_) + r"(.*?)(" + re.escape(close) + r"|$)", re.DOTALL)
    pos = 0
    for m in pattern.finditer(rest):
        answer.append(rest[pos : m.start()])
        thinking.append(m.group(1).strip())
        pos = m.end()
    answer.append(rest[pos:])
    return "\n".join(t for t in thinking if t), "".join(answer).strip()
