"""`diffrt pull`: a GGUF from a Hugging Face repository into the local model store, as Ollama's
`ollama pull hf.co/ORG/REPO:QUANT` does.

Names: ``hf.co/ORG/REPO[:QUANT]``, ``huggingface.co/ORG/REPO[:QUANT]`` (an ``https://`` in front is
accepted) and ``hf://ORG/REPO[:QUANT]``. QUANT picks the ``.gguf`` whose file name holds it as a
token, case-insensitively (``q4_k_m`` matches ``model-Q4_K_M.gguf``, not ``model-Q4_K_M_XL.gguf``);
without QUANT the repository must hold exactly one ``.gguf``. Split files (``-00001-of-00003.gguf``)
are refused for now.

How: huggingface_hub's ``HfApi.model_info(files_metadata=True)`` lists the files with their LFS
SHA-256 and size (its endpoint: ``HF_ENDPOINT``, its token: ``HF_TOKEN`` or ``hf auth login``). The
file itself is fetched by this module over huggingface_hub's own HTTP client (``get_session()``,
with the hub's auth headers) from the ``/resolve/<commit>/<file>`` URL, not with ``hf_hub_download``:
that one goes through the hub cache and Xet, which a loopback stand-in hub cannot serve, and we want
the bytes in the store's filesystem for an atomic rename anyway. Resuming is plain HTTP ``Range``:
the partial file lives in ``$DIFFRT_MODELS/.downloads/<sha256>.partial`` (hidden, never listed as a
model, keyed by the content hash so only the same file is ever continued); a later pull asks for
``bytes=<have>-`` and appends (a server that answers 200 instead of 206 restarts it from zero).

Checks before anything enters the store: the size and the SHA-256 (hashed while downloading, the
partial's prefix re-hashed on resume) must equal the hub's LFS metadata — on a mismatch the partial
is deleted and the pull refused; then the file must open as a model diffrt can run (header and
architecture, ``store._check_model_file``). Only then is it renamed into the store (``store.writing``),
so a failure at any point leaves no model behind.

Store name: ``<repo, lowercased>:<quant, lowercased>`` (tag ``latest`` without QUANT), e.g.
``hf.co/unsloth/diffusiongemma-26B-A4B-it-GGUF:Q4_K_M`` → ``diffusiongemma-26b-a4b-it-gguf:q4_k_m``.
`diffrt run` (pulling it first when missing) and the server (404 naming `diffrt pull` when missing;
``POST /api/pull`` downloads) map an ``hf.co/...`` name to the same store name (`store_name`). The
organisation is not part of the store name: two organisations' repositories of the same name share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from . import store
from .errors import DiffrtError

_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/", "huggingface.co/",
             "hf.co/", "hf://")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
CHUNK = 1 << 20
_LOCKS: dict[str, threading.Lock] = {}  # one pull of a file at a time in this process (the server)
_LOCKS_LOCK = threading.Lock()


class PullError(DiffrtError):
    """A pull that cannot be done: unknown repository or quant, network or server error, bad file.
    `status`: the HTTP status the server's /api/pull answers with (404 unknown, 502 hub or network)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class HubRef:
    repo: str  # ORG/REPO as given
    quant: str | None

    def __str__(self):
        return f"hf.co/{self.repo}" + (f":{self.quant}" if self.quant else "")


def is_hub_ref(name) -> bool:
    return isinstance(name, str) and name.lower().startswith(_PREFIXES)


def parse_ref(name: str) -> HubRef:
    """'hf.co/ORG/REPO[:QUANT]' (or huggingface.co/..., hf://...) → HubRef; ValueError otherwise."""
    rest = name
    for p in _PREFIXES:
        if rest.lower().startswith(p):
            rest = rest[len(p):]
            break
    else:
        raise ValueError(f"{name!r} is not a Hugging Face name: use hf.co/ORG/REPO[:QUANT]")
    repo, sep, quant = rest.partition(":")
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ValueError(f"invalid repository {repo!r} in {name!r}: use hf.co/ORG/REPO[:QUANT]")
    if sep and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", quant):
        raise ValueError(f"invalid quant {quant!r} in {name!r} (e.g. Q4_K_M)")
    return HubRef(repo, quant if sep else None)


def _clean(part: str) -> str:
    part = re.sub(r"[^a-z0-9._-]", "-", part.lower()).lstrip("._-")[:80]
    return part or "model"


def store_name(name) -> str:
    """The store name an hf.co name is pulled to: 'hf.co/Org/Repo:Q4_K_M' → 'repo:q4_k_m'."""
    ref = name if isinstance(name, HubRef) else parse_ref(name)
    base = _clean(ref.repo.split("/", 1)[1])
    tag = _clean(ref.quant) if ref.quant else store.DEFAULT_TAG
    return store.canonical(f"{base}:{tag}")


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _quant_matches(filename: str, quant: str) -> bool:
    """QUANT as a token of the file name: not inside a longer word on the left, and not continued by
    a letter, digit or '_' on the right (Q4_K matches neither Q4_K_M nor IQ4_K)."""
    stem = Path(filename).name[: -len(".gguf")]
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", stem, re.IGNORECASE) is not None


def choose_file(ref: HubRef, files: list[str]) -> str:
    """The one .gguf of `files` that QUANT names; PullError listing the choices otherwise."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if not ggufs:
        raise PullError(f"{ref.repo} holds no .gguf file", 404)
    if ref.quant:
        hits = [f for f in ggufs if _quant_matches(f, ref.quant)]
        if not hits:
            raise PullError(f"no .gguf in {ref.repo} matches quant {ref.quant!r}; the files: "
                            + ", ".join(ggufs), 404)
    else:
        hits = ggufs
    if len(hits) > 1 and all(_SPLIT.search(f) for f in hits):
        raise PullError(f"{ref} is split into {len(hits)} files ({hits[0]}, ...): split GGUFs are not "
                        "supported yet")
    if len(hits) > 1:
        if ref.quant:
            raise PullError(f"{ref.repo}: quant {ref.quant!r} matches several .gguf files: " + ", ".join(hits))
        raise PullError(f"{ref.repo} holds several .gguf files: give a quant, hf.co/{ref.repo}:QUANT; the "
                        "files: " + ", ".join(hits))
    if _SPLIT.search(hits[0]):
        raise PullError(f"{hits[0]} is one part of a split GGUF: split GGUFs are not supported yet")
    return hits[0]


def _http_error(e, what: str) -> PullError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401 or status == 403:
        hint = " (a gated or private repository: set HF_TOKEN or run `hf auth login`)"
    elif status == 404:
        hint = " (no such repository, or it is private: set HF_TOKEN)"
    else:
        hint = ""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return PullError(f"{what}: {first}{hint}", 404 if status in (401, 403, 404) else 502)


def _repo_files(ref: HubRef):
    """(commit, {filename: (size, sha256 or None)}) from the hub's model info."""
    import httpx2
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=_endpoint(), token=_token()).model_info(ref.repo, files_metadata=True)
    except (OSError, httpx2.HTTPError, ValueError, KeyError, TypeError) as e:  # HfHubHTTPError is an OSError
        raise _http_error(e, f"cannot list {ref.repo} on {_endpoint() or 'huggingface.co'}") from None
    files = {}
    for s in info.siblings or []:
        lfs = s.lfs
        files[s.rfilename] = (lfs.size if lfs else s.size, lfs.sha256 if lfs else None)
    return info.sha, files


def _downloads_dir() -> Path:
    return store.models_dir() / ".downloads"


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, dynamic_ncols=True, leave=True)


def _download(url: str, part: Path, size: int | None, progress: bool, desc: str) -> str:
    """Fetch `url` into `part`, continuing a partial one with a Range request; return the SHA-256."""
    from huggingface_hub.utils import build_hf_headers, get_session

    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    h = hashlib.sha256()
    if have:
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    if size is not None and have == size:
        return h.hexdigest()
    headers = build_hf_headers(token=_token())
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    import httpx2

    timeout = httpx2.Timeout(60.0, connect=15.0)
    try:
        with get_session().stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
            if r.status_code == 416 and have:  # nothing past what we have: the partial was wrong
                part.unlink()
                raise PullError(f"the server refused to resume {desc}; run the pull again")
            if r.status_code >= 400:
                raise PullError(f"downloading {desc}: HTTP {r.status_code} from {url}", 502)
            if have and r.status_code != 206:  # Range ignored: start over
                have, h = 0, hashlib.sha256()
            total = size if size is not None else (have + int(r.headers.get("Content-Length", 0)) or None)
            with open(part, "ab" if have else "wb") as f, _progress(total, have, desc, progress) as bar:
                for block in r.iter_bytes():  # as received: a chunk size would buffer (lost on a drop)
                    f.write(block)
                    h.update(block)
                    if bar is not None:
                        bar.update(len(block))
    except PullError:
        raise
    except (httpx2.HTTPError, OSError) as e:  # connection dropped, timeout, disk full: the partial stays
        got = part.stat().st_size if part.exists() else 0
        raise PullError(f"downloading {desc} stopped after {got} bytes ({type(e).__name__}: {e}); "
                        "run the pull again to resume", 502) from None
    got = part.stat().st_size
    if size is not None and got != size:
        if got > size:
            part.unlink()
        raise PullError(f"downloading {desc}: got {got} of {size} bytes; run the pull again to resume", 502)
    return h.hexdigest()


def pull(name: str, progress: bool = True, log=None) -> str:
    """Download the GGUF that `name` (hf.co/ORG/REPO[:QUANT]) names into the store; return the store
    name. Already there: nothing is downloaded. Raises PullError (or ValueError for a bad name)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    ref = parse_ref(name)
    target_name = store_name(ref)
    commit, files = _repo_files(ref)
    filename = choose_file(ref, list(files))
    size, sha = files[filename]
    if not sha:
        raise PullError(f"{ref.repo}/{filename} has no LFS SHA-256 on the hub: cannot verify it")
    sha = sha.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise PullError(f"{ref.repo}/{filename}: the hub's SHA-256 {sha!r} is malformed")
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(ref.repo, filename, revision=commit or "main", endpoint=_endpoint())
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(sha, threading.Lock())
    with lock:
        return _fetch_and_install(ref, filename, url, size, sha, target_name, progress, log)


def _fetch_and_install(ref, filename, url, size, sha, target_name, progress, log) -> str:
    target = store.path_for(target_name)
    if target.is_file() and target.stat().st_size == size and _sha256(target) == sha:
        log(f"'{target_name}' is up to date ({ref.repo}/{filename})")
        return target_name
    downloads = _downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{sha}.partial"
    if part.exists():
        log(f"resuming {filename} ({part.stat().st_size} bytes already here)")
    else:
        log(f"pulling {ref.repo}/{filename}" + (f" ({_fmt_bytes(size)})" if size else ""))
    try:
        got = _download(url, part, size, progress, filename)
        if got != sha:
            part.unlink()
            raise PullError(f"{filename}: SHA-256 mismatch (the hub says {sha}, the download is {got}); "
                            "the file was deleted, nothing was installed")
        try:
            store._check_model_file(str(part))
        except (DiffrtError, ValueError, OSError) as e:
            part.unlink()
            raise PullError(f"{ref.repo}/{filename} is not a model diffrt can run: {e}") from None
        with store.writing(target_name) as tmp:
            os.replace(part, tmp)
    finally:
        with contextlib.suppress(OSError):  # empty unless a partial is kept for a resume
            downloads.rmdir()
    log(f"verified sha256 {sha[:12]}…, installed as '{target_name}'")
    return target_name


def resolve(name: str, progress: bool = True, pull_missing: bool = True, log=None) -> str:
    """An hf.co name → its store path, pulled first when it is not in the store (`pull_missing`)."""
    target = store.path_for(store_name(name))
    if target.is_file():
        return str(target)
    if not pull_missing:
        raise store.ModelNotFoundError(f"model {name!r} is not in the store: `diffrt pull {name}` downloads it")
    pull(name, progress=progress, log=log)
    return str(target)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fmt_bytes(n: int) -> str:
    for unit, s in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= s:
            return f"{n / s:.1f} {unit}"
    return f"{n} B"
