"""A Hugging Face checkpoint directory, read lazily: JSON files, and safetensors tensors streamed in
row chunks.

We parse the safetensors header ourselves (8-byte length + JSON) and read data with plain file reads:
that handles bf16 without torch, lets us read a tensor in row chunks (so memory does not grow with the
largest tensor), and lets us check every offset against the file size before writing anything.
"""

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from ..errors import ConfigError, FormatError

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_MAX_HEADER = 100 * 1024 * 1024  # a safetensors header is JSON; anything larger is corrupt


class TensorRef:
    """Where one tensor lives: file, byte offset, dtype and shape (HF / numpy order)."""

    def __init__(self, name, path, offset, dtype, shape):
        self.name, self.path, self.offset, self.dtype, self.shape = name, path, offset, dtype, tuple(shape)

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize

    def read_rows(self, row_bytes_budget=32 << 20):
        """Yield the tensor as 2-D float32 chunks of whole rows (last dimension = row)."""
        row_len = self.shape[-1] if self.shape else 1
        n_rows = math.prod(self.shape) // row_len if row_len else 0
        rows_per_chunk = max(1, row_bytes_budget // max(1, row_len * 4))
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, n_rows, rows_per_chunk):
                n = min(rows_per_chunk, n_rows - start)
                count = n * row_len
                raw = f.read(count * self.dtype.itemsize)
                if len(raw) != count * self.dtype.itemsize:
                    raise FormatError(f"{self.path}: tensor {self.name!r} is truncated")
                yield np.frombuffer(raw, dtype=self.dtype).astype(np.float32).reshape(n, row_len)

    def read(self):
        """The whole tensor as float32 (small tensors and tests only)."""
        parts = list(self.read_rows(row_bytes_budget=1 << 62))
        data = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
        return data.reshape(self.shape)


def read_json(path, required=True):
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"{path}: file not found")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def read_text(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_safetensors_header(path):
    """Return {name: TensorRef} for one .safetensors file, after checking every offset."""
    if not os.path.isfile(path):
        raise FormatError(f"{path}: file not found")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise FormatError(f"{path}: truncated or corrupt safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header")
    base = 8 + n
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: corrupt header entry for tensor {name!r}") from None
        if dtype_name not in SAFETENSORS_DTYPES:
            raise FormatError(
                f"{path}: tensor {name!r} has dtype {dtype_name}, expected one of "
                f"{sorted(SAFETENSORS_DTYPES)}"
            )
        ref = TensorRef(name, path, base + begin, SAFETENSORS_DTYPES[dtype_name], shape)
        if not (0 <= begin <= end) or end - begin != ref.nbytes:
            raise FormatError(f"{path}: tensor {name!r} has inconsistent data offsets {[begin, end]}")
        if base + end > size:
            raise FormatError(
                f"{path}: truncated: tensor {name!r} needs bytes up to {base + end}, file has {size}"
            )
        refs[name] = ref
    return refs


def read_checkpoint_tensors(checkpoint_dir):
    """All tensors of a checkpoint, single-file or sharded (model.safetensors.index.json)."""
    index_path = os.path.join(checkpoint_dir, "model.safetensors.index.json")
    single_path = os.path.join(checkpoint_dir, "model.safetensors")
    if os.path.exists(index_path):
        index = read_json(index_path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise FormatError(f"{index_path}: no 'weight_map'")
        refs = {}
        for shard in sorted(set(weight_map.values())):
            shard_refs = read_safetensors_header(os.path.join(checkpoint_dir, shard))
            for name, ref in shard_refs.items():
                if name in refs:
                    raise FormatError(f"{index_path}: tensor {name!r} appears in two shards")
                refs[name] = ref
        for name, shard in weight_map.items():
            if name not in refs or refs[name].path != os.path.join(checkpoint_dir, shard):
                raise FormatError(f"{index_path}: tensor {name!r} is not in shard {shard}")
        return refs
    if os.path.exists(single_path):
        return read_safetensors_header(single_path)
    raise FormatError(f"{checkpoint_dir}: no model.safetensors or model.safetensors.index.json")
