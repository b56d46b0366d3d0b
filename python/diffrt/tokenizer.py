"""The model's tokenizer, built with HF `tokenizers` from the tokenizer.json stored in the file
(`tokenizer.huggingface.json`, what diffrt's converter writes) or, in files made by other tools
(llama.cpp's converter: the community's GGUFs), from the standard `tokenizer.ggml.*` arrays.
BOS follows the file's `tokenizer.ggml.add_bos_token`."""

from __future__ import annotations

import json

from .errors import FormatError
from .gguf_names import KEYS

# gguf.TokenType values (llama.cpp's llama_token_type)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def has_tokenizer(metadata: dict) -> bool:
    """Whether the file stores a tokenizer in either form."""
    return KEYS["TOKENIZER_HF_JSON"] in metadata or KEYS["TOKENIZER_TOKENS"] in metadata


# End-of-generation markers of Gemma vocabularies (DiffusionGemma's generation config stops at
# <eos>, <turn|> and <|tool_response>; Gemma 2/3 chat ends turns with <end_of_turn>).
_EOG_TEXTS = ("<eos>", "<end_of_turn>", "<turn|>", "<|tool_response>")


def file_eos_ids(metadata: dict) -> list[int]:
    """The ids that end a generation: the converter's list (diffrt.eos_token_ids, from the
    checkpoint's generation config) or, in files made by other tools (llama.cpp's converter writes
    no such list), tokenizer.ggml.eos_token_id and the control tokens named as Gemma's
    end-of-generation markers (llama.cpp finds its end-of-generation tokens by the same names)."""
    eos = metadata.get(KEYS["DIFFRT_EOS_IDS"])
    if eos is not None:
        return [int(i) for i in eos]
    ids = []
    e = metadata.get(KEYS["EOS_ID"])
    if isinstance(e, int) and e >= 0:
        ids.append(e)
    tokens = metadata.get(KEYS["TOKENIZER_TOKENS"]) or []
    types = metadata.get(KEYS["TOKENIZER_TOKEN_TYPE"]) or []
    for text in _EOG_TEXTS:
        try:
            i = tokens.index(text)
        except ValueError:
            continue
        if i not in ids and (i >= len(types) or types[i] == _CONTROL):
            ids.append(i)
    return ids


def tokenizer_json_from_ggml(metadata: dict, source: str = "model file") -> str:
    """A tokenizer.json equivalent to the `tokenizer.ggml.*` arrays of a BPE vocabulary.

    Two BPE families exist in GGUF files: SentencePiece-style (Gemma, Llama: "▁" marks a space,
    bytes outside the vocabulary fall back to <0xXX> pieces; llama.cpp's DiffusionGemma converter
    writes it as model "gemma4") and GPT-2 byte-level ("Ġ" marks a space, every byte is a token).
    The pieces tell them apart: a vocabulary with the 256 <0xXX> pieces is the first kind.
    """
    model = metadata.get(KEYS["TOKENIZER_MODEL"])
    tokens = metadata.get(KEYS["TOKENIZER_TOKENS"])
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise FormatError(f"{source}: {KEYS['TOKENIZER_TOKENS']} is missing or not a list of strings")
    if model not in ("gemma4", "gemma", "llama", "gpt2"):
        raise FormatError(
            f"{source}: tokenizer model {model!r} ({KEYS['TOKENIZER_MODEL']}) is not supported; "
            "diffrt reads BPE vocabularies (gemma4, gemma, llama, gpt2)"
        )
    types = metadata.get(KEYS["TOKENIZER_TOKEN_TYPE"]) or [_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise FormatError(f"{source}: {len(types)} token types for {len(tokens)} tokens")
    merges = metadata.get(KEYS["TOKENIZER_MERGES"]) or []
    if not all(isinstance(m, str) and " " in m for m in merges):
        raise FormatError(f"{source}: {KEYS['TOKENIZER_MERGES']} must be 'left right' strings")
    ids = {t: i for i, t in enumerate(tokens)}
    byte_fallback = all(f"<0x{b:02X}>" in ids for b in range(256))

    vocab, added = {}, []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == _UNUSED or t in vocab:  # the converter's padding placeholders; a duplicate keeps its first id
            continue
        vocab[t] = i
        if ty in (_CONTROL, _UNKNOWN, _USER_DEFINED):  # never split by BPE; the first two are special
            added.append({"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": ty != _USER_DEFINED})
    unk = metadata.get(KEYS["UNK_ID"])
    unk_token = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    bpe = {"type": "BPE", "dropout": None, "unk_token": unk_token, "continuing_subword_prefix": None,
           "end_of_word_suffix": None, "fuse_unk": byte_fallback, "byte_fallback": byte_fallback,
           "ignore_merges": False, "vocab": vocab, "merges": [m.split(" ", 1) for m in merges]}
    if byte_fallback:
        normalizer = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
        pre_tokenizer = None
        decoder = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]}
    else:
        normalizer = None
        pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                       "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
                       "decoder": decoder, "model": bpe}, ensure_ascii=False)

# The named special tokens transformers passes to chat templates (SPECIAL_TOKENS_ATTRIBUTES).
_SPECIAL_KEYS = {
    "bos_token": "BOS_ID",
    "eos_token": "EOS_ID",
    "unk_token": "UNK_ID",
    "pad_token": "PAD_ID",
    "mask_token": "MASK_ID",
}


class Tokenizer:
    """encode(text) -> ids, decode(ids) -> text; special-token ids and strings from the file."""

    def __init__(self, metadata: dict, source: str = "model file"):
        from tokenizers import Tokenizer as HFTokenizer

        text = metadata.get(KEYS["TOKENIZER_HF_JSON"])
        key = KEYS["TOKENIZER_HF_JSON"]
        if text is None and KEYS["TOKENIZER_TOKENS"] in metadata:
            text, key = tokenizer_json_from_ggml(metadata, source), "tokenizer.ggml.*"
        if not isinstance(text, str):
            raise FormatError(
                f"{source}: no tokenizer stored (neither {KEYS['TOKENIZER_HF_JSON']} nor {KEYS['TOKENIZER_TOKENS']})"
            )
        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 (tokenizers raises a plain Exception on bad JSON)
            raise FormatError(f"{source}: {key} is not a valid tokenizer ({e})") from None
        self.add_bos = bool(metadata.get(KEYS["ADD_BOS"], False))
        self.ids = {}
        for name, key in _SPECIAL_KEYS.items():
            value = metadata.get(KEYS[key])
            if isinstance(value, int) and value >= 0:
                self.ids[name] = value
        self.bos_id = self.ids.get("bos_token")
        self.eos_id = self.ids.get("eos_token")
        self.chat_template = metadata.get(KEYS["CHAT_TEMPLATE"])

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def special_tokens_map(self) -> dict[str, str]:
        """{'bos_token': '<bos>', ...}: what transformers passes to a chat template."""
        out = {}
        for name, i in self.ids.items():
            s = self._tok.id_to_token(i)
            if s is not None:
                out[name] = s
        return out

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`. BOS is prepended when the file says so (add_bos=None) or when asked;
        text that already begins with the BOS token does not get a second one."""
        if not isinstance(text, str):
            raise ValueError(f"text to tokenize must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate ("\ud800" in JSON): no UTF-8 text at all
            raise ValueError(f"the text is not valid Unicode (a lone surrogate at character {e.start})") from None
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_bos is None:
            add_bos = self.add_bos
        if add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def special_strings(self) -> list[str]:
        """Strings of every special added token (to strip them from text decoded with specials)."""
        return [t.content for t in self._tok.get_added_tokens_decoder().values() if t.special]
