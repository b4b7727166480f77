"""Text in the URL and headers: refused before routing when our stores could not hold it.

Query and path parameters reach SQL (``?name=``, room names, deliveries' ``event_type``), and
PostgreSQL refuses a NUL character: without this guard such a request ended in a 500. Servers
also decode invalid percent-encoded UTF-8 (``%ff``) silently into U+FFFD, so a lookup would
search for a different text than the one sent. This ASGI middleware checks the raw path, every
query parameter (name and value) and every header value once, for every route, with the rule of
``domain.text``, and answers 422 ``invalid_request`` in the usual error format, the
``details`` naming the parameter (``loc``) and why (``type``: ``unstorable_text`` or
``invalid_utf8``). The request body is left alone (the route's models check it).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.api.errors import error_response, request_id
from domain.text import UNSTORABLE_TEXT, text_problem

INVALID_UTF8 = "invalid_utf8"
MESSAGE = (
    "The request's URL or headers hold text that cannot be stored: see details for the "
    "parameter to fix (percent-encode UTF-8 text; NUL characters are not allowed)."
)


def _decoded(raw: bytes, loc: list[str], problems: list[dict[str, Any]]) -> str | None:
    """``raw`` (percent-encoded) as text; a problem recorded when it is not storable UTF-8."""
    try:
        text = unquote_to_bytes(raw).decode("utf-8")  # strict: no encoded surrogates either
    except UnicodeDecodeError as exc:
        problems.append({"loc": loc, "type": INVALID_UTF8,
                         "msg": f"is not valid percent-encoded UTF-8 ({exc.reason} at byte "
                                f"{exc.start})"})  # fmt: skip
        return None
    why = text_problem(text)
    if why is not None:
        problems.append({"loc": loc, "type": UNSTORABLE_TEXT, "msg": why})
        return None
    return text


def url_problems(scope: Scope) -> list[dict[str, Any]]:
    """What is wrong with the request's path, query string and headers (empty: nothing)."""
    problems: list[dict[str, Any]] = []
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    _decoded(raw_path.split(b"?", 1)[0], ["path"], problems)
    for part in scope.get("query_string", b"").replace(b";", b"&").split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        name_text = _decoded(name.replace(b"+", b" "), ["query"], problems)
        _decoded(value.replace(b"+", b" "), ["query", name_text or "?"], problems)
    for header, value in scope.get("headers", ()):
        if b"\x00" in value:
            problems.append({"loc": ["header", header.decode("latin-1")], "type": UNSTORABLE_TEXT,
                             "msg": "holds a NUL character (U+0000); remove it"})  # fmt: skip
    return problems


class TextGuard:
    """The ASGI middleware: 422 for an unstorable URL or header, the app for everything else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problems = url_problems(scope)
        if not problems:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if any(p["loc"][0] == "header" for p in problems):
            request.state.request_id = uuid.uuid4().hex  # never echo a refused header
        response = error_response(request, 422, "invalid_request", MESSAGE, problems)
        response.headers["x-request-id"] = request_id(request)
        await _drain(receive)  # read the body, so that the connection can serve the next request
        await response(scope, receive, send)


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
