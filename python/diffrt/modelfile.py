"""Ollama-style Modelfiles: parse, validate, format.

Syntax (as Ollama's): one instruction per line, instructions case-insensitive, `#` starts a comment
line. A value is the rest of the line, or "quoted" on one line, or \"\"\"triple-quoted\"\"\" over
several lines (the closing quotes end a line). Instructions:

    FROM <.gguf path | checkpoint dir | store name>      exactly once
    PARAMETER <name> <value>                              see PARAMETERS; `stop` may repeat
    TEMPLATE <jinja chat template>                        a Go template is rejected (see docs/CLI.md)
    SYSTEM <text>
    MESSAGE <system|user|assistant> <text>                may repeat
    LICENSE <text>                                        may repeat
    ADAPTER, REQUIRES, ...                                 not supported: ModelfileError

Every error is a ModelfileError whose message carries the line number.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from .errors import ModelfileError
from .params import BY_NAME

# The generation parameters by their Modelfile / Ollama `options` name (diffrt/params.py).
PARAMETERS = BY_NAME
REPEATABLE = {"stop"}
ROLES = ("system", "user", "assistant")
SUPPORTED = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE")
# Ollama instructions we know but do not support yet (anything else is "unknown").
NOT_SUPPORTED = ("ADAPTER", "REQUIRES")

# Go-template markers ({{ .Prompt }}, {{ if .System }}, {{ end }}, {{ range .Messages }}).
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(\.|(if|range|with|else|end|block|define)\b)")


def convert_value(name: str, value, where: str = ""):
    """Check one parameter (a Modelfile string or a JSON value) and return it typed.
    `where` prefixes the error (e.g. "line 3: "). Raises ModelfileError."""
    p = PARAMETERS.get(name)
    if p is None:
        raise ModelfileError(f"{where}unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
    try:
        if isinstance(value, bool):
            raise ValueError
        if p.type is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
            v = int(value, 10) if isinstance(value, str) else int(value)
        elif p.type is float:
            v = float(value)
            if not math.isfinite(v):
                raise ValueError
        else:
            if not isinstance(value, str):
                raise ValueError
            v = value
    except (TypeError, ValueError):
        raise ModelfileError(f"{where}parameter {name} must be {p.type.__name__}, got {value!r}") from None
    err = p.check(v)
    if err:
        raise ModelfileError(f"{where}parameter {name} {err}, got {v!r}")
    return v


def check_temperatures(params: dict, where: str = ""):
    """t_min < t_max, when both are known (the sampler rejects anything else)."""
    lo, hi = params.get("t_min"), params.get("t_max")
    if lo is not None and hi is not None and not lo < hi:
        raise ModelfileError(f"{where}t_min ({lo}) must be < t_max ({hi})")


def check_template(text: str, where: str = ""):
    """A TEMPLATE must be a Jinja chat template (like tokenizer.chat_template). Ollama's Go templates
    use other variables and syntax; we reject them rather than guess a translation."""
    if _GO_TEMPLATE.search(text):
        raise ModelfileError(
            f"{where}TEMPLATE looks like an Ollama Go template ({{{{ .Prompt }}}}-style); diffrt takes "
            "a Jinja chat template over `messages` (as in tokenizer_config.json), see docs/CLI.md")
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise ModelfileError(f"{where}TEMPLATE is not a valid Jinja template: {e.message} "
                             f"(template line {e.lineno})") from None


@dataclasses.dataclass
class Modelfile:
    from_: str = ""
    parameters: dict = dataclasses.field(default_factory=dict)  # name -> value; stop -> list[str]
    template: str | None = None
    system: str | None = None
    messages: list = dataclasses.field(default_factory=list)  # [{"role", "content"}]
    license: list = dataclasses.field(default_factory=list)  # [text]

    def format(self) -> str:
        """Render as Modelfile text; parse(format(m)) == m."""
        out = [f"FROM {_quote(self.from_, 'FROM')}"]
        for name, v in self.parameters.items():
            for item in v if name in REPEATABLE else [v]:
                out.append(f"PARAMETER {name} {_quote(_fmt_value(item), 'PARAMETER ' + name)}")
        if self.template is not None:
            out.append(f"TEMPLATE {_quote(self.template, 'TEMPLATE', force_triple=True)}")
        if self.system is not None:
            out.append(f"SYSTEM {_quote(self.system, 'SYSTEM', force_triple=True)}")
        for m in self.messages:
            out.append(f"MESSAGE {m['role']} {_quote(m['content'], 'MESSAGE')}")
        for text in self.license:
            out.append(f"LICENSE {_quote(text, 'LICENSE', force_triple=True)}")
        return "\n".join(out) + "\n"


def _fmt_value(v):
    return repr(v) if isinstance(v, float) else str(v)


def _quote(value: str, what: str, force_triple=False) -> str:
    """The shortest quoting that parses back to `value` exactly."""
    if not force_triple and value and value == value.strip() and "\n" not in value and '"' not in value:
        return value
    text = f'"""{value}"""'
    lines = text.splitlines()
    try:
        got, end = _value(lines[0], lines, 1, "")
    except ModelfileError:
        got, end = None, 0
    if got != value or end != len(lines):  # e.g. an inner line ending with """
        raise ModelfileError(f"{what}: value cannot be written as a Modelfile string: {value!r}")
    return text


def parse(text: str, path: str = "Modelfile") -> Modelfile:
    """Parse Modelfile text; errors name `path` and the line."""
    mf = Modelfile()
    seen = {}  # instruction -> first line (for once-only instructions)
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}: "
        parts = line.split(None, 1)
        instr = parts[0].upper()
        rest = parts[1] if len(parts) > 1 else ""
        if instr in NOT_SUPPORTED:
            raise ModelfileError(f"{where}{instr} is not supported by diffrt")
        if instr not in SUPPORTED:
            raise ModelfileError(f"{where}unknown instruction {parts[0]!r}; expected one of {', '.join(SUPPORTED)}")
        if instr in ("FROM", "TEMPLATE", "SYSTEM") and instr in seen:
            raise ModelfileError(f"{where}{instr} given twice (first at line {seen[instr]})")
        seen.setdefault(instr, lineno)
        head = ""  # words before the value (PARAMETER name, MESSAGE role)
        if instr in ("PARAMETER", "MESSAGE"):
            sub = rest.split(None, 1)
            if len(sub) < 2:
                raise ModelfileError(f"{where}{instr} needs a {'name' if instr == 'PARAMETER' else 'role'} "
                                     "and a value")
            head, rest = sub
        value, i = _value(rest, lines, i, where)
        if instr == "FROM":
            if not value.strip():
                raise ModelfileError(f"{where}FROM needs a model: a .gguf file, a checkpoint dir or a name")
            mf.from_ = value
        elif instr == "PARAMETER":
            name = head.lower()
            v = convert_value(name, value, where)
            if name in REPEATABLE:
                mf.parameters.setdefault(name, []).append(v)
            elif name in mf.parameters:
                raise ModelfileError(f"{where}PARAMETER {name} given twice")
            else:
                mf.parameters[name] = v
            check_temperatures(mf.parameters, where)
        elif instr == "TEMPLATE":
            check_template(value, where)
            mf.template = value
        elif instr == "SYSTEM":
            mf.system = value
        elif instr == "MESSAGE":
            role = head.lower()
            if role not in ROLES:
                raise ModelfileError(f"{where}MESSAGE role must be one of {', '.join(ROLES)}, got {head!r}")
            mf.messages.append({"role": role, "content": value})
        elif instr == "LICENSE":
            mf.license.append(value)
    if "FROM" not in seen:
        raise ModelfileError(f"{path}: no FROM instruction (FROM names the model to start from)")
    return mf


def _value(rest: str, lines: list, i: int, where: str):
    """Unquote one value starting at `rest`; may consume further lines (returns the next index)."""
    if rest.startswith('"""'):
        body = rest[3:]
        collected = []
        while True:
            stripped = body.rstrip()
            if stripped.endswith('"""'):
                collected.append(stripped[:-3])
                return "\n".join(collected), i
            collected.append(body)
            if i >= len(lines):
                raise ModelfileError(f'{where}unterminated """ string (reached the end of the file)')
            body, i = lines[i], i + 1
    if rest.startswith('"'):
        if len(rest) < 2 or not rest.endswith('"'):
            raise ModelfileError(f'{where}unterminated " string')
        return rest[1:-1], i
    return rest, i


def read(path: str) -> Modelfile:
    """Parse the Modelfile at `path`."""
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), path)


def to_metadata(mf_params: dict) -> dict:
    """PARAMETERs → {GGUF key: value} (stop stays a list)."""
    return {PARAMETERS[name].key: v for name, v in mf_params.items()}


def from_metadata(meta: dict) -> dict:
    """{GGUF key: value} → PARAMETERs found among the keys (the model's defaults)."""
    out = {}
    for name, p in PARAMETERS.items():
        if p.key in meta:
            v = meta[p.key]
            out[name] = list(v) if name in REPEATABLE else p.type(v)
            if p.type is float and float(np.float32(v)) == v:
                # Stored as f32: show the shortest decimal that reads back to it (0.1, not 0.100000001).
                out[name] = float(str(np.float32(v)))
    return out
