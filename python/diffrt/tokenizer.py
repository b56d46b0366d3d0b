"""The model's tokenizer, built with HF `tokenizers` from the tokenizer.json stored in the file
(`tokenizer.huggingface.json`). BOS follows the file's `tokenizer.ggml.add_bos_token`."""

from __future__ import annotations

from .errors import FormatError
from .gguf_names import KEYS

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
        if not isinstance(text, str):
            raise FormatError(f"{source}: no tokenizer stored (key {KEYS['TOKENIZER_HF_JSON']} is missing)")
        try:
            self._tok = HFTokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 (tokenizers raises a plain Exception on bad JSON)
            raise FormatError(
                f"{source}: key {KEYS['TOKENIZER_HF_JSON']} is not a valid tokenizer ({e})"
            ) from None
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
