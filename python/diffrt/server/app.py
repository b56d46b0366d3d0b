"""The ASGI app behind `diffrt serve`: Ollama's API under /api, OpenAI's under /v1, one scheduler and
one registry of models shared by both. `create_app(loader=...)` takes any `path -> model` function, so
tests can inject a double; `serve()` runs it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from .. import __version__
from ..errors import DiffrtError
from .registry import Registry, RequestError
from .security import BrowserGuard
from .scheduler import DEFAULT_MAX_CONTEXT, DEFAULT_PARALLEL, QueueFullError, Scheduler

log = logging.getLogger("diffrt.server")


class State:
    def __init__(self, loader, max_queue: int, parallel: int = DEFAULT_PARALLEL,
                 max_context: int = DEFAULT_MAX_CONTEXT, request_templates: bool = False):
        self.registry = Registry(loader)
        self.scheduler = Scheduler(max_queue, parallel, max_context)
        self.request_templates = request_templates  # run a request's own Jinja template


# Request bodies larger than this are refused (413) while they arrive, before any parsing: a prompt
# of this size is already far past any model's context.
MAX_BODY_BYTES = 16 * 1024 * 1024
DRAIN_TIMEOUT_S = 30  # seconds `diffrt serve` waits for running requests on SIGTERM
# Types of the top-level fields every handler reads, checked once here (a wrong one is a 400, not a
# 500 or a silently different meaning such as "stream": "false" streaming).
_FIELD_TYPES = {"stream": bool, "raw": bool, "drafts": bool, "template": str, "system": str,
                "suffix": str, "options": dict, "stream_options": dict, "messages": list}


async def json_body(request: Request) -> dict:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise RequestError(f"request body of {int(length)} bytes is over the limit of {MAX_BODY_BYTES}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(f"request body is over the limit of {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise RequestError("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    for field, typ in _FIELD_TYPES.items():
        v = body.get(field)
        if v is not None and not isinstance(v, typ):
            raise RequestError(f"'{field}' must be a JSON {_JSON_NAME[typ]}, got {json.dumps(v)[:40]}")
    return body


_JSON_NAME = {bool: "boolean", str: "string", dict: "object", list: "array"}


async def job_events(job):
    """A job's events, then ("done", result); re-raises its error. Leaving early cancels the job
    (a client that hung up stops its generation at the next step)."""
    try:
        while True:
            kind, value = await job.next()
            if kind == "event":
                yield value
            elif kind == "result":
                yield ("done", value)
                return
            else:
                raise value
    finally:
        job.cancel()


async def job_result(request: Request, job):
    """The job's final result, for a non-streaming answer. A client that hangs up meanwhile cancels
    the job (its generation stops at the next step), as leaving job_events early does for streams:
    the request body is read by now, so the next ASGI message is the disconnect."""

    async def watch():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancel()

    watcher = asyncio.create_task(watch())
    try:
        async for kind, value in job_events(job):
            if kind == "done":
                return value
    finally:
        watcher.cancel()


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def error_message(exc: Exception) -> tuple[int, str]:
    """HTTP status and message for an exception out of a handler or a job."""
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, QueueFullError):
        return 503, str(exc)
    if isinstance(exc, (DiffrtError, ValueError)):
        return 400, str(exc)
    log.exception("internal error", exc_info=exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"


def _error_response(request: Request, exc: Exception):
    status, msg = error_message(exc)
    headers = {"Retry-After": "1"} if status == 503 else None  # the queue frees as canvases finish
    if request.url.path.startswith("/v1"):
        kind = {404: "not_found_error", 503: "server_busy"}.get(status, "invalid_request_error")
        if status >= 500 and status != 503:
            kind = "server_error"
        return JSONResponse({"error": {"message": msg, "type": kind, "param": None, "code": None}}, status,
                            headers=headers)
    return JSONResponse({"error": msg}, status, headers=headers)


def create_app(loader=None, max_queue: int = 16, parallel: int = DEFAULT_PARALLEL,
               max_context: int = DEFAULT_MAX_CONTEXT, host: str = "127.0.0.1", origins: str | None = None,
               request_templates: bool = False) -> Starlette:
    """host: the address the server is bound to (a loopback one turns the Host check on); origins:
    allowed browser origins besides the defaults and DIFFRT_ORIGINS (server/security.py);
    request_templates: accept a request's own chat template (off: a 400)."""
    from . import ollama, openai

    if loader is None:
        from ..model import load as loader
    state = State(loader, max_queue, parallel, max_context, request_templates)

    async def root(request):
        return PlainTextResponse("diffrt is running")

    async def version(request):
        return JSONResponse({"version": __version__})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def expire():  # drop models whose keep_alive ran out
            while True:
                await asyncio.sleep(1.0)
                state.registry.expire()

        task = asyncio.create_task(expire())
        try:
            yield
        finally:
            task.cancel()
            state.scheduler.close()

    routes = [Route("/", root, methods=["GET", "HEAD"]), Route("/api/version", version)]
    routes += ollama.routes(state) + openai.routes(state)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: _error_response})
    app.state.diffrt = state
    # Starlette hands HTTPException (404 route, 405 method) to its own handler; everything else
    # a handler raises goes through _error_response via this middleware-level catch.
    app.add_exception_handler(RequestError, _error_response)
    app.add_exception_handler(QueueFullError, _error_response)
    app.add_exception_handler(DiffrtError, _error_response)
    app.add_exception_handler(ValueError, _error_response)
    app.add_middleware(BrowserGuard, bind_host=host, origins=origins)
    return app


def serve(host: str = "127.0.0.1", port: int = 11434, max_queue: int = 16, log_level: str = "info",
          parallel: int = DEFAULT_PARALLEL, max_context: int = DEFAULT_MAX_CONTEXT, device: str = "cpu",
          origins: str | None = None, request_templates: bool = False):
    import functools

    import uvicorn

    from ..model import load

    app = create_app(loader=functools.partial(load, device=device), max_queue=max_queue, parallel=parallel,
                     max_context=max_context, host=host, origins=origins,
                     request_templates=request_templates)
    # SIGTERM: stop accepting, let running requests finish, but not for longer than this.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=DRAIN_TIMEOUT_S)
