"""OpenAI's HTTP API: /v1/chat/completions, /v1/completions (SSE streaming or one JSON, with `usage`)
and /v1/models. The diffusion settings go as extra top-level fields (the openai client's
`extra_body`): steps, entropy_bound, t_min, t_max, stability_threshold, confidence_threshold, and
`drafts: true` to stream per-step drafts as chunks with a `draft` field."""

from __future__ import annotations

import json
import time
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .. import params as params_table
from . import generation as gen
from .app import error_message, job_events, job_result, json_body
from .registry import RequestError, parse_keep_alive

# OpenAI request field -> Modelfile PARAMETER name (diffrt/params.py; max_tokens is mapped below).
_FIELDS = {p.openai: p.name for p in params_table.TABLE if p.openai}
# OpenAI sampling fields with no meaning for a diffusion sampler: accepted and ignored.
_IGNORED = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "logit_bias", "user")


def _options(body) -> dict:
    """OpenAI fields → Modelfile PARAMETER names (checked by merge_options)."""
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    if body.get("logprobs") or body.get("top_logprobs") or body.get("echo") or body.get("best_of", 1) != 1:
        raise RequestError("logprobs, echo and best_of are not supported")
    if body.get("tools") or body.get("functions"):
        raise RequestError("tools are not supported yet")
    if body.get("suffix"):
        raise RequestError("'suffix' is not supported yet")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise RequestError("response_format other than text (JSON output) is not supported yet")
    opts = {name: body[field] for field, name in _FIELDS.items() if body.get(field) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        opts["num_predict"] = max_tokens
    return opts


def _usage(out: gen.Outcome) -> dict:
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens}


def _finish(out: gen.Outcome) -> str:
    return "length" if out.done_reason == "length" else "stop"


def routes(state):
    reg = state.registry

    async def _run(request, body, ids_of, obj_prefix, make_choice, make_delta):
        ref = reg.ref(body.get("model"))
        params = gen.merge_options(ref, _options(body), "request")
        ids = await run_in_threadpool(ids_of, ref)  # templates and tokenizing: off the event loop
        gen.check_context(ref, ids, params)
        prep = gen.Prepared(ref, ids, params, parse_keep_alive(body.get("keep_alive")),
                            drafts=bool(body.get("drafts")))
        job = state.scheduler.submit_generation(reg, prep)
        rid, created, model = f"{obj_prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), body["model"]
        obj = "chat.completion" if obj_prefix == "chatcmpl" else "text_completion"
        if not body.get("stream"):
            value = await job_result(request, job)
            return JSONResponse({"id": rid, "object": obj, "created": created, "model": model,
                                 "choices": [make_choice(value)], "usage": _usage(value)})
        chunk_obj = obj + ".chunk" if obj_prefix == "chatcmpl" else obj
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def sse(choices, **extra):
            return "data: " + json.dumps({"id": rid, "object": chunk_obj, "created": created, "model": model,
                                          "choices": choices, **extra}, ensure_ascii=False) + "\n\n"

        async def events():
            try:
                first = make_delta("", first=True)
                if first is not None:
                    yield sse([first])
                async for kind, value in job_events(job):
                    if kind == "text":
                        yield sse([make_delta(value)])
                    elif kind == "draft":
                        yield sse([make_delta("")], draft=value)
                    else:
                        yield sse([make_delta(None, finish=_finish(value))])
                        if include_usage:
                            yield sse([], usage=_usage(value))
            except Exception as e:
                status, msg = error_message(e)
                yield "data: " + json.dumps({"error": {"message": msg, "type": "server_error", "code": status}}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat_completions(request):
        body = await json_body(request)

        def ids_of(ref):
            return gen.render(ref, gen.chat_messages(ref, gen.check_messages(body.get("messages"))))

        def choice(out):
            return {"index": 0, "message": {"role": "assistant", "content": out.text},
                    "finish_reason": _finish(out), "logprobs": None}

        def delta(text, first=False, finish=None):
            d = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            return {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}

        return await _run(request, body, ids_of, "chatcmpl", choice, delta)

    async def completions(request):
        body = await json_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("'prompt' must be a non-empty string (one prompt per request)")

        def choice(out):
            return {"index": 0, "text": out.text, "finish_reason": _finish(out), "logprobs": None}

        def delta(text, first=False, finish=None):
            if first:
                return None
            return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}

        return await _run(request, body, lambda ref: ref.tokenizer.encode(prompt), "cmpl", choice, delta)

    async def models(request):
        refs = await run_in_threadpool(reg.list)
        return JSONResponse({"object": "list", "data": [
            {"id": r.name, "object": "model", "created": int(r.modified), "owned_by": "diffrt"} for r in refs]})

    async def model(request):
        ref = reg.ref(request.path_params["name"])
        return JSONResponse({"id": ref.name, "object": "model", "created": int(ref.modified), "owned_by": "diffrt"})

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model, methods=["GET"]),
    ]
