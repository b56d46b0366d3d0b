"""Loading a diffrt model file (GGUF) into a `Model`.

For now a Model is the validated, memory-mapped file: metadata and zero-copy tensor views. The
engine (weights repacked for compute, sessions) extends this class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .gguf_names import KEYS


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file. `shape` is in numpy order (ggml's ne reversed)."""

    name: str
    type: str  # ggml type name: "F32", "F16", "BF16", "Q8_0", ...
    shape: tuple
    nbytes: int
    offset: int  # absolute byte offset in the file
    _file: object  # diffrt._core.GGUFFile

    def raw(self) -> np.ndarray:
        """Read-only view of the mapped bytes (uint8 blocks for quantised types)."""
        return self._file.tensor_data(self.name)

    def numpy(self) -> np.ndarray:
        """The values: a read-only view for F32/F16/BF16 (ml_dtypes.bfloat16), a float32 copy for Q8_0."""
        data = self._file.tensor_data(self.name)
        if self.type == "BF16":
            import ml_dtypes

            return data.view(ml_dtypes.bfloat16)
        if self.type == "Q8_0":
            return _dequantize_q8_0(data, self.shape)
        if self.type in ("F32", "F16"):
            return data
        raise ConfigError(f"tensor '{self.name}': diffrt cannot decode ggml type {self.type}")


def _dequantize_q8_0(blocks: np.ndarray, shape: tuple) -> np.ndarray:
    # A Q8_0 block is an f16 scale followed by 32 int8 values.
    b = blocks.reshape(-1, 34)
    scale = b[:, :2].copy().view(np.float16).astype(np.float32)
    q = b[:, 2:].view(np.int8).astype(np.float32)
    return (q * scale).reshape(shape)


class Model:
    """A diffrt model file opened for reading. Use `diffrt.load(path)`."""

    def __init__(self, path, device: str = "cpu", threads: int | None = None, compute_type: str = "auto"):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such model file")
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path}: is a directory, expected a .gguf model file")
        # Imported here so that `import diffrt` (names, converter) works without the extension built.
        from . import _core

        self.path = path
        self.device = device
        self.threads = threads
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        known = _core.compute_types(device)  # the C++ table (diffrt/compute_type.h)
        if compute_type not in known:
            raise ValueError(f"compute_type must be one of {', '.join(known)} on {device}, got {compute_type!r}")
        self.requested_compute_type = compute_type
        self._file = _core.GGUFFile(path)
        self.metadata = self._file.metadata()
        self.architecture = self.metadata.get(KEYS["ARCHITECTURE"])
        if self.architecture not in _core.architectures():  # the C++ table (models/architectures.h)
            raise ConfigError(
                f"{path}: architecture {self.architecture!r} is not supported; diffrt runs: "
                f"{', '.join(_core.architectures())}"
            )
        self.tensors = {
            name: TensorInfo(name, type_name, tuple(shape), nbytes, offset, self._file)
            for name, type_name, shape, nbytes, offset in self._file.tensor_infos()
        }

    # --- the engine ---------------------------------------------------------------------------------
    # The compute engine is created on first use, so that a Model can also be a plain view of any
    # diffrt GGUF file; its load validates every tensor (FormatError / ConfigError naming it).
    @property
    def engine(self):
        """The C++ engine (_core.Model for device="cpu")."""
        eng = getattr(self, "_engine", None)
        if eng is None:
            from . import _core

            if self.device == "cuda":
                _require_cuda()
                from .cuda import load_engine

                eng = self._engine = load_engine(self)
                return eng
            threads = self.threads
            if threads is not None and (not isinstance(threads, int) or threads < 0):
                raise ValueError(f"threads must be a non-negative int or None, got {threads!r}")
            eng = _core.Model.load(self.path, threads or 0, self.requested_compute_type)
            self._engine = eng
        return eng

    @property
    def compute_type(self) -> str:
        """The compute type resolved at load (never "auto": diffrt/compute_type.h, docs/perf.md)."""
        return self.engine.compute_type

    @property
    def config(self) -> dict:
        """Hyper-parameters as the engine resolved them (n_layer, n_embd, head_dim per layer, ...)."""
        cfg = getattr(self, "_config", None)
        if cfg is None:
            cfg = self._config = self.engine.config()
        return cfg

    def session(self, batch: int = 1, max_context: int | None = None):
        """A Session with its KV cache and buffers for `batch` rows and `max_context` positions per row
        (None: min(context_length, 4096))."""
        from .session import Session

        return Session(self, batch=batch, max_context=max_context)

    # --- tokenizer and generation --------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The file's tokenizer (None if it stores none)."""
        tok = self.__dict__.get("_tokenizer_cache", False)
        if tok is False:
            from .tokenizer import Tokenizer, has_tokenizer

            tok = Tokenizer(self.metadata, source=self.path) if has_tokenizer(self.metadata) else None
            self.__dict__["_tokenizer_cache"] = tok
        return tok

    def _generator(self):
        g = self.__dict__.get("_generator_cache")
        if g is None:
            from .generate import Generator

            g = self.__dict__["_generator_cache"] = Generator(self)
        return g

    def generate(self, prompt, max_new_tokens=None, steps=None, t_min=None, t_max=None, entropy_bound=None,
                 stability_threshold=None, confidence_threshold=None, seed=None, tape=None, on_step=None,
                 eos_ids=None, pad_id=None):
        """Generate for one prompt (str or list of ids) or a batch (a list of those). See
        diffrt.generate.GenerationResult and docs/API.md."""
        return self._generator().run(
            prompt, tape=tape, on_step=on_step, max_new_tokens=max_new_tokens, steps=steps, t_min=t_min,
            t_max=t_max, entropy_bound=entropy_bound, stability_threshold=stability_threshold,
            confidence_threshold=confidence_threshold, seed=seed, eos_ids=eos_ids, pad_id=pad_id,
        )

    def stream(self, prompt, **kw):
        """Like generate(), yielding StreamEvents ('step', 'canvas', 'done')."""
        return self._generator().stream(prompt, **kw)

    def chat(self, messages, think=False, stream=False, **kw):
        """Generate a reply to chat `messages` ([{"role", "content"}, ...]) rendered with the file's
        chat template (think=True passes enable_thinking to it). Returns a GenerationResult (its
        `thinking`/`answer` split when the template has a thinking channel), or with stream=True
        the StreamEvents."""
        from .chat import encode_chat

        if self.tokenizer is None:
            raise ValueError(f"{self.path}: the file stores no tokenizer, so chat() cannot render messages")
        extra = {"enable_thinking": True} if think else {}
        ids = encode_chat(self.tokenizer, messages, add_generation_prompt=True, **extra)
        return self.stream(ids, **kw) if stream else self.generate(ids, **kw)

    def __repr__(self) -> str:
        return f"Model({self.path!r}, architecture={self.architecture!r}, tensors={len(self.tensors)})"


def _require_cuda() -> None:
    try:
        from . import _cuda

        n = _cuda.device_count()
    except ImportError:
        n = 0
    if n <= 0:
        raise ValueError("device='cuda': no CUDA device available (or diffrt was built without CUDA); use device='cpu'")


def load(path, device: str = "cpu", threads: int | None = None, compute_type: str = "auto") -> Model:
    """Open a diffrt GGUF model file (memory-mapped, validated). Raises FileNotFoundError,
    diffrt.FormatError (corrupt/foreign file) or diffrt.ConfigError (unsupported architecture).

    compute_type: "auto" | "f32" | "bf16" | "int8" (also "int8-w8a8" / "int8-w8a16", to measure the
    int8 policy), resolved once when the engine loads and reported as `model.compute_type`. "auto":
    int8 for Q8_0 files, bf16 for BF16 files on the x86 kernel paths (AVX2, AVX-512, AMX), else f32."""
    if device == "cuda":
        _require_cuda()
    elif device != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return Model(path, device=device, threads=threads, compute_type=compute_type)

