"""`diffrt pull` against a stand-in Hugging Face hub served on 127.0.0.1 by this file (model info with
LFS metadata, /resolve/ with Range): quant choice, resume, checksum, refusals. No network."""

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from diffrt import hub, store
from diffrt.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "llamacpp"
Q8 = (DATA / "llamacpp-q8_0.gguf").read_bytes()
F32 = (DATA / "llamacpp-f32.gguf").read_bytes()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    """The stand-in hub's state: repositories, knobs for failures, and the requests it saw."""

    def __init__(self):
        self.repos = {
            "test/tiny-GGUF": {"tiny-Q8_0.gguf": Q8, "tiny-F16.gguf": F32, "README.md": b"# tiny\n"},
            "test/one-GGUF": {"only.gguf": Q8},
            "test/amb-GGUF": {"tiny-Q8_0.gguf": Q8, "tiny-Q8_0-v2.gguf": Q8, "tiny-F16.gguf": F32},
            "test/split-GGUF": {"big-Q8_0-00001-of-00002.gguf": Q8, "big-Q8_0-00002-of-00002.gguf": Q8},
            "test/resume-GGUF": {"r-Q8_0.gguf": F32},
            "test/badsha-GGUF": {"b-Q8_0.gguf": Q8},
            "test/junk-GGUF": {"junk-Q8_0.gguf": os.urandom(4096)},
            "test/dl500-GGUF": {"d-Q8_0.gguf": Q8},
        }
        self.wrong_sha = {("test/badsha-GGUF", "b-Q8_0.gguf")}
        self.ignore_range = set()  # (repo, file): answer a Range request with the whole file (200)
        self.drop_after = {}  # (repo, file) -> bytes sent before the connection is dropped (once)
        self.info_status = {"test/err500": 500}
        self.file_status = {("test/dl500-GGUF", "d-Q8_0.gguf"): 500}
        self.requests = []  # (path, Range header or None)
        self.lock = threading.Lock()


def _handler(state: Hub):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _json(self, status, obj):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = unquote(urlparse(self.path).path)
            with state.lock:
                state.requests.append((path, self.headers.get("Range")))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._info("/".join(parts[2:4]))
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._file("/".join(parts[:2]), "/".join(parts[4:]))
            self._json(404, {"error": "Not Found"})

        def _info(self, repo):
            if repo in state.info_status:
                return self._json(state.info_status[repo], {"error": "Internal Error"})
            files = state.repos.get(repo)
            if files is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Type", "application/json")
                body = json.dumps({"error": "Repository not found"}).encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            siblings = []
            for name, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                if (repo, name) in state.wrong_sha:
                    sha = hashlib.sha256(b"something else").hexdigest()
                sib = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
                if name.endswith(".gguf"):
                    sib["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
                siblings.append(sib)
            self._json(200, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})

        def _file(self, repo, name):
            if (repo, name) in state.file_status:
                return self._json(state.file_status[(repo, name)], {"error": "boom"})
            data = state.repos.get(repo, {}).get(name)
            if data is None:
                return self._json(404, {"error": "Entry not found"})
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and (repo, name) not in state.ignore_range:
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            with state.lock:
                cut = state.drop_after.pop((repo, name), None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return H


@pytest.fixture(scope="module")
def hub_server():
    state = Hub()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield state
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def env(hub_server, tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("DIFFRT_MODELS", str(root))
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    hub_server.requests.clear()
    return root


def _store_files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_names():
    assert hub.store_name("hf.co/unsloth/DiffusionGemma-26B-GGUF:Q4_K_M") == "diffusiongemma-26b-gguf:q4_k_m"
    assert hub.store_name("huggingface.co/a/B") == "b:latest"
    assert hub.store_name("https://huggingface.co/a/B:Q8_0") == "b:q8_0"
    assert hub.parse_ref("hf://Org/Repo:F16") == hub.HubRef("Org/Repo", "F16")
    assert not hub.is_hub_ref("tiny:latest") and not hub.is_hub_ref("./hf.co/x.gguf")
    for bad in ("hf.co/onlyrepo", "hf.co/a/b/c", "hf.co/a/b:", "hf.co/a/b:Q4 K"):
        with pytest.raises(ValueError):
            hub.parse_ref(bad)
    files = ["m-Q4_K_M.gguf", "m-Q4_K_M_XL.gguf", "m-IQ4_XS.gguf", "m-Q4_K.gguf", "README.md"]
    assert hub.choose_file(hub.HubRef("o/r", "q4_k_m"), files) == "m-Q4_K_M.gguf"
    assert hub.choose_file(hub.HubRef("o/r", "Q4_K"), files) == "m-Q4_K.gguf"
    assert hub.choose_file(hub.HubRef("o/r", "iq4_xs"), files) == "m-IQ4_XS.gguf"


def test_pull_by_quant_and_run_finds_it(env, hub_server, capsys):
    assert main(["pull", "hf.co/test/tiny-GGUF:q8_0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "tiny-gguf:q8_0"
    path = store.path_for("tiny-gguf:q8_0")
    assert path.read_bytes() == Q8
    assert _store_files(env) == ["tiny-gguf/q8_0.gguf"]  # no partial left behind
    assert [e.name for e in store.list_models()] == ["tiny-gguf:q8_0"]
    from diffrt.commands.run import resolve_model

    hub_server.requests.clear()
    assert resolve_model("hf.co/test/tiny-GGUF:Q8_0") == str(path)
    assert hub_server.requests == []  # already in the store: no network
    # a name not yet in the store is pulled by run's resolver (with its progress bar)
    p = resolve_model("huggingface.co/test/tiny-GGUF:F16")
    assert Path(p).read_bytes() == F32 and p == str(store.path_for("tiny-gguf:f16"))
    assert "tiny-F16.gguf" in capsys.readouterr().err


def test_single_file_without_quant(env):
    assert hub.pull("hf://test/one-GGUF", progress=False, log=lambda m: None) == "one-gguf:latest"
    assert store.path_for("one-gguf").read_bytes() == Q8


@pytest.mark.parametrize(("name", "needles"), [
    ("hf.co/test/tiny-GGUF", ["give a quant", "tiny-F16.gguf", "tiny-Q8_0.gguf"]),
    ("hf.co/test/tiny-GGUF:Q4_K_M", ["Q4_K_M", "tiny-F16.gguf", "tiny-Q8_0.gguf"]),
    ("hf.co/test/amb-GGUF:q8_0", ["several", "tiny-Q8_0.gguf", "tiny-Q8_0-v2.gguf"]),
    ("hf.co/test/split-GGUF:Q8_0", ["split", "not supported yet"]),
    ("hf.co/test/nope-GGUF:Q8_0", ["cannot list test/nope-GGUF", "404"]),
    ("hf.co/test/err500:Q8_0", ["cannot list test/err500", "500"]),
    ("hf.co/test/dl500-GGUF:Q8_0", ["HTTP 500"]),
])
def test_errors_are_clear(env, capsys, name, needles):
    assert main(["pull", name, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Error:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    assert _store_files(env) == []
    assert not (env / ".downloads").exists()


def test_interrupted_download_resumes_with_range(env, hub_server, capsys):
    key = ("test/resume-GGUF", "r-Q8_0.gguf")
    hub_server.drop_after[key] = 100_000
    assert main(["pull", "hf.co/test/resume-GGUF:Q8_0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "run the pull again to resume" in err and "Traceback" not in err, err
    assert not store.path_for("resume-gguf:q8_0").exists()
    partial = list((env / ".downloads").glob("*.partial"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(F32)
    have = partial[0].stat().st_size
    assert store.list_models() == []

    hub_server.requests.clear()
    assert main(["pull", "hf.co/test/resume-GGUF:Q8_0", "--no-progress"]) == 0
    ranges = [r for p, r in hub_server.requests if "/resolve/" in p]
    assert ranges == [f"bytes={have}-"]
    assert store.path_for("resume-gguf:q8_0").read_bytes() == F32
    assert _store_files(env) == ["resume-gguf/q8_0.gguf"]


def test_checksum_mismatch_refused(env, capsys):
    assert main(["pull", "hf.co/test/badsha-GGUF:Q8_0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err and "Traceback" not in err
    assert _store_files(env) == []


def test_not_a_gguf_refused(env, capsys):
    assert main(["pull", "hf.co/test/junk-GGUF:Q8_0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "not a model diffrt can run" in err and "Traceback" not in err
    assert _store_files(env) == []


def test_progress_bar_on_stderr(env, capsys):
    assert main(["pull", "hf.co/test/one-GGUF"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == "one-gguf:latest"
    assert "only.gguf" in cap.err and "installed as 'one-gguf:latest'" in cap.err


def test_server_404_names_pull(env):
    from diffrt.server.registry import Registry, RequestError

    reg = Registry(lambda path: None)
    with pytest.raises(RequestError) as e:
        reg.ref("hf.co/test/tiny-GGUF:Q8_0")
    assert e.value.status == 404 and "diffrt pull hf.co/test/tiny-GGUF:Q8_0" in str(e.value)
    hub.pull("hf.co/test/tiny-GGUF:Q8_0", progress=False, log=lambda m: None)
    ref = reg.ref("hf.co/test/tiny-GGUF:Q8_0")
    assert ref.path == str(store.path_for("tiny-gguf:q8_0"))


def test_resume_restarts_when_range_is_ignored(env, hub_server):
    key = ("test/resume-GGUF", "r-Q8_0.gguf")
    hub_server.drop_after[key] = 50_000
    hub_server.ignore_range.add(key)
    try:
        with pytest.raises(hub.PullError, match="resume"):
            hub.pull("hf.co/test/resume-GGUF:Q8_0", progress=False, log=lambda m: None)
        hub.pull("hf.co/test/resume-GGUF:Q8_0", progress=False, log=lambda m: None)
    finally:
        hub_server.ignore_range.discard(key)
    assert store.path_for("resume-gguf:q8_0").read_bytes() == F32
    assert _store_files(env) == ["resume-gguf/q8_0.gguf"]


def test_pull_again_is_up_to_date(env, hub_server):
    msgs = []
    hub.pull("hf.co/test/one-GGUF", progress=False, log=msgs.append)
    hub_server.requests.clear()
    hub.pull("hf.co/test/one-GGUF", progress=False, log=msgs.append)
    assert "up to date" in msgs[-1]
    assert not [p for p, _ in hub_server.requests if "/resolve/" in p]


def test_server_api_pull(env):
    from diffrt.server.app import create_app
    from starlette.testclient import TestClient

    with TestClient(create_app(loader=lambda path: None, host="0.0.0.0")) as client:
        r = client.post("/api/generate", json={"model": "hf.co/test/tiny-GGUF:Q8_0", "prompt": "hi"})
        assert r.status_code == 404 and "diffrt pull" in r.json()["error"]
        r = client.post("/api/pull", json={"model": "hf.co/test/tiny-GGUF:Q8_0", "stream": False})
        assert r.status_code == 200 and r.json() == {"status": "success", "model": "tiny-gguf:q8_0"}
        r = client.post("/api/show", json={"model": "hf.co/test/tiny-GGUF:Q8_0"})
        assert r.status_code == 200, r.text
        r = client.post("/api/pull", json={"model": "hf.co/test/nope-GGUF:Q8_0"})
        assert r.status_code == 404 and "nope-GGUF" in r.json()["error"]
        r = client.post("/api/pull", json={"model": "hf.co/test/tiny-GGUF:Q2_K"})
        assert r.status_code == 404 and "tiny-F16.gguf" in r.json()["error"]
        r = client.post("/api/pull", json={"model": "hf.co/test/err500:Q8_0"})
        assert r.status_code == 502
        r = client.post("/api/pull", json={"model": "tiny"})
        assert r.status_code == 400
