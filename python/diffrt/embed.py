"""`diffrt create`: write one self-contained .gguf into the store from a Modelfile.

The source (FROM) is a .gguf file, a checkpoint directory (converted first), or a model already in
the store. The result is the source's metadata with the Modelfile applied on top — sampler defaults,
chat template, system prompt, license, messages and the Modelfile text itself — and the source's
weights copied byte for byte. Weights change type only when asked (`quantize="q8_0"`): never silently.
Because the applied values live in the file's keys, a model made FROM another store model inherits
everything the new Modelfile does not override (as in Ollama).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile

import gguf
import ml_dtypes
import numpy as np

from . import modelfile as mfmod
from . import store
from .errors import FormatError, ModelfileError
from .gguf_names import ARCH, KEEP_F32, KEYS, TENSORS

Q = gguf.GGMLQuantizationType
V = gguf.GGUFValueType
QUANTIZE = ("q8_0", "int8")  # int8 = q8_0 for now: per-32-block int8 weights with an f16 scale
_CHUNK = 64 << 20  # bytes per copy/quantise chunk: memory stays flat whatever the model size

# Value types for keys a Modelfile sets, when the source file does not already have them.
_NEW_KEY_TYPES = {int: V.UINT32, float: V.FLOAT32, str: V.STRING}
_TYPE_OVERRIDES = {KEYS["DIFFRT_SEED"]: V.UINT64}
# Tensors that stay as they are under --quantize (norms, scales, router): same set as the converter.
_KEEP = re.compile("|".join(re.escape(TENSORS[i]).replace(r"\{bid\}", r"\d+") for i in KEEP_F32))


def create(name: str, text: str, quantize: str | None = None, base_dir: str | None = None,
           progress: bool = False, path: str = "Modelfile") -> str:
    """Create store model `name` from Modelfile `text`; relative FROM paths are taken from
    `base_dir` (the Modelfile's folder). Returns the new file's path."""
    store.parse_name(name)  # a bad name fails before any work
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZE)}")
    qtype = Q.Q8_0 if quantize else None
    mf = mfmod.parse(text, path)
    with _source_file(mf.from_, base_dir, qtype, progress) as src, store.writing(name) as tmp:
        _write(src, tmp, mf, text, qtype)
    return str(store.path_for(name))


@contextlib.contextmanager
def _source_file(ref: str, base_dir, qtype, progress):
    """FROM → a .gguf path (a checkpoint dir is converted to a temporary file, removed afterwards)."""
    p = os.path.expanduser(ref)
    if base_dir and not os.path.isabs(p):
        p = os.path.join(base_dir, p)
    if os.path.isdir(p):
        from .convert import convert

        root = store.models_dir()
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".convert.", suffix=".gguf", dir=root)
        os.close(fd)
        try:
            convert(p, tmp, out_type="q8_0" if qtype == Q.Q8_0 else "auto", progress=progress)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    if os.path.isfile(p):
        yield p
        return
    if store.looks_like_path(ref):
        raise FileNotFoundError(f"FROM {ref}: no such file or directory")
    yield store.resolve(ref)


def _applied_keys(mf: mfmod.Modelfile, text: str) -> dict:
    """The keys the Modelfile sets: {key: value}."""
    out = mfmod.to_metadata(mf.parameters)
    out[KEYS["DIFFRT_MODELFILE"]] = text
    if mf.template is not None:
        out[KEYS["CHAT_TEMPLATE"]] = mf.template
    if mf.system is not None:
        out[KEYS["DIFFRT_SYSTEM"]] = mf.system
    if mf.license:
        out[KEYS["DIFFRT_LICENSE"]] = "\n\n".join(mf.license)
    if mf.messages:
        out[KEYS["DIFFRT_MESSAGES"]] = json.dumps(mf.messages, ensure_ascii=False)
    return out


def _write(src: str, out: str, mf: mfmod.Modelfile, text: str, qtype):
    from .model import Model

    # The bounds-checked reader validates the file (and Model its architecture) before gguf-py reads it.
    src_model = Model(src)
    core, md = src_model._file, src_model.metadata
    applied = _applied_keys(mf, text)
    if qtype is not None:
        applied[KEYS["FILE_TYPE"]] = int(gguf.LlamaFileType.MOSTLY_Q8_0)
    merged = {**mfmod.from_metadata(md), **mf.parameters}
    mfmod.check_temperatures(merged, f"{mf.from_} with this Modelfile: ")

    reader = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, ARCH)  # writes general.architecture itself
    for field in reader.fields.values():
        key = field.name
        if key.startswith("GGUF.") or key in (KEYS["ARCHITECTURE"], "general.alignment") or key in applied:
            continue
        value = field.contents()
        if isinstance(value, list) and not value:
            continue  # gguf-py cannot write an empty array; readers treat absent = empty
        sub = field.types[-1] if field.types[0] == V.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub)
    for key, value in applied.items():
        old = reader.fields.get(key)
        if isinstance(value, list):
            if value:
                w.add_key_value(key, value, V.ARRAY, V.STRING)
            continue
        vtype = old.types[0] if old is not None and old.types[0] != V.ARRAY else None
        w.add_key_value(key, value, vtype or _TYPE_OVERRIDES.get(key) or _NEW_KEY_TYPES[type(value)])

    plan = []  # (name, source type name, numpy shape, out ggml type)
    for name, type_name, shape, nbytes, _ in core.tensor_infos():
        src_type = Q[type_name] if type_name in Q.__members__ else None
        if src_type is None:
            raise FormatError(f"{src}: tensor '{name}' has ggml type {type_name}, which diffrt cannot copy")
        out_type = src_type
        if qtype is not None and _quantizable(name, type_name, shape):
            out_type = qtype
        block, size = gguf.GGML_QUANT_SIZES[out_type]
        w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) // block * size,
                          raw_dtype=out_type)
        plan.append((name, type_name, tuple(shape), out_type))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    f = w.fout[0]
    for name, type_name, shape, out_type in plan:
        w.write_padding(f, f.tell())
        start = f.tell()
        data = core.tensor_data(name)
        if Q[type_name] == out_type:
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            for i in range(0, raw.size, _CHUNK):
                f.write(raw[i:i + _CHUNK].data)
        else:
            for rows in _float_rows(data, type_name, shape):
                gguf.quants.quantize(rows, out_type).tofile(f)
        w.write_padding(f, f.tell() - start)
    f.flush()
    os.fsync(f.fileno())
    w.close()


def _quantizable(name, type_name, shape):
    block = gguf.GGML_QUANT_SIZES[Q.Q8_0][0]
    return (type_name in ("F32", "F16", "BF16") and len(shape) >= 2 and shape[-1] % block == 0
            and not _KEEP.fullmatch(name))


def _float_rows(data, type_name, shape):
    """The tensor as float32 [rows, row_len] chunks (bf16 arrives as its uint16 bits)."""
    rows = data.reshape(-1, shape[-1])
    step = max(1, _CHUNK // (4 * shape[-1]))
    for i in range(0, rows.shape[0], step):
        chunk = rows[i:i + step]
        if type_name == "BF16":
            chunk = chunk.view(ml_dtypes.bfloat16)
        yield np.asarray(chunk, dtype=np.float32)


def read_modelfile_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ModelfileError(f"{path}: not UTF-8 text ({e})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such Modelfile") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a directory, expected a Modelfile") from None
