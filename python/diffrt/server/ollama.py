"""Ollama's HTTP API: /api/generate, /api/chat (NDJSON streaming or one JSON), /api/tags, /api/show,
/api/ps, /api/create, /api/pull, /api/copy, /api/delete. Errors are {"error": message} with 400/404/503."""

from __future__ import annotations

import datetime
import json
import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .. import model_info, store
from .. import modelfile as mfmod
from ..chat import split_thinking, thinking_markers
from ..errors import ConfigError, FormatError
from . import generation as gen
from .app import error_message, job_events, job_result, json_body, now_iso
from .registry import RequestError, parse_keep_alive

# What reading a Modelfile's FROM can fail with (not a full disk or the store's own errors).
_UNREADABLE_SOURCE = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FormatError,
                      ConfigError)

NDJSON = "application/x-ndjson"
log = logging.getLogger("diffrt.server")


def _reject_unsupported(body):
    if body.get("format") not in (None, ""):
        raise RequestError("'format' (structured output) is not supported yet")
    for field in ("images", "suffix", "context", "tools"):
        if body.get(field):
            raise RequestError(f"'{field}' is not supported yet")


def _stats(out: gen.Outcome) -> dict:
    ns = lambda s: int(s * 1e9)
    return {"total_duration": ns(out.total_s), "load_duration": ns(out.load_s),
            "prompt_eval_count": out.prompt_tokens, "prompt_eval_duration": 0,
            "eval_count": out.completion_tokens, "eval_duration": ns(out.total_s - out.load_s)}


async def _respond(state, request, body, prep, chunk, final):
    """Submit `prep` and answer as Ollama does: NDJSON chunks, or one object when stream=false.
    chunk(text, draft) and final(outcome, full_text) build the objects."""
    job = state.scheduler.submit_generation(state.registry, prep)
    if body.get("stream", True) is False:
        value = await job_result(request, job)
        return JSONResponse(final(value, value.text))
    async def lines():
        try:
            async for kind, value in job_events(job):
                if kind == "done":
                    obj = final(value, "")
                else:
                    obj = chunk(value if kind == "text" else "", value if kind == "draft" else None)
                yield json.dumps(obj, ensure_ascii=False) + "\n"
        except Exception as e:  # the status line is gone: report in the stream, as Ollama does
            yield json.dumps({"error": error_message(e)[1]}) + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)


async def _load_or_unload(state, ref, model_name, keep_alive, key):
    """An empty prompt loads the model (or unloads it with keep_alive 0), as in Ollama."""
    if keep_alive == 0:
        state.registry.unload(ref)
        reason = "unload"
    else:
        def load(job):
            state.registry.acquire(ref)
            state.registry.release(ref, keep_alive)

        async for _ in job_events(state.scheduler.submit(load)):
            pass
        reason = "load"
    empty = {"role": "assistant", "content": ""} if key == "message" else ""
    return JSONResponse({"model": model_name, "created_at": now_iso(), key: empty, "done": True,
                         "done_reason": reason})


def _vram_bytes(model) -> int:
    """GPU memory of a model's weights (device="cuda", once its engine is loaded), else 0."""
    engine = getattr(model, "_engine", None)
    if getattr(model, "device", "cpu") != "cuda" or engine is None:
        return 0
    return int(getattr(engine, "weight_bytes", 0))


def _check_template_allowed(state, body):
    # A request's own Jinja template is code the server runs: CPU and memory it may take are not
    # bounded by the sandbox, so only an operator who trusts the clients turns it on.
    if body.get("template") and not state.request_templates:
        raise RequestError("request templates are disabled on this server (start it with "
                           "--allow-request-templates to accept them); the model's own template is used "
                           "when the request has none")


def routes(state):
    reg = state.registry

    async def generate(request):
        body = await json_body(request)
        ref = reg.ref(body.get("model"))
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        _reject_unsupported(body)
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise RequestError("'prompt' must be a string")
        if not prompt:
            return await _load_or_unload(state, ref, body["model"], keep_alive, "response")
        params, drafts = _options(ref, body)
        system = body.get("system")
        _check_template_allowed(state, body)

        def prompt_ids():
            if body.get("raw") or not (body.get("template") or ref.template):
                return ref.tokenizer.encode(prompt)
            msgs = [{"role": "user", "content": prompt}]
            sys_prompt = system if system is not None else model_info.system(ref.metadata)
            if sys_prompt:
                msgs.insert(0, {"role": "system", "content": sys_prompt})
            return gen.render(ref, msgs, body.get("template"), **_think(body))

        ids = await run_in_threadpool(prompt_ids)  # templates and tokenizing: CPU work, off the event loop
        gen.check_context(ref, ids, params)
        prep = gen.Prepared(ref, ids, params, keep_alive, drafts=drafts)
        model = body["model"]

        def chunk(text, draft):
            obj = {"model": model, "created_at": now_iso(), "response": text, "done": False}
            if draft is not None:
                obj["draft"] = draft
            return obj

        def final(out, text):
            return {"model": model, "created_at": now_iso(), "response": text, "done": True,
                    "done_reason": out.done_reason, **_stats(out)}

        return await _respond(state, request, body, prep, chunk, final)

    async def chat(request):
        body = await json_body(request)
        ref = reg.ref(body.get("model"))
        keep_alive = parse_keep_alive(body.get("keep_alive"))
        _reject_unsupported(body)
        if body.get("messages") in (None, []):
            return await _load_or_unload(state, ref, body["model"], keep_alive, "message")
        msgs = gen.chat_messages(ref, gen.check_messages(body.get("messages")))
        params, drafts = _options(ref, body)
        _check_template_allowed(state, body)
        ids = await run_in_threadpool(gen.render, ref, msgs, body.get("template"), **_think(body))
        gen.check_context(ref, ids, params)
        prep = gen.Prepared(ref, ids, params, keep_alive, drafts=drafts)
        model = body["model"]
        markers = thinking_markers(body.get("template") or ref.template) if body.get("think") else None

        def chunk(text, draft):
            obj = {"model": model, "created_at": now_iso(), "message": {"role": "assistant", "content": text},
                   "done": False}
            if draft is not None:
                obj["draft"] = draft
            return obj

        def final(out, text):
            message = {"role": "assistant", "content": text}
            if markers and text:
                thinking, message["content"] = split_thinking(text, markers)
                if thinking:
                    message["thinking"] = thinking
            return {"model": model, "created_at": now_iso(), "message": message, "done": True,
                    "done_reason": out.done_reason, **_stats(out)}

        return await _respond(state, request, body, prep, chunk, final)

    def _entry(ref):
        return {"name": ref.name, "model": ref.name, "modified_at": _iso(ref.modified), "size": ref.size,
                "digest": ref.digest, "details": ref.ollama_details()}

    async def tags(request):
        refs = await run_in_threadpool(reg.list)
        return JSONResponse({"models": [_entry(r) for r in refs]})

    async def show(request):
        body = await json_body(request)
        ref = reg.ref(body.get("model") or body.get("name"))
        md = ref.metadata
        info = {k: v for k, v in md.items() if not (isinstance(v, list) and len(v) > 64)
                and not (isinstance(v, str) and len(v) > 4096)}
        out = {"modelfile": model_info.modelfile_text(md, ref.path, ref.name),
               "parameters": model_info.parameters_text(md), "template": model_info.template(md) or "",
               "details": ref.ollama_details(), "model_info": info, "modified_at": _iso(ref.modified),
               "capabilities": ["completion"]}
        for key, value in (("system", model_info.system(md)), ("license", model_info.license_text(md))):
            if value:
                out[key] = value
        msgs = model_info.messages(md)
        if msgs:
            out["messages"] = msgs
        return JSONResponse(out)

    async def ps(request):
        out = []
        for loaded in reg.loaded():
            entry = _entry(loaded.ref)
            expires = loaded.expires_at if loaded.expires_at != float("inf") else time.time() + 10 * 365 * 86400
            entry.update({"expires_at": _iso(expires), "size_vram": _vram_bytes(loaded.model), "context_length":
                          loaded.ref.details.get("context_length")})
            out.append(entry)
        return JSONResponse({"models": out})

    async def create(request):
        body = await json_body(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError("missing 'model': the name to create")
        try:
            store.parse_name(name)
        except ValueError as e:
            raise RequestError(str(e)) from None
        text = _modelfile_text(body)
        quantize = body.get("quantize")
        if quantize not in (None, "", "q8_0", "int8", "Q8_0"):
            raise RequestError(f"quantize {quantize!r} is not supported; use q8_0 (or int8, stored as q8_0)")
        from .. import embed

        try:
            await run_in_threadpool(embed.create, name, text, (quantize or "").lower() or None)
        except store.ModelNotFoundError as e:
            raise RequestError(str(e), 404) from None
        except mfmod.ModelfileError as e:
            raise RequestError(str(e)) from None
        except _UNREADABLE_SOURCE as e:
            ref = mfmod.parse(text, "modelfile").from_
            if not store.looks_like_path(ref):
                raise RequestError(str(e)) from None
            # One answer for a FROM path that is missing, a folder, unreadable, or not a model: the
            # reasons would tell a client what exists on the server's disk (and what it holds).
            raise RequestError(f"FROM {ref}: no model this server can read there (a .gguf file or a "
                               "checkpoint folder); `diffrt create` on the server's machine says why") from None
        if body.get("stream", True) is False:
            return JSONResponse({"status": "success"})
        lines = [{"status": f"writing model {store.canonical(name)}"}, {"status": "success"}]
        return StreamingResponse((json.dumps(x) + "\n" for x in lines), media_type=NDJSON)

    async def pull(request):
        """hf.co/ORG/REPO[:QUANT] into the store (diffrt/hub.py); the answer comes once it is there."""
        from .. import hub

        body = await json_body(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not hub.is_hub_ref(name):
            raise RequestError("'model' must be a Hugging Face name: hf.co/ORG/REPO[:QUANT]")
        try:
            hub.parse_ref(name)
            stored = await run_in_threadpool(hub.pull, name, False, log.info)
        except hub.PullError as e:
            raise RequestError(str(e), e.status) from None
        if body.get("stream", True) is False:
            return JSONResponse({"status": "success", "model": stored})
        lines = [{"status": f"pulled {name} as {stored}"}, {"status": "success"}]
        return StreamingResponse((json.dumps(x) + "\n" for x in lines), media_type=NDJSON)

    async def copy(request):
        body = await json_body(request)
        src, dst = body.get("source"), body.get("destination")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise RequestError("'source' and 'destination' must be model names")
        reg.ref(src)  # 400 / 404
        try:
            await run_in_threadpool(store.copy, src, dst)
        except ValueError as e:
            raise RequestError(str(e)) from None
        return JSONResponse({})

    async def delete(request):
        body = await json_body(request)
        ref = reg.ref(body.get("model") or body.get("name"))
        reg.unload(ref)
        store.remove(ref.name)
        return JSONResponse({})

    return [
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/create", create, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/copy", copy, methods=["POST"]),
        Route("/api/delete", delete, methods=["DELETE"]),
    ]


def _options(ref, body):
    """(sampler settings, stream drafts?). `drafts` may be a top-level field or an option (the
    ollama client only passes known fields, but passes `options` through)."""
    options = body.get("options")
    drafts = bool(body.get("drafts"))
    if isinstance(options, dict) and "drafts" in options:
        options = dict(options)
        drafts = drafts or bool(options.pop("drafts"))
    return gen.merge_options(ref, options), drafts


def _think(body) -> dict:
    return {"enable_thinking": bool(body["think"])} if body.get("think") is not None else {}


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _modelfile_text(body) -> str:
    """/api/create takes a Modelfile string ("modelfile", the older API) or its parts as fields
    ("from", "parameters", "template", "system", "license", "messages", the current API)."""
    if body.get("files") or body.get("adapters"):
        raise RequestError("creating from uploaded files or adapters is not supported; use 'from' with a "
                           "store name or a path on the server")
    if isinstance(body.get("modelfile"), str):
        text = body["modelfile"]
        try:
            mfmod.parse(text, "modelfile")
        except mfmod.ModelfileError as e:
            raise RequestError(str(e)) from None
        return text
    src = body.get("from")
    if not isinstance(src, str) or not src:
        raise RequestError("give 'from' (a store name or a .gguf / checkpoint path) or a 'modelfile'")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError("'parameters' must be an object")
    lic = body.get("license")
    try:
        parsed = {}
        for k, v in params.items():
            if k in mfmod.REPEATABLE:
                parsed[k] = [mfmod.convert_value(k, x, "parameters: ") for x in ([v] if isinstance(v, str) else v)]
            else:
                parsed[k] = mfmod.convert_value(k, v, "parameters: ")
        mfmod.check_temperatures(parsed, "parameters: ")
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in body.get("messages") or []]
        for m in msgs:
            if m["role"] not in mfmod.ROLES or not isinstance(m["content"], str):
                raise mfmod.ModelfileError(f"messages: each needs a role in {mfmod.ROLES} and string content")
        mf = mfmod.Modelfile(from_=src, parameters=parsed, template=body.get("template"),
                             system=body.get("system"), messages=msgs,
                             license=[lic] if isinstance(lic, str) else list(lic or []))
        if mf.template is not None:
            mfmod.check_template(mf.template, "template: ")
        return mf.format()
    except (mfmod.ModelfileError, TypeError, AttributeError) as e:
        raise RequestError(str(e)) from None
