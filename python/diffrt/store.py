"""The local model store: one self-contained .gguf per model name, like Ollama's `~/.ollama/models`.

Layout: ``$DIFFRT_MODELS/<name>/<tag>.gguf`` (default ``~/.diffrt/models``). A name is ``name`` or
``name:tag`` (tag defaults to ``latest``). Files in the store are never written in place: every write
goes to a temporary file in the store and is renamed over the target (os.replace), so a reader sees
the old file or the new one, and an interrupted write leaves nothing. That also makes hard links safe,
so `cp` is instant and costs no space.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

from .atomic import replace_on_success
from .errors import DiffrtError
from .gguf_names import KEYS, TENSORS

DEFAULT_TAG = "latest"
ENV = "DIFFRT_MODELS"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


class ModelNotFoundError(DiffrtError, FileNotFoundError):
    """A model name that is not in the store."""


def models_dir() -> Path:
    """The store directory: $DIFFRT_MODELS, else ~/.diffrt/models (not created here)."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path.home() / ".diffrt" / "models"


def parse_name(name: str) -> tuple[str, str]:
    """'name' or 'name:tag' → (name, tag). Raises ValueError for anything else."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    base, sep, tag = name.partition(":")
    tag = tag if sep else DEFAULT_TAG
    for part, what in ((base, "name"), (tag, "tag")):
        if not _PART.fullmatch(part) or part in (".", "..") or ".." in part:
            raise ValueError(f"invalid model {what} {part!r} in {name!r}: use letters, digits, '.', '_', "
                             "'-' (up to 80, starting with a letter or digit), as name or name:tag")
    return base, tag


def canonical(name: str) -> str:
    """'tiny' → 'tiny:latest'."""
    base, tag = parse_name(name)
    return f"{base}:{tag}"


def path_for(name: str, root: Path | None = None) -> Path:
    base, tag = parse_name(name)
    return (root or models_dir()) / base / f"{tag}.gguf"


def looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.endswith(".gguf") or ref.startswith((".", "~"))


def resolve(ref) -> str:
    """A model reference (an existing file, a path, or a store name) → the .gguf path to load.
    Raises FileNotFoundError for a missing path, ModelNotFoundError for an unknown name."""
    ref = os.fspath(ref)
    p = os.path.expanduser(ref)
    if os.path.isfile(p):
        return os.path.abspath(p)
    if looks_like_path(ref) or os.path.exists(p):
        if os.path.isdir(p):
            raise IsADirectoryError(f"{ref}: is a directory, expected a .gguf file or a model name "
                                    "(`diffrt create NAME -f Modelfile` imports a checkpoint)")
        raise FileNotFoundError(f"{ref}: no such model file")
    path = path_for(ref)
    if not path.is_file():
        raise ModelNotFoundError(f"model {canonical(ref)!r} not found in {models_dir()} "
                                 "(`diffrt list` shows the models; `diffrt create` adds one)")
    return str(path)


# `diffrt run NAME` and the server resolve names with this.
resolve_model = resolve


@contextlib.contextmanager
def writing(name: str):
    """Yield a temporary path in the store; on success it becomes the model `name` atomically."""
    target = path_for(name)
    made = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with replace_on_success(tmp, target):
            yield tmp
    except BaseException:
        if made:  # a failed create leaves no empty folder behind
            with contextlib.suppress(OSError):
                target.parent.rmdir()
        raise


def remove(name: str) -> None:
    path = path_for(name)
    try:
        path.unlink()
    except FileNotFoundError:
        raise ModelNotFoundError(f"model {canonical(name)!r} not found in {models_dir()}") from None
    with contextlib.suppress(OSError):  # the name's folder, once its last tag is gone
        path.parent.rmdir()


def copy(src: str, dst: str) -> None:
    """Copy model `src` (a store name or a .gguf path) to store name `dst`."""
    src_path = resolve(src)
    if Path(src_path) == path_for(dst):
        return
    _check_model_file(src_path)
    with writing(dst) as tmp:
        os.remove(tmp)
        try:
            os.link(src_path, tmp)  # store files are never modified in place: sharing is safe
        except OSError:
            shutil.copyfile(src_path, tmp)


def _check_model_file(path: str) -> None:
    """Refuse to copy what diffrt cannot run: `Model` reads and checks the header (FormatError) and the
    architecture (ConfigError); the engine is not loaded and no weights are read."""
    from .model import Model

    Model(path)


@dataclasses.dataclass
class ModelEntry:
    name: str  # canonical name:tag
    path: str
    size: int  # bytes
    modified: float  # mtime, seconds since the epoch
    details: dict  # see describe()


def list_models() -> list[ModelEntry]:
    """Every model in the store, sorted by name. A file that cannot be read is listed with an error
    in its details rather than hiding the rest."""
    root = models_dir()
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.glob("*.gguf")):
            name = f"{folder.name}:{f.stem}"
            try:
                parse_name(name)
            except ValueError:
                continue
            st = f.stat()
            try:
                details = describe(str(f))
            except (DiffrtError, OSError, ValueError) as e:
                details = {"error": str(e)}
            out.append(ModelEntry(name, str(f), st.st_size, st.st_mtime, details))
    return out


def describe(path: str) -> dict:
    """A short summary of a model file from its header (no weights are read): family, parameter
    count, the weights' main type, context and canvas length."""
    from . import _core

    f = _core.GGUFFile(path)
    md = f.metadata()
    params, by_type = 0, {}
    for name, type_name, shape, nbytes, _ in f.tensor_infos():
        if name == TENSORS["ROPE_FREQS"]:
            continue  # derived from the config, not a parameter
        n = math.prod(shape)  # numpy-order element shape, whatever the storage type
        params += n
        by_type[type_name] = by_type.get(type_name, 0) + n
    return {
        "family": md.get(KEYS["ARCHITECTURE"]),
        "parameter_count": params,
        "parameter_size": _fmt_count(params),
        "quantization_level": max(by_type, key=by_type.get) if by_type else "unknown",
        "context_length": md.get(KEYS["CONTEXT_LENGTH"]),
        "canvas_length": md.get(KEYS["CANVAS_LENGTH"]),
    }


def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
