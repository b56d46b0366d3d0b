"""A denoising Session on a loaded model: the KV cache and every buffer, allocated at creation.

    s = model.session(batch=1, max_context=None)
    s.encode(ids)                       # int array [T] or [B, T]: causal encoder pass, extends the cache
    logits = s.denoise(canvas)          # int array [L] or [B, L] -> float32 [L, V] / [B, L, V]
    logits = s.denoise(canvas, self_cond_logits=prev)   # prev: float32 [L, V] / [B, L, V]
    s.n_cached; s.reset()

denoise() leaves the cache unchanged. Bad shapes, ids outside [0, vocab) and context beyond
max_context raise ValueError naming the problem; the session is unchanged then.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_CONTEXT = 4096  # max_context=None: min(the model's context length, this)


def _ids(a, name: str, vocab: int, ndim_one_ok: bool = True) -> tuple[np.ndarray, bool]:
    """Validated int32 C-contiguous 2-D copy of an id array; second value: the input was 1-D."""
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    squeeze = arr.ndim == 1 and ndim_one_ok
    if squeeze:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape [T] or [B, T], got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
        bad = arr[(arr < 0) | (arr >= vocab)].flat[0]
        raise ValueError(f"{name}: token id {int(bad)} is outside the vocabulary [0, {vocab})")
    return np.ascontiguousarray(arr, dtype=np.int32), squeeze


class Session:
    """See the module docstring. Create with Model.session()."""

    def __init__(self, model, batch: int = 1, max_context: int | None = None):
        from . import _core

        cfg = model.config
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if max_context is None:
            max_context = min(int(cfg["context_length"]), DEFAULT_MAX_CONTEXT)
        if int(max_context) < cfg["canvas_length"]:
            raise ValueError(
                f"max_context {max_context} is smaller than one canvas ({cfg['canvas_length']} tokens)"
            )
        self.model = model
        self.batch = int(batch)
        self.max_context = int(max_context)
        self.canvas_length = int(cfg["canvas_length"])
        self.vocab_size = int(cfg["n_vocab"])
        if getattr(model, "device", "cpu") == "cuda":  # the same interface on the GPU
            from . import _cuda

            self._s = _cuda.Session(model.engine, self.batch, self.max_context)
        else:
            self._s = _core.Session(model.engine, self.batch, self.max_context)

    @property
    def n_cached(self) -> int:
        """Tokens in the cache of row 0 (use n_cached_row(r) for other rows)."""
        return self._s.n_cached(0)

    def n_cached_row(self, row: int) -> int:
        return self._s.n_cached(row)

    def reset(self) -> None:
        self._s.reset()

    def encode(self, ids, rows=None) -> None:
        """Causal encoder pass over ids [T] (row 0) or [n, T] (rows 0..n-1, or the given rows)."""
        arr, _ = _ids(ids, "ids", self.vocab_size)
        n, T = arr.shape
        if rows is None and n > self.batch:
            raise ValueError(f"ids: {n} rows for a session of batch {self.batch}")
        rows = [] if rows is None else [int(r) for r in rows]
        for r in rows or range(n):
            if not 0 <= r < self.batch:
                raise ValueError(f"rows: row {r} out of range [0, {self.batch})")
            if self._s.n_cached(r) + T > self.max_context:
                raise ValueError(
                    f"ids: row {r} holds {self._s.n_cached(r)} tokens; {T} more exceed max_context {self.max_context}"
                )
        self._s.encode(arr, rows)

    def denoise(self, canvas, self_cond_logits=None, out=None) -> np.ndarray:
        """One denoising step: float32 logits [L, V] (1-D canvas) or [B, L, V]. Cache unchanged.

        out: optional float32 C-contiguous array of that shape to write the logits into (and
        return), so a loop of steps reuses one buffer instead of a fresh [B, L, V] array a step."""
        arr, squeeze = _ids(canvas, "canvas", self.vocab_size)
        B, L, V = self.batch, self.canvas_length, self.vocab_size
        if arr.shape != (B, L):
            want = f"[{L}] or [{B}, {L}]" if B == 1 else f"[{B}, {L}]"
            raise ValueError(f"canvas: expected shape {want}, got {np.asarray(canvas).shape}")
        for r in range(B):
            if self._s.n_cached(r) + L > self.max_context:
                raise ValueError(
                    f"canvas: row {r} holds {self._s.n_cached(r)} tokens; a canvas of {L} exceeds "
                    f"max_context {self.max_context}"
                )
        sc = None
        if self_cond_logits is not None:
            sc = np.asarray(self_cond_logits)
            if sc.ndim == 2:
                sc = sc[None]
            if sc.shape != (B, L, V):
                raise ValueError(
                    f"self_cond_logits: expected shape [{B}, {L}, {V}], got {np.asarray(self_cond_logits).shape}"
                )
            if not np.issubdtype(sc.dtype, np.floating):
                raise ValueError(f"self_cond_logits: expected a float array, got dtype {sc.dtype}")
            sc = np.ascontiguousarray(sc, dtype=np.float32)
        if out is not None:
            want = (L, V) if squeeze else (B, L, V)
            if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == want
                    and out.flags.c_contiguous and out.flags.writeable):
                raise ValueError(f"out: expected a writable C-contiguous float32 array of shape {list(want)}")
            self._s.denoise(arr, sc, out.reshape(B, L, V))
            return out
        res = self._s.denoise(arr, sc)
        return res[0] if squeeze else res

    def __repr__(self) -> str:
        return f"Session(batch={self.batch}, max_context={self.max_context}, n_cached={self.n_cached})"
