"""The server's view of the store: model names → files, their headers (cached), and the models loaded
in memory with Ollama's keep_alive (a loaded model is dropped once idle for its keep_alive)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import threading
import time

from .. import model_info, store
from ..gguf_names import KEYS

log = logging.getLogger("diffrt.server")
DEFAULT_KEEP_ALIVE = 300.0  # seconds, as Ollama's 5m


class RequestError(Exception):
    """A bad request: the HTTP layer answers `status` with `message`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# Longer keep_alives are a client error, not a time (an expiry past year 9999 cannot be reported).
MAX_KEEP_ALIVE = 10 * 365 * 86400.0


def parse_keep_alive(value) -> float:
    """Ollama's keep_alive: seconds as a number, or a duration string ("5m", "1h30m", "10s", "0",
    "-1"). Negative = keep forever (inf)."""
    if value is None:
        return DEFAULT_KEEP_ALIVE
    if isinstance(value, bool):
        raise RequestError(f"keep_alive must be a number of seconds or a duration like '5m', got {value!r}")
    if isinstance(value, (int, float)) or isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        secs = float(value)
    elif isinstance(value, str) and re.fullmatch(r"-?(\d+(\.\d+)?(ms|s|m|h))+", value.strip()):
        v = value.strip()
        sign = -1 if v.startswith("-") else 1
        unit = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        secs = sign * sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", v))
    else:
        raise RequestError(f"keep_alive must be a number of seconds or a duration like '5m', got {value!r}")
    if not math.isfinite(secs) and secs != float("-inf") or secs > MAX_KEEP_ALIVE:
        raise RequestError(f"keep_alive must be a duration of at most {MAX_KEEP_ALIVE:.0f} seconds (10 years), "
                           f"or negative to keep the model loaded; got {value!r}")
    return float("inf") if secs < 0 else secs


@dataclasses.dataclass
class ModelRef:
    name: str  # canonical name:tag
    path: str
    size: int
    modified: float
    metadata: dict
    details: dict
    _tokenizer: object = None
    _eos_ids: frozenset | None = None

    @property
    def digest(self) -> str:
        # An identifier of this version of the file (name, size, time), not a hash of its bytes:
        # hashing a 50 GB file per listing would be far too slow.
        return hashlib.sha256(f"{self.path}:{self.size}:{self.modified}".encode()).hexdigest()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from ..tokenizer import Tokenizer

            self._tokenizer = Tokenizer(self.metadata, self.path)
        return self._tokenizer

    @property
    def eos_ids(self) -> frozenset:
        """Token ids that end an answer (the file's list, or the tokenizer's EOS markers), worked out
        once per model file rather than per request (a scan of the vocabulary for some files)."""
        if self._eos_ids is None:
            from .generation import eos_ids

            self._eos_ids = frozenset(eos_ids(self.metadata))
        return self._eos_ids

    @property
    def defaults(self) -> dict:
        return model_info.parameters(self.metadata)

    @property
    def template(self):
        return self.metadata.get(KEYS["CHAT_TEMPLATE"])

    def ollama_details(self) -> dict:
        d = self.details
        return {"parent_model": "", "format": "gguf", "family": d.get("family") or "",
                "families": [d["family"]] if d.get("family") else None,
                "parameter_size": d.get("parameter_size", ""), "quantization_level": d.get("quantization_level", "")}


@dataclasses.dataclass
class Loaded:
    model: object
    ref: ModelRef
    expires_at: float
    busy: int = 0
    drop_when_idle: bool = False  # keep_alive 0 asked while it was busy: unload once its requests end


class Registry:
    def __init__(self, loader):
        self._loader = loader  # path -> Model (diffrt.load, or a test double)
        self._refs: dict[str, tuple] = {}
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    def ref(self, name) -> ModelRef:
        """A store name → its ModelRef; 400 for a malformed name, 404 for an unknown one."""
        if not isinstance(name, str) or not name:
            raise RequestError("missing 'model': give a model name (see /api/tags)")
        from .. import hub

        if hub.is_hub_ref(name):  # hf.co/ORG/REPO[:QUANT]: the store name `diffrt pull` gives it
            try:
                pulled = hub.store_name(name)
            except ValueError as e:
                raise RequestError(str(e)) from None
            if not store.path_for(pulled).is_file():
                raise RequestError(f"model '{name}' not found: `diffrt pull {name}` downloads it", 404)
            name = pulled
        try:
            path = store.path_for(name)
            canon = store.canonical(name)
        except ValueError as e:
            raise RequestError(str(e)) from None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise RequestError(f"model '{canon}' not found", 404) from None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._refs.get(str(path))
        if cached and cached[0] == stamp:
            return cached[1]
        from .. import _core

        md = _core.GGUFFile(str(path)).metadata()
        ref = ModelRef(canon, str(path), st.st_size, st.st_mtime, md, store.describe(str(path)))
        with self._lock:
            self._refs[str(path)] = (stamp, ref)
        return ref

    def list(self) -> list[ModelRef]:
        out = []
        for entry in store.list_models():
            try:
                out.append(self.ref(entry.name))
            except Exception as e:  # a file that cannot be read is left out of the list, not fatal
                log.warning("skipping model %s: %s", entry.name, e)
        return out

    # --- loaded models (acquire/release on the worker thread) ----------------------------------
    # Keyed by the version of the file (path, size, mtime), not the path alone: a model re-created
    # under its name while requests still run on the old file is a second entry, and each release
    # counts against the version its request acquired.
    @staticmethod
    def _key(ref: ModelRef) -> tuple:
        return (ref.path, ref.size, ref.modified)

    def acquire(self, ref: ModelRef):
        key = self._key(ref)
        with self._lock:
            for k in [k for k, m in self._loaded.items() if k[0] == ref.path and k != key and m.busy == 0]:
                del self._loaded[k]  # an older version of this file that nothing uses any more
            loaded = self._loaded.get(key)
            if loaded is not None:
                loaded.busy += 1
                return loaded.model
        model = self._loader(ref.path)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:  # loaded meanwhile by another caller: share it
                loaded.busy += 1
                return loaded.model
            self._loaded[key] = Loaded(model, ref, float("inf"), busy=1)
        return model

    def release(self, ref: ModelRef, keep_alive: float):
        with self._lock:
            loaded = self._loaded.get(self._key(ref))
            if loaded is None:
                return
            loaded.busy -= 1
            loaded.expires_at = time.time() + (0.0 if loaded.drop_when_idle else keep_alive)
        self.expire()

    def unload(self, ref: ModelRef):
        """Drops every idle version of the model's file; a busy one goes once its requests end."""
        with self._lock:
            for k, m in list(self._loaded.items()):
                if k[0] != ref.path:
                    continue
                if m.busy == 0:
                    del self._loaded[k]
                else:
                    m.drop_when_idle = True

    def expire(self, now: float | None = None):
        now = time.time() if now is None else now
        with self._lock:
            for k in [k for k, m in self._loaded.items() if m.busy == 0 and m.expires_at <= now]:
                del self._loaded[k]

    def loaded(self) -> list[Loaded]:
        self.expire()
        with self._lock:
            return list(self._loaded.values())
