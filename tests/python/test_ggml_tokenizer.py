"""Tokenizers rebuilt from the standard `tokenizer.ggml.*` arrays (what llama.cpp's converter writes
into the community's GGUF files, which carry no tokenizer.json) tokenize exactly as the
tokenizer.json they came from: same ids for every text, same decoded text, same special tokens.

Both BPE families are covered: the byte-level tokenizer of the shipped default model (its file has
both forms: the arrays are read with the tokenizer.json key removed) and a SentencePiece-style,
byte-fallback tokenizer as Gemma's (trained here, written by diffrt's converter code)."""

import json
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
from diffrt import _core
from diffrt.convert.hf_tokenizer import HFTokenizer
from diffrt.errors import FormatError
from diffrt.gguf_names import KEYS
from diffrt.tokenizer import Tokenizer, has_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "",
    "Hello world",
    "  two  leading spaces and trailing  ",
    "tabs\tand\nnew\n\nlines",
    "Ünïcödé, 中文, العربية, emoji 🫩🚶‍♀️ and a rare ☃ byte",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "code: def f(x):\n    return x**2  # ok",
    "ｆｕｌｌｗｉｄｔｈ and zero\u200bwidth",
]
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


def without_json(md: dict) -> dict:
    return {k: v for k, v in md.items() if k != KEYS["TOKENIZER_HF_JSON"]}


def same_tokenization(a: Tokenizer, b: Tokenizer):
    for text in TEXTS:
        ids = a.encode(text)
        assert b.encode(text) == ids, text
        assert b.decode(ids) == a.decode(ids), text
        assert b.decode(ids, skip_special_tokens=False) == a.decode(ids, skip_special_tokens=False), text
    assert b.special_tokens_map() == a.special_tokens_map()
    assert sorted(b.special_strings()) == sorted(a.special_strings())
    assert (b.bos_id, b.eos_id, b.add_bos, b.chat_template) == (a.bos_id, a.eos_id, a.add_bos, a.chat_template)


def test_byte_level_default_model():
    md = _core.GGUFFile(str(ROOT / "models" / "default.gguf")).metadata()
    ggml_only = without_json(md)
    assert has_tokenizer(ggml_only)
    same_tokenization(Tokenizer(md), Tokenizer(ggml_only))


class _Keys:
    """Collects what HFTokenizer.write_keys writes (the GGUF writer's add_* calls)."""

    def __init__(self):
        self.md = {}

    def __getattr__(self, name):
        def add(key, value):
            self.md[key] = list(value) if isinstance(value, (list, tuple)) else value

        return add


@pytest.fixture(scope="module")
def sentencepiece_style(tmp_path_factory):
    """A Gemma-style tokenizer.json: BPE with byte_fallback, "▁" for spaces, a Sequence decoder."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, normalizers, trainers

    corpus = (ROOT / "tools" / "make_corpus.py").read_text(encoding="utf-8").splitlines() * 3
    tok = HF(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=1200, special_tokens=SPECIALS + bytes_, show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    d = tmp_path_factory.mktemp("sp_tok")
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "mask_token": "<mask>", "add_bos_token": True, "chat_template": "{{ bos_token }}{{ messages[0]['content'] }}"}))
    keys = _Keys()
    HFTokenizer(str(d), 1280).write_keys(keys)  # padded past the trained size, as a model's vocab is
    return keys.md


def test_sentencepiece_style_byte_fallback(sentencepiece_style):
    md = sentencepiece_style
    full = Tokenizer(md)
    assert full.encode("☃")[1:] == [full.token_to_id(f"<0x{b:02X}>") for b in "☃".encode()]  # really falls back
    same_tokenization(full, Tokenizer(without_json(md)))


def test_unreadable_arrays_are_format_errors(sentencepiece_style):
    md = without_json(sentencepiece_style)
    cases = [
        ({KEYS["TOKENIZER_MODEL"]: "t5"}, "not supported"),
        ({KEYS["TOKENIZER_TOKENS"]: [1, 2, 3]}, "list of strings"),
        ({KEYS["TOKENIZER_TOKEN_TYPE"]: [1]}, "token types"),
        ({KEYS["TOKENIZER_MERGES"]: ["nospace"]}, "left right"),
    ]
    for change, message in cases:
        with pytest.raises(FormatError, match=message):
            Tokenizer({**md, **change}, source="x.gguf")
    assert not has_tokenizer({k: v for k, v in md.items() if k != KEYS["TOKENIZER_TOKENS"]})
