"""The shipped default model (models/default.gguf + models/Modelfile) loads, generates and installs."""

import pathlib

import pytest

import diffrt
from diffrt import modelfile
from diffrt.cli import main as cli

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def model():
    return diffrt.load(MODELS / "default.gguf")


def test_default_model_is_a_small_diffusion_gemma(model):
    cfg = model.config
    assert model.architecture == "diffusion-gemma"
    assert cfg["n_vocab"] == 6144 and cfg["canvas_length"] == 32 and cfg["n_layer"] == 4
    assert (MODELS / "default.gguf").stat().st_size <= 30 * 2**20  # the size budget


def test_default_model_generates_the_same_text_for_the_same_seed(model):
    a = model.generate("Tell me about Moses.", seed=7, max_new_tokens=32)
    b = model.generate("Tell me about Moses.", seed=7, max_new_tokens=32)
    assert a.tokens == b.tokens and a.text == b.text
    assert len(a.steps) == 1 and 1 <= a.steps[0] <= 48
    assert all(0 <= t < 6144 for t in a.tokens)


def test_shipped_modelfile_parses_and_creates_a_store_model(tmp_path, monkeypatch, capsys):
    mf = modelfile.parse((MODELS / "Modelfile").read_text(), str(MODELS / "Modelfile"))
    assert mf.parameters["steps"] == 48
    monkeypatch.setenv("DIFFRT_MODELS", str(tmp_path))
    monkeypatch.chdir(MODELS)  # FROM ./default.gguf is relative to the Modelfile
    assert cli(["create", "default", "-f", str(MODELS / "Modelfile")]) == 0
    assert cli(["show", "default", "--parameters"]) == 0
    assert "entropy_bound" in capsys.readouterr().out
