"""Streaming GGUF writer: declares every tensor first, then writes each tensor's data chunk by chunk,
so peak memory is one chunk, not the model (gguf-py's GGUFWriter.add_tensor keeps every array alive
until the end). Header, key/value and tensor-info sections are still written by gguf-py.

Output types (``--type``): f32, f16, bf16, q8_0, or auto (= the checkpoint's own dtype). Tensors in
``keep_f32`` stay F32 whatever the type. q8_0 applies to tensors of 2+ dimensions whose rows are a
multiple of 32 long; other tensors fall back to F16.
"""

import contextlib
import math
import os
import sys

import gguf
import ml_dtypes
import numpy as np

from ..atomic import replace_on_success
from ..gguf_names import ARCH

Q = gguf.GGMLQuantizationType
OUT_TYPES = ("auto", "f32", "f16", "bf16", "q8_0")
_GGML_TYPE = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPE = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


def resolve_out_type(out_type, source_dtype):
    """'auto' → the checkpoint's dtype ('float32' / 'bfloat16' / 'float16'); anything else → f32."""
    if out_type not in OUT_TYPES:
        raise ValueError(f"unknown output type {out_type!r}; expected one of {', '.join(OUT_TYPES)}")
    if out_type != "auto":
        return out_type
    return {"bfloat16": "bf16", "float16": "f16"}.get(source_dtype, "f32")


def tensor_type(out_type, shape, keep_f32):
    """ggml type of one tensor (shape in numpy order)."""
    if keep_f32 or out_type == "f32":
        return Q.F32
    if out_type == "q8_0":
        block = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]
        return Q.Q8_0 if len(shape) >= 2 and shape[-1] % block == 0 else Q.F16
    return _GGML_TYPE[out_type]


def type_nbytes(ggml_type, shape):
    block, size = gguf.GGML_QUANT_SIZES[ggml_type]
    return math.prod(shape) // block * size


def encode_rows(rows, ggml_type):
    """Convert float32 rows [n, row_len] to the bytes of ``ggml_type`` (round-to-nearest-even)."""
    if ggml_type == Q.F32:
        return rows
    if ggml_type == Q.F16:
        return rows.astype(np.float16)
    if ggml_type == Q.BF16:
        return rows.astype(ml_dtypes.bfloat16)
    return gguf.quants.quantize(rows, ggml_type)


class StreamingGGUFWriter:
    """add_* metadata and declare_tensor() first; then begin_data() and write_tensor() in the
    declared order. Writes into ``path`` (the caller's temporary file)."""

    def __init__(self, path):
        self._w = gguf.GGUFWriter(path, ARCH)
        self._declared = []  # (name, ggml_type, nbytes) in file order
        self._next = 0

    @property
    def kv(self):
        """The underlying gguf.GGUFWriter, for add_uint32/add_string/... calls."""
        return self._w

    def declare_tensor(self, name, shape, ggml_type):
        nbytes = type_nbytes(ggml_type, shape)
        # A non-uint8 dtype makes gguf-py take `shape` as the element shape for every type.
        self._w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=ggml_type)
        self._declared.append((name, ggml_type, nbytes))

    def begin_data(self):
        self._w.write_header_to_file()
        self._w.write_kv_data_to_file()
        self._w.write_ti_data_to_file()
        self._f = self._w.fout[0]

    def write_tensor(self, name, chunks, on_bytes=None):
        """chunks: float32 row blocks of the tensor, in order."""
        want_name, ggml_type, nbytes = self._declared[self._next]
        if name != want_name:
            raise AssertionError(f"tensor {name} written out of order (expected {want_name})")
        self._next += 1
        self._w.write_padding(self._f, self._f.tell())  # data starts aligned
        written = 0
        for rows in chunks:
            data = encode_rows(rows, ggml_type)
            data.tofile(self._f)
            written += data.nbytes
            if on_bytes:
                on_bytes(rows.nbytes)
        if written != nbytes:
            raise AssertionError(f"tensor {name}: wrote {written} bytes, declared {nbytes}")
        self._w.write_padding(self._f, written)

    def finish(self):
        if self._next != len(self._declared):
            raise AssertionError("not every declared tensor was written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._w.close()

    def close(self):
        self._w.close()


@contextlib.contextmanager
def atomic_output(out_path):
    """Yield a temporary path next to ``out_path``; rename it over ``out_path`` only on success.
    On any error (KeyboardInterrupt included) the temporary file is removed and an existing
    ``out_path`` is left as it was."""
    with replace_on_success(f"{out_path}.tmp", out_path) as tmp:
        yield tmp


def progress_bar(total, enabled, desc):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=desc,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
    )
