"""The tokenizer.* keys of a GGUF file, from a Hugging Face tokenizer.json (+ tokenizer_config.json,
chat_template.jinja). The original tokenizer.json is stored verbatim too; diffrt tokenizes with it.
The tokenizer.ggml.* arrays exist so that other GGUF tools (llama.cpp's "gemma4" BPE vocab) can read
our files."""

import json
import os

import gguf

from ..errors import ConfigError
from ..gguf_names import KEYS
from .checkpoint import read_json, read_text

T = gguf.TokenType


def _token_string(value):
    """tokenizer_config.json names special tokens as a string or as an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(checkpoint_dir, tok_config):
    jinja = read_text(os.path.join(checkpoint_dir, "chat_template.jinja"))
    if jinja is not None:
        return jinja
    tmpl = tok_config.get("chat_template")
    if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
        tmpl = named.get("default")
    return tmpl if isinstance(tmpl, str) else None


class HFTokenizer:
    """Everything the converter needs from a checkpoint's tokenizer files."""

    def __init__(self, checkpoint_dir, vocab_size):
        path = os.path.join(checkpoint_dir, "tokenizer.json")
        self.json_text = read_text(path)
        if self.json_text is None:
            raise ConfigError(f"{path}: file not found (diffrt needs the checkpoint's tokenizer)")
        try:
            tok = json.loads(self.json_text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        model = tok.get("model") or {}
        if model.get("type") != "BPE":
            raise ConfigError(f"{path}: tokenizer model is {model.get('type')!r}, expected 'BPE'")
        self.config = read_json(os.path.join(checkpoint_dir, "tokenizer_config.json"), required=False) or {}
        self.chat_template = _chat_template(checkpoint_dir, self.config)

        vocab = dict(model.get("vocab") or {})
        added = {t["content"]: t for t in tok.get("added_tokens") or []}
        for content, t in added.items():
            vocab[content] = t["id"]
        n = max(vocab.values(), default=-1) + 1
        if n > vocab_size:
            raise ConfigError(
                f"{path}: tokenizer has {n} tokens, more than the model's vocab_size {vocab_size}"
            )
        self.ids = vocab
        # Pad to the embedding size with unused placeholders, as llama.cpp's converters do.
        self.tokens = [f"[PAD{i}]" for i in range(vocab_size)]
        self.token_types = [int(T.UNUSED)] * vocab_size
        for text, i in vocab.items():
            self.tokens[i] = text
            self.token_types[i] = int(T.NORMAL)
        for content, t in added.items():
            self.token_types[t["id"]] = int(T.CONTROL if t.get("special") else T.USER_DEFINED)
        merges = model.get("merges") or []
        # tokenizers >= 0.20 writes merges as pairs; older files as "a b" strings.
        self.merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

        def special_id(key):
            text = _token_string(self.config.get(key))
            return self.ids.get(text) if text is not None else None

        self.bos_id = special_id("bos_token")
        self.eos_id = special_id("eos_token")
        self.pad_id = special_id("pad_token")
        self.unk_id = special_id("unk_token")
        self.mask_id = special_id("mask_token")
        if self.unk_id is None and model.get("unk_token") in self.ids:
            self.unk_id = self.ids[model["unk_token"]]
        if self.unk_id is not None:
            self.token_types[self.unk_id] = int(T.UNKNOWN)
        self.add_bos = bool(self.config.get("add_bos_token", self.bos_id is not None))

    def write_keys(self, w, fallback_eos=None):
        w.add_string(KEYS["TOKENIZER_MODEL"], "gemma4")
        w.add_array(KEYS["TOKENIZER_TOKENS"], self.tokens)
        w.add_array(KEYS["TOKENIZER_SCORES"], [0.0] * len(self.tokens))  # BPE: merges give the order
        w.add_array(KEYS["TOKENIZER_TOKEN_TYPE"], self.token_types)
        if self.merges:
            w.add_array(KEYS["TOKENIZER_MERGES"], self.merges)
        eos = self.eos_id if self.eos_id is not None else fallback_eos
        for key, value in (
            ("BOS_ID", self.bos_id),
            ("EOS_ID", eos),
            ("UNK_ID", self.unk_id),
            ("PAD_ID", self.pad_id),
            ("MASK_ID", self.mask_id),
        ):
            if value is not None:
                w.add_uint32(KEYS[key], value)
        w.add_bool(KEYS["ADD_BOS"], self.add_bos)
        w.add_bool(KEYS["ADD_SPACE_PREFIX"], False)
        w.add_string(KEYS["TOKENIZER_HF_JSON"], self.json_text)
        if self.chat_template:
            w.add_string(KEYS["CHAT_TEMPLATE"], self.chat_template)
