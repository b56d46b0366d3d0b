"""`diffrt serve` end to end: the real `ollama` and `openai` client packages talk to the server on a
loopback port, which serves the tiny converted model from an isolated store. Outputs are checked
against Model.generate with the same prompt ids and seed."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from diffrt import chat, load, store
from diffrt.embed import create
from diffrt.server import generation as gen
from diffrt.server.app import create_app, error_message
from diffrt.server.scheduler import QueueFullError, Scheduler

NUM_PREDICT, STEPS = 32, 4  # two canvases of 16 on the tiny model


@pytest.fixture(scope="session")
def serve_store(converted, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_models")
    old = os.environ.get("DIFFRT_MODELS")
    os.environ["DIFFRT_MODELS"] = str(root)
    create("tiny", f"FROM {converted('default', 'f32')}\nPARAMETER num_predict {NUM_PREDICT}\n"
                   f"PARAMETER steps {STEPS}\n")
    yield root
    if old is None:
        os.environ.pop("DIFFRT_MODELS", None)
    else:
        os.environ["DIFFRT_MODELS"] = old


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(serve_store):
    port = free_port()
    app = create_app(max_queue=4, request_templates=True)  # the template tests below need them
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny(serve_store):
    return load(store.resolve("tiny"))


@pytest.fixture
def oc(server):
    return ollama.Client(host=server)


@pytest.fixture
def ai(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def expected(model, ids, seed, num_predict=NUM_PREDICT):
    """What the server must answer: Model.generate's tokens cut at the first EOS and num_predict."""
    r = model.generate(ids, max_new_tokens=num_predict, steps=STEPS, seed=seed)
    eos = gen.eos_ids(model.metadata)
    toks = []
    for t in r.tokens:
        if t in eos:
            return model.tokenizer.decode(toks), len(toks) + 1, "stop"
        toks.append(t)
    return model.tokenizer.decode(toks[:num_predict]), len(toks[:num_predict]), "length"


def chat_ids(model, messages):
    return chat.encode_chat(model.tokenizer, messages)


# --- Ollama API -----------------------------------------------------------------------------------
def test_ollama_generate_raw_matches_model(oc, tiny):
    r = oc.generate(model="tiny", prompt="Hello there", raw=True, options={"seed": 11})
    text, n, reason = expected(tiny, tiny.tokenizer.encode("Hello there"), 11)
    assert r.done and r.response == text and r.done_reason == reason
    assert r.eval_count == n and r.prompt_eval_count == len(tiny.tokenizer.encode("Hello there"))


def test_ollama_generate_stream_equals_whole(oc):
    whole = oc.generate(model="tiny", prompt="Why?", options={"seed": 3})
    parts = list(oc.generate(model="tiny", prompt="Why?", options={"seed": 3}, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done_reason == whole.done_reason


def test_ollama_generate_uses_chat_template(oc, tiny):
    r = oc.generate(model="tiny", prompt="Hi", system="Be brief.", options={"seed": 4})
    ids = chat_ids(tiny, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert r.response == expected(tiny, ids, 4)[0]


def test_ollama_chat(oc, tiny):
    msgs = [{"role": "user", "content": "Tell me a story"}]
    r = oc.chat(model="tiny", messages=msgs, options={"seed": 5, "steps": STEPS})
    assert r.message.role == "assistant" and r.done
    assert r.message.content == expected(tiny, chat_ids(tiny, msgs), 5)[0]
    parts = list(oc.chat(model="tiny", messages=msgs, options={"seed": 5}, stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content and parts[-1].done


def test_ollama_options_change_the_output(oc, tiny):
    ids = tiny.tokenizer.encode("abc")
    r = oc.generate(model="tiny", prompt="abc", raw=True, options={"seed": 9, "num_predict": 5})
    text, _, _ = expected(tiny, ids, 9, num_predict=5)
    assert r.response == text and r.eval_count <= 5 + 1


def test_ollama_list_show_ps(oc):
    names = [m.model for m in oc.list().models]
    assert "tiny:latest" in names
    m = next(m for m in oc.list().models if m.model == "tiny:latest")
    assert m.details.family == "diffusion-gemma" and m.size > 0
    s = oc.show("tiny")
    assert "steps" in s.parameters and "num_predict" in s.parameters
    assert "FROM " in s.modelfile and s.template
    oc.generate(model="tiny", prompt="x", raw=True, keep_alive="1m", options={"num_predict": 1})
    assert "tiny:latest" in [p.model for p in oc.ps().models]
    oc.generate(model="tiny", prompt="", keep_alive=0)  # empty prompt + keep_alive 0 = unload
    assert "tiny:latest" not in [p.model for p in oc.ps().models]


def test_ollama_create_copy_delete(oc):
    oc.create(model="made", from_="tiny", parameters={"steps": 2, "stop": ["\n"]}, system="Be kind.")
    s = oc.show("made")
    assert 'SYSTEM """Be kind."""' in s.modelfile and "stop" in s.parameters
    r = oc.generate(model="made", prompt="x", raw=True, options={"num_predict": 4})
    assert "\n" not in r.response
    oc.copy("made", "made2")
    oc.delete("made")
    names = [m.model for m in oc.list().models]
    assert "made2:latest" in names and "made:latest" not in names
    oc.delete("made2")


def test_version_and_drafts(server):
    assert httpx.get(server + "/api/version").json()["version"]
    with httpx.stream("POST", server + "/api/generate", timeout=60,
                      json={"model": "tiny", "prompt": "x", "raw": True, "drafts": True,
                            "options": {"seed": 1, "num_predict": 16, "steps": 3}}) as r:
        lines = [json.loads(x) for x in r.iter_lines() if x]
    drafts = [x for x in lines if "draft" in x]
    assert 1 <= len(drafts) <= 3 and all(x["response"] == "" for x in drafts)
    assert lines[-1]["done"]
    parts = list(ollama.Client(host=server).generate(model="tiny", prompt="x", raw=True, stream=True,
                                                     options={"seed": 1, "steps": 3, "drafts": True}))
    assert sum(1 for p in parts if not p.done and p.response == "") >= 1  # the draft chunks
    plain = list(ollama.Client(host=server).generate(model="tiny", prompt="x", raw=True, stream=True,
                                                     options={"seed": 1, "steps": 3}))
    assert sum(1 for p in plain if not p.done and p.response == "") == 0
    assert "".join(p.response for p in parts) == "".join(p.response for p in plain)


@pytest.mark.parametrize("kwargs, status, match", [
    (dict(model="nothere", prompt="x"), 404, "not found"),
    (dict(model="bad name!", prompt="x"), 400, "invalid model"),
    (dict(model="tiny", prompt="x", format="json"), 400, "format"),
    (dict(model="tiny", prompt="x", options={"steps": 0}), 400, "steps must be >= 1"),
    (dict(model="tiny", prompt="x", options={"bogus": 1}), 400, "unknown parameter 'bogus'"),
    (dict(model="tiny", prompt="x", options={"t_min": 0.9, "t_max": 0.5}), 400, "t_min"),
    (dict(model="tiny", prompt="x", options={"num_ctx": 8}), 400, "context window"),
    (dict(model="tiny", prompt="x", template="{{ .Prompt }}"), 400, "Go template"),
    (dict(model="tiny", prompt="x", keep_alive="forever"), 400, "keep_alive"),
    (dict(model="tiny", prompt="x", keep_alive=1e308), 400, "keep_alive"),
    (dict(model="tiny", prompt="x", keep_alive="99999999h"), 400, "keep_alive"),
    # values the sampler refuses: a 400 for this request (they used to fail every request batched with it)
    (dict(model="tiny", prompt="x", options={"t_max": 1e308}), 400, "t_max"),
    (dict(model="tiny", prompt="x", options={"t_min": 0.0, "t_max": 1e-300}), 400, "t_max - t_min"),
    (dict(model="tiny", prompt="x", options={"stability_threshold": 10**9}), 400, "stability_threshold"),
])
def test_ollama_bad_requests(oc, kwargs, status, match):
    with pytest.raises(ollama.ResponseError, match=match) as e:
        oc.generate(**kwargs)
    assert e.value.status_code == status
    assert oc.generate(model="tiny", prompt="still here", raw=True, options={"num_predict": 1}).done


def test_raw_http_bad_requests(server, tmp_path_factory):
    for body in [b"{not json", b"[1, 2]"]:
        r = httpx.post(server + "/api/generate", content=body)
        assert r.status_code == 400 and "JSON" in r.json()["error"]
    # NaN and Infinity are JSON to Python's parser: a NaN keep_alive never expired and broke /api/ps
    for ka in (b"NaN", b"Infinity"):
        r = httpx.post(server + "/api/generate", content=b'{"model": "tiny", "prompt": "x", "keep_alive": ' + ka + b"}")
        assert r.status_code == 400 and "keep_alive" in r.json()["error"]
    assert httpx.get(server + "/api/ps").status_code == 200
    # field types are checked once, for every endpoint: "stream": "false" used to stream
    for path, body in (("/api/generate", {"model": "tiny", "prompt": "x", "stream": "false"}),
                       ("/api/chat", {"model": "tiny", "messages": [], "template": 5}),
                       ("/v1/chat/completions", {"model": "tiny", "messages": [], "stream_options": "yes"})):
        r = httpx.post(server + path, json=body)
        assert r.status_code == 400 and "must be a JSON" in r.text, (path, r.text)
    r = httpx.post(server + "/api/generate",
                   content=b'{"model": "tiny", "prompt": "\\ud800 x", "raw": true, "stream": false}')
    assert r.status_code == 400 and "surrogate" in r.json()["error"]
    r = httpx.post(server + "/api/generate", content=b"[" * 100000 + b"]" * 100000)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = httpx.post(server + "/api/generate", content=b'{"prompt": "' + b"a" * (17 << 20) + b'"}')
    assert r.status_code == 413
    r = httpx.post(server + "/api/chat", json={"model": "tiny", "messages": [{"role": "user"}],
                                                "tools": [{"type": "function"}]})
    assert r.status_code == 400 and "tools" in r.json()["error"]
    r = httpx.post(server + "/api/create", json={"model": "x", "from": "tiny", "parameters": {"steps": "many"}})
    assert r.status_code == 400 and "steps must be int" in r.json()["error"]
    r = httpx.post(server + "/api/create", json={"model": "x", "from": "nosuch"})
    assert r.status_code == 404
    # A FROM path gets one answer whether it is missing, a folder, or a file that is no model: no oracle
    # of what exists on the server's disk.
    d = tmp_path_factory.mktemp("oracle")
    (d / "secret.txt").write_text("root:x:0:0")
    answers = set()
    for src in (d / "missing.gguf", d, d / "secret.txt"):
        r = httpx.post(server + "/api/create", json={"model": "x", "from": str(src)})
        assert r.status_code == 400
        answers.add(r.json()["error"].replace(str(src), "SRC"))
    assert len(answers) == 1 and "root:x" not in answers.pop()
    assert httpx.get(server + "/api/tags").status_code == 200


def test_concurrent_requests_queue_and_match_alone(server, oc):
    alone = {seed: oc.generate(model="tiny", prompt="q", raw=True, options={"seed": seed}).response
             for seed in (31, 32, 33)}
    got = {}

    def one(seed):
        got[seed] = "".join(p.response for p in ollama.Client(host=server).generate(
            model="tiny", prompt="q", raw=True, options={"seed": seed}, stream=True))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == alone


def test_client_hanging_up_does_not_hurt(server, oc):
    body = {"model": "tiny", "prompt": "x", "raw": True, "drafts": True,
            "options": {"seed": 1, "num_predict": 64, "steps": 8}}
    with httpx.stream("POST", server + "/api/generate", json=body, timeout=60) as r:
        first = next(r.iter_lines())
        assert "draft" in json.loads(first)
    # The stream was closed after one line; the next request is served normally.
    r = oc.generate(model="tiny", prompt="x", raw=True, options={"seed": 1, "num_predict": 16})
    assert r.done


# --- OpenAI API -----------------------------------------------------------------------------------
def test_openai_chat(ai, tiny):
    msgs = [{"role": "user", "content": "Hi!"}]
    r = ai.chat.completions.create(model="tiny", messages=msgs, seed=21, max_tokens=NUM_PREDICT)
    text, n, reason = expected(tiny, chat_ids(tiny, msgs), 21)
    assert r.choices[0].message.content == text and r.choices[0].finish_reason == reason
    assert r.usage.prompt_tokens == len(chat_ids(tiny, msgs)) and r.usage.completion_tokens == n
    chunks = list(ai.chat.completions.create(model="tiny", messages=msgs, seed=21, stream=True,
                                             stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.total_tokens == r.usage.total_tokens


def test_openai_diffusion_options_and_completions(ai, tiny):
    ids = tiny.tokenizer.encode("Once upon")
    r = ai.completions.create(model="tiny", prompt="Once upon", seed=2, max_tokens=16, extra_body={"steps": STEPS})
    assert r.choices[0].text == expected(tiny, ids, 2, num_predict=16)[0]
    chunks = list(ai.completions.create(model="tiny", prompt="Once upon", seed=2, max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    with pytest.raises(openai.BadRequestError, match="entropy_bound"):
        ai.completions.create(model="tiny", prompt="x", extra_body={"entropy_bound": -1})


def test_openai_models_and_errors(ai):
    assert "tiny:latest" in [m.id for m in ai.models.list().data]
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="nothere", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="n=1"):
        ai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        ai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                   response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="messages"):
        ai.chat.completions.create(model="tiny", messages=[])
    r = ai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ok?"}], max_tokens=1)
    assert r.choices[0].message.role == "assistant"


# --- the command line ------------------------------------------------------------------------------
def test_cli_create_then_serve(converted, tmp_path):
    env = dict(os.environ, DIFFRT_MODELS=str(tmp_path / "models"))
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {converted('default', 'f32')}\nPARAMETER num_predict 16\nPARAMETER steps 2\n")
    cli = [sys.executable, "-m", "diffrt.cli"]
    subprocess.run(cli + ["create", "clim", "-f", str(mf)], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(cli + ["serve", "--port", str(port), "--log-level", "warning"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url + "/api/version")
                break
            except httpx.TransportError:
                assert proc.poll() is None, "diffrt serve exited"
                time.sleep(0.1)
        r = ollama.Client(host=url).generate(model="clim", prompt="hi", options={"seed": 1})
        assert r.done and r.eval_count >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- pieces without HTTP ------------------------------------------------------------------------
class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_text_stream_stops_and_holds_back():
    ts = gen.TextStream(CharTokenizer(), ["STOP"], eos_ids={0}, limit=100)
    assert ts.push([ord(c) for c in "abcST"]) == "abc"  # "ST" may begin "STOP": held back
    assert ts.push([ord(c) for c in "OPxyz"]) == "" and ts.done_reason == "stop"
    assert ts.finish() == "" and ts.text == "abc"
    ts = gen.TextStream(CharTokenizer(), [], eos_ids={0}, limit=3)
    assert ts.push([ord(c) for c in "abcdef"]) == "abc" and ts.done_reason == "length"
    ts = gen.TextStream(CharTokenizer(), [], eos_ids={0}, limit=10)
    assert ts.push([ord("a"), 0, ord("b")]) == "a" and ts.done_reason == "stop"


def test_scheduler_bounded_queue():
    async def main():
        sched = Scheduler(max_queue=1)
        gate = threading.Event()
        first = sched.submit(lambda job: gate.wait(10) and "first")
        while sched._queue.qsize():  # wait until the worker holds the first job
            await asyncio.sleep(0.01)
        second = sched.submit(lambda job: "second")
        with pytest.raises(QueueFullError) as e:
            sched.submit(lambda job: "third")
        assert error_message(e.value)[0] == 503
        from diffrt.server.app import _error_response

        class Req:  # what _error_response reads of a request
            class url:
                path = "/api/generate"

        assert _error_response(Req, e.value).headers["retry-after"] == "1"
        gate.set()
        assert await first.next() == ("result", "first")
        assert await second.next() == ("result", "second")
        sched.close()

    asyncio.run(main())


# --- canvas-level batching ---------------------------------------------------------------------------
def start_server(app):
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "server did not start"
    return srv, thread, f"http://127.0.0.1:{srv.config.port}"


MIXED = [  # different prompt lengths, parameters and seeds (two share a seed)
    ("q", {"seed": 41}),
    ("a much longer prompt than any of the others in this batch", {"seed": 42, "steps": 2, "num_predict": 16}),
    ("x y", {"seed": 41, "steps": 5, "entropy_bound": 0.3, "num_predict": 48}),
    ("q", {"seed": 43, "t_min": 0.1, "t_max": 0.2}),
    ("Hello", {"seed": 44, "num_predict": 7}),
    ("zz", {"seed": 45, "steps": 3, "confidence_threshold": 0.5}),
]


def expected_with(model, prompt, opts):
    kw = {"num_predict": "max_new_tokens", "steps": "steps", "seed": "seed", "entropy_bound": "entropy_bound",
          "t_min": "t_min", "t_max": "t_max", "confidence_threshold": "confidence_threshold"}
    args = {"max_new_tokens": NUM_PREDICT, "steps": STEPS, **{kw[k]: v for k, v in opts.items()}}
    r = model.generate(model.tokenizer.encode(prompt), **args)
    eos, toks = gen.eos_ids(model.metadata), []
    for t in r.tokens:
        if t in eos:
            break
        toks.append(t)
    return model.tokenizer.decode(toks[:args["max_new_tokens"]])


def test_concurrent_mixed_requests_are_batched_and_match_alone(serve_store, tiny):
    app = create_app(max_queue=8, parallel=3)
    srv, thread, url = start_server(app)
    try:
        got = {}

        def one(i):
            prompt, opts = MIXED[i]
            if i % 2:  # half of them stream
                parts = ollama.Client(host=url).generate(model="tiny", prompt=prompt, raw=True, options=opts,
                                                         stream=True)
                got[i] = "".join(p.response for p in parts)
            else:
                got[i] = ollama.Client(host=url).generate(model="tiny", prompt=prompt, raw=True,
                                                          options=opts).response

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(MIXED))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert got == {i: expected_with(tiny, p, o) for i, (p, o) in enumerate(MIXED)}
        sched = app.state.diffrt.scheduler
        assert 2 <= sched.peak_batch <= 3  # denoised together, never more than the slots
        # alone, one after the other, the server answers the same
        for i, (prompt, opts) in enumerate(MIXED):
            assert ollama.Client(host=url).generate(model="tiny", prompt=prompt, raw=True,
                                                    options=opts).response == got[i]
        # a request the slots cannot hold is a 400; the server keeps serving
        small = create_app(max_context=40)
        srv2, thread2, url2 = start_server(small)
        try:
            with pytest.raises(ollama.ResponseError, match="context") as e:
                ollama.Client(host=url2).generate(model="tiny", prompt="q", raw=True, options={"num_predict": 48})
            assert e.value.status_code == 400
            assert ollama.Client(host=url2).generate(model="tiny", prompt="q", raw=True,
                                                     options={"seed": 41}).response == got[0]
        finally:
            srv2.should_exit = True
            thread2.join(timeout=30)
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


# ---- browser safety (server/security.py) -----------------------------------------------------------


def test_a_foreign_web_page_cannot_drive_the_server(server):
    """A cross-origin text/plain POST needs no preflight: the server itself must refuse it."""
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    before = httpx.get(server + "/api/tags").json()
    r = httpx.post(server + "/api/copy", content=json.dumps({"source": "tiny", "destination": "pwned"}), headers=evil)
    assert r.status_code == 403 and "origin" in r.json()["error"]
    r = httpx.post(server + "/api/create", content=json.dumps({"model": "pwned", "from": "tiny", "system": "x"}),
                   headers=evil)
    assert r.status_code == 403
    assert httpx.get(server + "/api/tags", headers={"Origin": "http://localhost.evil.example"}).status_code == 403
    assert httpx.get(server + "/api/tags").json() == before  # nothing was copied or created
    # DNS rebinding: a page whose name resolves to 127.0.0.1 still sends its own Host
    r = httpx.get(server + "/api/tags", headers={"Host": "rebind.evil.example"})
    assert r.status_code == 403 and "host" in r.json()["error"]


def test_this_machines_pages_and_clients_are_served(server):
    for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "https://localhost", "app://obsidian.md"):
        r = httpx.get(server + "/api/tags", headers={"Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    r = httpx.options(server + "/api/chat", headers={"Origin": "http://localhost:5173",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204 and "POST" in r.headers["access-control-allow-methods"]
    assert httpx.get(server + "/api/version", headers={"Host": "localhost"}).status_code == 200
    assert httpx.get(server + "/api/version").status_code == 200  # no Origin: not a browser request


def test_allowed_origins_and_host_check_configuration(monkeypatch):
    from diffrt.server.security import BrowserGuard, is_loopback

    monkeypatch.setenv("DIFFRT_ORIGINS", "https://*.example.org")
    g = BrowserGuard(None, "127.0.0.1", origins="http://myapp:9000")
    assert g.origin_allowed("https://chat.example.org") and g.origin_allowed("http://myapp:9000")
    assert not g.origin_allowed("http://evil.example") and not g.origin_allowed("http://localhost:80.evil.example")
    assert g.check_host and not BrowserGuard(None, "0.0.0.0").check_host  # opened to a network: no Host check
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("app.localhost")
    assert not is_loopback("10.0.0.1") and not is_loopback("localhost.evil.example")


def test_request_templates_are_off_by_default(serve_store):
    from starlette.testclient import TestClient

    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        for path, body in (("/api/generate", {"model": "tiny", "prompt": "x", "template": "{{ messages }}"}),
                           ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                          "template": "{% for i in range(99999) %}{% endfor %}"})):
            r = c.post(path, json=body)
            assert r.status_code == 400 and "--allow-request-templates" in r.json()["error"], r.text


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"model": "tiny", "prompt": "x", "raw": True, "stream": False}),
    ("/v1/completions", {"model": "tiny", "prompt": "x"}),
])
def test_a_non_streaming_client_that_hangs_up_cancels_its_generation(serve_store, path, body):
    app = create_app()
    srv, thread, url = start_server(app)
    try:
        # One canvas of 4095 steps that cannot stop early takes seconds (a step of the tiny model
        # is about a millisecond): the answer cannot come before the client gives up after 1 s.
        slow = {"num_predict": 64, "steps": 4095, "stability_threshold": 4095}
        long = dict(body, options=slow) if path.startswith("/api") else \
            dict(body, max_tokens=64, steps=4095, stability_threshold=4095)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(url + path, json=long, timeout=httpx.Timeout(5.0, read=1.0))
        sched = app.state.diffrt.scheduler
        deadline = time.time() + 1.5  # cancelled at the next step; alone the canvas needs far longer
        while sched._running and time.time() < deadline:
            time.sleep(0.02)
        assert not sched._running, "the abandoned generation kept running"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def test_a_busy_model_does_not_block_another(serve_store):
    """Head-of-line blocking: a request for a model with free slots must not wait behind a request
    that waits for a slot of another, busy model."""
    store.copy("tiny", "other")
    app = create_app(parallel=1)
    srv, thread, url = start_server(app)
    slow = {"num_predict": 16, "steps": 4095, "stability_threshold": 4095, "seed": 1}
    results = {}

    def post(key, model, options):
        results[key] = httpx.post(url + "/api/generate", json={"model": model, "prompt": "x", "raw": True,
                                                               "stream": False, "options": options}, timeout=120)

    try:
        busy = [threading.Thread(target=post, args=(k, "tiny", slow)) for k in ("a1", "a2")]
        for t in busy:
            t.start()
            time.sleep(0.3)  # a1 takes tiny's only slot, a2 waits for it
        post("b", "other", {"num_predict": 1, "steps": 2})
        assert results["b"].status_code == 200
        assert busy[0].is_alive(), "the request for 'other' waited until tiny's slot was free"
        for t in busy:
            t.join(timeout=120)
        assert results["a1"].status_code == 200 and results["a2"].status_code == 200
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        store.remove("other")


def test_registry_counts_each_version_of_a_recreated_model():
    """`diffrt create` of a name while it serves: the old file's requests release the old version,
    the new file's the new one (the busy count used to be shared, so a model in use could expire),
    and keep_alive 0 unloads a busy model once its requests end."""
    from diffrt.server.registry import ModelRef, Registry

    loads = []
    reg = Registry(lambda path: loads.append(path) or object())
    old = ModelRef("m:latest", "/store/m.gguf", 10, 1.0, {}, {})
    new = ModelRef("m:latest", "/store/m.gguf", 12, 2.0, {}, {})
    m_old = reg.acquire(old)
    m_new = reg.acquire(new)  # re-created while the old version still runs
    assert m_old is not m_new and len(loads) == 2
    reg.release(old, 300)
    busy = {l.ref.size: l.busy for l in reg.loaded()}
    assert busy == {10: 0, 12: 1}
    reg.unload(new)  # keep_alive 0 while busy: not now ...
    assert any(l.model is m_new for l in reg.loaded())
    reg.release(new, 300)  # ... but once its request ends
    assert not any(l.model is m_new for l in reg.loaded())
    assert reg.acquire(new) is not m_new and len(loads) == 3  # and the old idle version was dropped
    assert [l.ref.size for l in reg.loaded()] == [12]
