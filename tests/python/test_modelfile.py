"""Modelfile parsing, validation and formatting (no model needed)."""

import pytest
from diffrt import ModelfileError
from diffrt import modelfile as mfmod

FULL = '''# a comment
from ./tiny.gguf
PARAMETER steps 12
parameter entropy_bound 0.5
PARAMETER t_min 0.1
PARAMETER t_max 0.9
PARAMETER stability_threshold 2
PARAMETER confidence_threshold 0.01
PARAMETER num_predict 64
PARAMETER seed 7
PARAMETER stop "<end_of_turn>"
PARAMETER stop User:
PARAMETER num_ctx 512
TEMPLATE """{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}
{% endfor %}"""
SYSTEM """You are terse.
Answer in one line."""
MESSAGE user "Hi"
MESSAGE assistant Hello there
LICENSE """Apache 2.0
  indented line"""
'''


def test_parse_full():
    m = mfmod.parse(FULL)
    assert m.from_ == "./tiny.gguf"
    assert m.parameters == {
        "steps": 12, "entropy_bound": 0.5, "t_min": 0.1, "t_max": 0.9, "stability_threshold": 2,
        "confidence_threshold": 0.01, "num_predict": 64, "seed": 7, "stop": ["<end_of_turn>", "User:"],
        "num_ctx": 512,
    }
    assert type(m.parameters["entropy_bound"]) is float and type(m.parameters["steps"]) is int
    assert m.template == "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert m.system == "You are terse.\nAnswer in one line."
    assert m.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    assert m.license == ["Apache 2.0\n  indented line"]


def test_round_trip():
    m = mfmod.parse(FULL)
    text = m.format()
    assert mfmod.parse(text) == m
    assert mfmod.parse(text).format() == text


@pytest.mark.parametrize("value", ['say "hi"', " padded ", 'ends with quote"', "two\nlines", "", '"'])
def test_round_trip_awkward_values(value):
    m = mfmod.Modelfile(from_="x", system=value, messages=[{"role": "user", "content": value}])
    assert mfmod.parse(m.format()) == m


def test_unwritable_value_is_an_error():
    m = mfmod.Modelfile(from_="x", system='line one"""\nline two')
    with pytest.raises(ModelfileError, match="SYSTEM"):
        m.format()


@pytest.mark.parametrize("text, line, match", [
    ("FROM a\nADAPTER ./lora.gguf\n", 2, "ADAPTER is not supported"),
    ("FROM a\nFOO bar\n", 2, "unknown instruction"),
    ("FROM a\n\nPARAMETER temperature 0.7\n", 3, "unknown parameter 'temperature'"),
    ("FROM a\nPARAMETER steps 1.5\n", 2, "steps must be int"),
    ("FROM a\nPARAMETER steps 0\n", 2, "steps must be >= 1"),
    ("FROM a\nPARAMETER entropy_bound abc\n", 2, "entropy_bound must be float"),
    ("FROM a\nPARAMETER entropy_bound nan\n", 2, "entropy_bound must be float"),
    ("FROM a\nPARAMETER t_max 0.3\nPARAMETER t_min 0.5\n", 3, r"t_min \(0.5\) must be < t_max \(0.3\)"),
    ("FROM a\nPARAMETER t_min 0.5\nPARAMETER t_max 0.5\n", 3, "must be < t_max"),
    ("FROM a\nPARAMETER seed -1\n", 2, "seed must be in"),
    ("FROM a\nPARAMETER steps 4\nPARAMETER steps 5\n", 3, "given twice"),
    ("FROM a\nPARAMETER steps\n", 2, "needs a name and a value"),
    ("FROM a\nFROM b\n", 2, "FROM given twice"),
    ("FROM a\nMESSAGE tool hi\n", 2, "MESSAGE role"),
    ('FROM a\nSYSTEM """never closed\nmore\n', 2, "unterminated"),
    ('FROM a\nSYSTEM "open\n', 2, "unterminated"),
    ("FROM a\nTEMPLATE {{ .Prompt }}\n", 2, "Go template"),
    ('FROM a\nTEMPLATE """{{ if .System }}x{{ end }}"""\n', 2, "Go template"),
    ("FROM a\nTEMPLATE {% for m in messages %}\n", 2, "not a valid Jinja template"),
    ("FROM\n", 1, "FROM needs a model"),
])
def test_errors_carry_line_numbers(text, line, match):
    with pytest.raises(ModelfileError, match=match) as e:
        mfmod.parse(text, "MF")
    assert f"MF:{line}:" in str(e.value)


def test_missing_from():
    with pytest.raises(ModelfileError, match="no FROM"):
        mfmod.parse("# only a comment\nSYSTEM hi\n")


def test_option_values_from_json():
    # The server checks Ollama `options` with the same rules (JSON numbers, not strings).
    assert mfmod.convert_value("steps", 3.0) == 3
    assert mfmod.convert_value("entropy_bound", 1) == 1.0
    for name, bad in [("steps", 2.5), ("steps", True), ("stop", 3), ("num_predict", "x")]:
        with pytest.raises(ModelfileError, match=name):
            mfmod.convert_value(name, bad)


def test_metadata_mapping_round_trips():
    params = mfmod.parse(FULL).parameters
    meta = mfmod.to_metadata(params)
    assert meta["diffusion.eb_max_steps"] == 12 and meta["diffrt.max_new_tokens"] == 64
    assert mfmod.from_metadata(meta) == params
