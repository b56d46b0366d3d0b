"""The one parameter table (diffrt/params.py) and the one sampler check (SamplerParams::validate)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import diffrt
import pytest
from diffrt import modelfile, params
from diffrt.generate import sampler_defaults
from diffrt.commands import run as run_cmd
from diffrt.server import generation, openai
from diffrt.server.registry import ModelRef, RequestError

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default.gguf"


def test_every_front_end_reads_the_table():
    sub = argparse.ArgumentParser().add_subparsers()
    run_cmd.add_parser(sub)
    flags = {o for a in sub.choices["run"]._actions for o in a.option_strings}
    for p in params.TABLE:
        assert modelfile.PARAMETERS[p.name] is p
        if p.cli:
            assert p.cli in flags, p.cli
        if p.generate:
            assert generation.GENERATE_KWARGS[p.name] == p.generate
        if p.openai:
            assert openai._FIELDS[p.openai] == p.name
    assert set(modelfile.PARAMETERS) == {p.name for p in params.TABLE}
    # the file-default keys generate() reads are the table's
    md = {p.key: p.default for p in params.TABLE if p.generate in params.SAMPLER_KWARGS}
    assert sampler_defaults(md)["steps"] == 48


# Values that passed the Python checks before and failed inside the engine's tick (for every
# request batched with them) or allocated without bound: the sampler's one check refuses them.
BAD = [
    dict(t_max=1e308), dict(t_max=1e39), dict(t_min=1e-300, t_max=2e-300), dict(t_min=0.0, t_max=1e-300),
    dict(stability_threshold=10**9), dict(stability_threshold=10**12), dict(steps=4096),
    dict(confidence_threshold=math.inf),
]


@pytest.mark.parametrize("bad", BAD)
def test_the_sampler_check_refuses(bad):
    values = {**params.transformers_defaults(), **bad}
    with pytest.raises(ValueError, match="invalid sampler parameter"):
        params.check_sampler(values)


def test_the_sampler_check_accepts_the_edges():
    params.check_sampler({**params.transformers_defaults(), "t_min": 0.0, "t_max": 1e6, "steps": 4095,
                          "stability_threshold": 4095, "entropy_bound": 1e30})
    params.check_sampler({**params.transformers_defaults(), "t_min": 1e-6, "t_max": 2e-6})  # near-greedy


@pytest.mark.parametrize("bad", BAD)
def test_server_options_get_a_400_before_any_batch(bad):
    ref = ModelRef("m:latest", "m.gguf", 0, 0.0, {}, {})
    options = {("num_predict" if k == "max_new_tokens" else k): v for k, v in bad.items()}
    with pytest.raises(RequestError, match="options"):
        generation.merge_options(ref, options)


def test_generate_refuses_before_any_compute():
    m = diffrt.load(DEFAULT_MODEL)
    for bad in BAD:
        with pytest.raises(ValueError):
            m.generate("Tell me about Noah.", **bad)
