"""A local stand-in for our SIP service's HTTP control API (``sipd``, docs/telephony.md), for
the platform's client (``adapters.telephony.sip.SipVoiceProvider``) to talk to in tests. It
holds no SIP: it records what it is asked, as ``sipd`` would take it.

- ``GET /health`` -> ``{"ok": true, "calls": N}`` (no secret needed);
- ``POST /calls`` -> 202 ``{"sip_call_id": ...}`` (the call is then held);
- ``POST /calls/{call_id}/transfer`` -> 202 (cold), 200 ``{"state": "consulting"}`` (warm: the
  target answered) or 502 ``transfer_failed`` after ``refuse_consult(sip_code)``;
  ``POST /calls/{call_id}/hangup`` -> 204;
- 404 ``{"code": "unknown_call"}`` for a call it does not hold, 401 for a wrong secret.

``hold(call_id)`` makes it hold a call that came in (an inbound INVITE); ``fail_next(status)``
answers the next request with that status.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    body: Any


class FakeSipd:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.requests: list[Request] = []
        self.calls: dict[str, dict[str, Any]] = {}  # call_id -> the /calls body (or {})
        self.transfers: list[tuple[str, str]] = []  # (call_id, target)
        self.hangups: list[str] = []
        self._fail: int | None = None
        self._consult_refusal: int | None = None
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> FakeSipd:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def hold(self, call_id: str) -> None:
        with self._lock:
            self.calls[str(call_id)] = {}

    def refuse_consult(self, sip_code: int) -> None:
        """The next warm transfer's target answers ``sip_code``: 502 ``transfer_failed``."""
        self._consult_refusal = sip_code

    def fail_next(self, status: int) -> None:
        self._fail = status

    def of(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # -- the control API ----------------------------------------------------------------
    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = handler.headers.get("Authorization")
        with self._lock:
            self.requests.append(Request(method, handler.path, auth, body))
            status, answer = self._answer(method, handler.path, auth, body)
        payload = b"" if answer is None else json.dumps(answer).encode()
        handler.send_response(status)
        if payload:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/health":
            return 200, {"ok": True, "calls": len(self.calls)}
        if auth != f"Bearer {self.secret}":
            return 401, {"code": "unauthorized"}
        if self._fail is not None:
            status, self._fail = self._fail, None
            return status, {"code": "failed"}
        if method == "POST" and path == "/calls":
            if not isinstance(body, dict) or not body.get("call_id"):
                return 400, {"code": "invalid_request"}
            sip_call_id = f"{uuid.uuid4().hex}@fake-sipd"
            self.calls[str(body["call_id"])] = dict(body, sip_call_id=sip_call_id)
            return 202, {"sip_call_id": sip_call_id}
        found = re.fullmatch(r"/calls/([^/]+)/(transfer|hangup)", path)
        if method == "POST" and found:
            call_id, action = found.groups()
            if call_id not in self.calls:
                return 404, {"code": "unknown_call"}
            if action == "transfer":
                self.transfers.append((call_id, (body or {}).get("target")))
                if (body or {}).get("mode") != "warm":
                    return 202, {"ok": True}
                if self._consult_refusal is not None:
                    code, self._consult_refusal = self._consult_refusal, None
                    return 502, {"code": "transfer_failed", "sip_code": code,
                                 "message": f"the target answered {code} Busy Here"}  # fmt: skip
                return 200, {"state": "consulting"}
            self.hangups.append(call_id)
            del self.calls[call_id]
            return 204, None
        return 404, {"code": "not_found"}
