"""Browser safety for `diffrt serve`, as Ollama has it (OLLAMA_ORIGINS and its Host check).

A web page the user visits can send requests to a server on the user's own machine: a `text/plain`
POST needs no CORS preflight, so without checks any page could copy over or create store models,
and DNS rebinding (a page whose name resolves to 127.0.0.1) reaches the API under a foreign Host.
So, before any route runs:
  - Host: a server bound to a loopback address answers only requests whose Host header names a
    loopback host (localhost, *.localhost, 127.0.0.0/8, ::1). Bound to another address, the
    operator has opened it to a network: the Host is not checked.
  - Origin: a request that carries an Origin (browsers send one on cross-origin requests) is
    served only when the origin is allowed: http(s) on localhost / 127.0.0.1 / [::1] at any port,
    the app schemes Ollama allows (app://, file://, tauri://, vscode-webview://), and the patterns of
    DIFFRT_ORIGINS or `diffrt serve --origins` (comma-separated, `*` wildcards). Anything else: 403.
    Requests without an Origin (curl, the ollama/openai clients, scripts) are not browser requests
    and pass.
  - CORS: allowed origins get Access-Control-Allow-Origin on every answer and a 204 to preflights.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re

# http(s) pages served from this machine, at any port
_LOCAL_PAGE = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?")
DEFAULT_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*")
ALLOW_METHODS = "GET, POST, PUT, DELETE, HEAD, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, X-Stainless-*"


def origin_patterns(extra: str | None = None) -> list[str]:
    """The allowed origin patterns: the defaults, DIFFRT_ORIGINS, and `extra` (comma-separated)."""
    pats = list(DEFAULT_ORIGINS)
    for src in (os.environ.get("DIFFRT_ORIGINS"), extra):
        pats += [p.strip() for p in (src or "").split(",") if p.strip()]
    return pats


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):  # [::1]:11434
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(name: str) -> bool:
    name = name.strip().lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """ASGI middleware enforcing the rules above around `app`."""

    def __init__(self, app, bind_host: str = "127.0.0.1", origins: str | None = None):
        self.app = app
        self.check_host = is_loopback(bind_host)
        self.patterns = origin_patterns(origins)

    def origin_allowed(self, origin: str) -> bool:
        o = origin.strip().lower()
        return bool(_LOCAL_PAGE.fullmatch(o)) or any(fnmatch.fnmatchcase(o, p.lower()) for p in self.patterns)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.check_host and host and not is_loopback(_host_name(host)):
            return await _refuse(send, f"host {host!r} is not allowed: this server answers loopback hosts only "
                                       "(bind it to another address with --host to open it to a network)")
        origin = headers.get("origin")
        if origin is None:
            return await self.app(scope, receive, send)
        if not self.origin_allowed(origin):
            return await _refuse(send, f"origin {origin!r} is not allowed (allow it with DIFFRT_ORIGINS or "
                                       "diffrt serve --origins)")
        cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": cors + [
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"600")]})
            return await send({"type": "http.response.body", "body": b""})

        async def send_with_cors(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + cors)
            await send(message)

        return await self.app(scope, receive, send_with_cors)


async def _refuse(send, message: str):
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
