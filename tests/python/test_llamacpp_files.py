"""Files made by llama.cpp's own DiffusionGemma tools (PR #24423's convert_hf_to_gguf.py, then
llama-quantize: the way the community's GGUFs are made) work in diffrt (issue 15 item 5).

tests/data/llamacpp/ holds, made by tools/make_llamacpp_fixture.py (its docstring has the PR commit
and every step): the tiny checkpoint (spec Appendix A, with a Gemma-style byte-fallback tokenizer of
512 entries), llamacpp-f32.gguf (converted with --outtype f32) and llamacpp-q8_0.gguf
(llama-quantize F32 -> Q8_0). No llama.cpp is needed here: diffrt converts the same checkpoint to
F32 and Q8_0 itself and the two makers' files are compared:
- both llama.cpp files load, with the model configuration of diffrt's conversion;
- their tensors are byte-identical to diffrt's conversion of the same type (names, types, shapes,
  data), so the logits are bit-identical, with and without self-conditioning;
- the tokenizer diffrt rebuilds from their tokenizer.ggml.* arrays (they carry no tokenizer.json)
  encodes and decodes like the checkpoint's tokenizer.json, has its special tokens and the chat
  template from tokenizer.chat_template;
- text generation (Model.generate, `diffrt run`) works on them.
What the PR's files lack that diffrt's carry: the generation config's EOS list and pad id
(diffrt.eos_token_ids / diffrt.pad_token_id) and max_new_tokens, so the sampler defaults differ there
(checked below), and final_logit_softcapping (diffrt uses transformers' 30, as the file's config shows).
"""

from __future__ import annotations

import json
from pathlib import Path

import diffrt
import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")
from diffrt.chat import encode_chat
from diffrt.cli import main
from diffrt.gguf_names import KEYS
from diffrt.tokenizer import Tokenizer

DATA = Path(__file__).resolve().parents[1] / "data" / "llamacpp"
CKPT = DATA / "checkpoint"
TYPES = ("f32", "q8_0")
FILE_TYPE = {"f32": 0, "q8_0": 7}  # llama_ftype ALL_F32, MOSTLY_Q8_0

TEXTS = [
    "",
    "Hello world",
    "The model token canvas diffusion encoder decoder layer.",
    "  two  leading spaces and trailing  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Ünïcödé, 中文, العربية, emoji 🫩🚶\u200d♀️ and a rare ☃ byte",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><mask><pad><unk><eos> <start_of_thinking>x<end_of_thinking>",
    "<0x41> looks like a byte piece but is text",
    "code: def f(x):\n    return x**2  # ok",
]


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """diffrt's own conversions of the same checkpoint: {"f32": path, "q8_0": path}."""
    from diffrt.convert import convert

    d = tmp_path_factory.mktemp("llamacpp_ours")
    out = {}
    for t in TYPES:
        out[t] = d / f"diffrt-{t}.gguf"
        convert(str(CKPT), str(out[t]), out_type=t, progress=False)
    return out


@pytest.fixture(scope="module")
def theirs():
    return {t: DATA / f"llamacpp-{t}.gguf" for t in TYPES}


@pytest.fixture(scope="module")
def models(ours, theirs):
    """{("llama.cpp" | "diffrt", type): loaded Model}."""
    out = {}
    for t in TYPES:
        out[("llama.cpp", t)] = diffrt.load(str(theirs[t]), threads=1)
        out[("diffrt", t)] = diffrt.load(str(ours[t]), threads=1)
    return out


def test_files_are_llamacpp_made(theirs):
    for t in TYPES:
        md = diffrt.load(str(theirs[t])).metadata
        assert md["general.architecture"] == "diffusion-gemma"
        assert md["general.file_type"] == FILE_TYPE[t]
        assert md[KEYS["TOKENIZER_MODEL"]] == "gemma4"
        assert KEYS["TOKENIZER_HF_JSON"] not in md  # no tokenizer.json: only the tokenizer.ggml.* arrays
        assert not any(k.startswith("diffrt.") for k in md)
        assert "diffusion-gemma.final_logit_softcapping" not in md


@pytest.mark.parametrize("t", TYPES)
def test_config_as_diffrt_conversion(models, t):
    a, b = models[("llama.cpp", t)].config, models[("diffrt", t)].config
    assert a["n_layer"] == 4 and a["n_embd"] == 64 and a["n_vocab"] == 512 and a["canvas_length"] == 16
    assert a["final_logit_softcapping"] == 30.0
    assert {k: v for k, v in a.items() if k != "sampler"} == {k: v for k, v in b.items() if k != "sampler"}
    # The PR writes the diffusion.eb_* sampler keys but not the EOS list, pad id or max_new_tokens.
    sa, sb = dict(a["sampler"]), dict(b["sampler"])
    assert (sb["eos_ids"], sb["pad_id"], sb["max_new_tokens"]) == ([1, 6], 0, 32)
    # no diffrt.eos_token_ids / pad key: tokenizer.ggml.eos_token_id + <end_of_turn>, padding_token_id
    assert (sa["eos_ids"], sa["pad_id"]) == ([1, 6], 0)
    from diffrt.generate import sampler_defaults

    py = sampler_defaults(models[("llama.cpp", t)].metadata)  # the same rule, from metadata alone
    assert (py["eos_ids"], py["pad_id"]) == ([1, 6], 0)
    for k in ("eos_ids", "pad_id", "max_new_tokens"):
        sa.pop(k), sb.pop(k)
    assert sa == sb


def _tensors(path):
    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type, tuple(int(x) for x in t.shape), t.data.tobytes()) for t in r.tensors}


@pytest.mark.parametrize("t", TYPES)
def test_tensors_identical_to_diffrt_conversion(theirs, ours, t):
    a, b = _tensors(theirs[t]), _tensors(ours[t])
    assert sorted(a) == sorted(b) and len(a) == 97
    for name in a:
        assert a[name] == b[name], name
    n_q8 = sum(1 for v in a.values() if v[0] == gguf.GGMLQuantizationType.Q8_0)
    assert n_q8 == (0 if t == "f32" else 38)  # every matrix incl. token_embd; norms, router, scales F32


@pytest.mark.parametrize("t", TYPES)
def test_logits_equal_diffrt_conversion(models, t):
    rng = np.random.default_rng(5)
    prompt = rng.integers(0, 512, 21)  # longer than the sliding window (8) and than a canvas (16)
    canvas = rng.integers(0, 512, 16)
    out = {}
    for maker in ("llama.cpp", "diffrt"):
        s = models[(maker, t)].session(batch=1, max_context=64)
        s.encode(prompt)
        first = s.denoise(canvas)
        out[maker] = (first, s.denoise(canvas, self_cond_logits=first))
    for x, y in zip(out["llama.cpp"], out["diffrt"]):
        assert np.isfinite(x).all() and np.abs(x).max() > 0.1
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def hf_tok():
    return tokenizers.Tokenizer.from_file(str(CKPT / "tokenizer.json"))


@pytest.mark.parametrize("t", TYPES)
def test_tokenizer_from_ggml_arrays(models, hf_tok, t):
    tok = models[("llama.cpp", t)].tokenizer
    assert isinstance(tok, Tokenizer) and tok.vocab_size == 512 and tok.add_bos
    for text in TEXTS:
        plain = hf_tok.encode(text, add_special_tokens=False).ids
        assert tok.encode(text, add_bos=False) == plain, text
        ids = hf_tok.encode(text).ids  # its post-processor prepends <bos>, as add_bos_token says
        # diffrt adds no second BOS to text that begins with one (documented in Tokenizer.encode)
        assert tok.encode(text) == (plain if text.startswith("<bos>") else ids), text
        assert tok.decode(ids) == hf_tok.decode(ids), text
        assert tok.decode(ids, skip_special_tokens=False) == hf_tok.decode(ids, skip_special_tokens=False), text
        if "<" not in text:
            assert tok.decode(ids) == text  # byte fallback round-trips everything
    # Really a byte-fallback vocabulary: the snowman is three <0xXX> pieces, spaces are "▁".
    assert tok.encode("☃", add_bos=False) == [hf_tok.token_to_id(f"<0x{b:02X}>") for b in "☃".encode()]
    assert "".join(tok.id_to_token(i) for i in tok.encode("a b", add_bos=False)) == "a\u2581b"
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                "<start_of_thinking>", "<end_of_thinking>"]
    assert [tok.token_to_id(s) for s in specials] == list(range(9))
    assert tok.special_tokens_map() == {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
                                        "pad_token": "<pad>", "mask_token": "<mask>"}
    assert sorted(tok.special_strings()) == sorted(specials)
    assert (tok.bos_id, tok.eos_id) == (2, 1)


@pytest.mark.parametrize("t", TYPES)
def test_tokenizer_as_diffrt_conversion(models, t):
    """diffrt's own file tokenizes with the stored tokenizer.json; the rebuilt one must agree."""
    a, b = models[("llama.cpp", t)].tokenizer, models[("diffrt", t)].tokenizer
    for text in TEXTS:
        assert a.encode(text) == b.encode(text), text
    assert a.special_tokens_map() == b.special_tokens_map()
    assert (a.bos_id, a.eos_id, a.add_bos) == (b.bos_id, b.eos_id, b.add_bos)


def test_chat_template(models):
    template = json.loads((CKPT / "tokenizer_config.json").read_text())["chat_template"]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there 👋"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?\n"}]
    for t in TYPES:
        tok = models[("llama.cpp", t)].tokenizer
        assert tok.chat_template == template
        ids = encode_chat(tok, msgs, add_generation_prompt=True)
        assert ids == encode_chat(models[("diffrt", t)].tokenizer, msgs, add_generation_prompt=True)
        assert tok.decode(ids, skip_special_tokens=False) == (
            "<bos><start_of_turn>user\nBe brief.\n\nHi there 👋<end_of_turn>\n<start_of_turn>model\nHello."
            "<end_of_turn>\n<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n")
        assert ids.count(2) == 1  # one BOS: the template's, none added on top


@pytest.mark.parametrize("t", TYPES)
def test_generate_as_diffrt_conversion(models, t):
    kw = {"seed": 11, "max_new_tokens": 32, "steps": 6, "eos_ids": [1, 6], "pad_id": 0}
    ra = models[("llama.cpp", t)].chat([{"role": "user", "content": "Tell me a story."}], **kw)
    rb = models[("diffrt", t)].chat([{"role": "user", "content": "Tell me a story."}], **kw)
    assert ra.tokens == rb.tokens and ra.text == rb.text and ra.steps == rb.steps
    assert ra.tokens and all(0 <= i < 512 for i in ra.tokens)


def test_run_cli_on_llamacpp_file(theirs, capsys):
    path = str(theirs["q8_0"])
    assert main(["run", path, "Why is the sky", "blue?", "--seed", "7", "--max-new-tokens", "16",
                 "--steps", "4", "--threads", "1", "--verbose"]) == 0
    out, err = capsys.readouterr()
    model = diffrt.load(path, threads=1)
    ids = encode_chat(model.tokenizer, [{"role": "user", "content": "Why is the sky blue?"}])
    ref = model.generate(ids, seed=7, max_new_tokens=16, steps=4)
    assert out == ref.text + "\n" and len(ref.tokens) == 16  # no EOS list in the file: runs to the limit
    assert "steps per canvas" in err and "tokens/s" in err
