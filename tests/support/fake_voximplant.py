"""A local server speaking VoxImplant's Management API wire format, for the real
``voximplant-apiclient`` to talk to in tests.

Requests: ``POST /platform_api`` (the client's form, the method in ``cmd``) or
``/platform_api/<Method>/`` with form or query parameters, ``Authorization: Bearer <JWT>``
signed RS256 by a service account key (``kid`` header, ``iss`` = account id). Answers: JSON
``{"result": ...}`` (plus the method's extra fields), or ``{"error": {"code", "msg"}}`` — code
100 "Authorization failed" for a missing, unsigned, expired or foreign token, as VoxImplant does.

It keeps a catalog of numbers per region, the account's attached numbers (with the rule they
are bound to), the scenarios started, and one media session URL per started scenario
(``/request/<id>``) that records the commands POSTed to it.
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from commands.telephony import ProviderCredentials

AUTH_FAILED = {"code": 100, "msg": "Authorization failed"}


def key_pair() -> tuple[str, str]:
    """A fresh RSA key pair as PEM (private, public)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class Region:
    phone_region_id: int
    phone_region_name: str
    phone_region_code: str
    numbers: list[str]  # digits, no plus


@dataclass
class Attached:
    phone_id: int
    phone_number: str
    application_name: str | None = None
    rule_name: str | None = None
    deactivated: bool = False


@dataclass
class Session:
    session_id: str
    custom_data: str
    rule_name: str | None
    commands: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False


class FakeVoximplant:
    def __init__(self, account_id: str = "4242") -> None:
        self.account_id = account_id
        self.key_id = "c0ffee00-key"
        self.private_key, self.public_key = key_pair()
        self.keys: dict[str, str] = {self.key_id: self.public_key}  # kid -> public PEM
        self.regions: dict[tuple[str, str], list[Region]] = {}  # (country, category) -> regions
        self.attached: dict[int, Attached] = {}
        self.sessions: dict[str, Session] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (method, params)
        self.fail_next: dict[str, dict[str, Any]] = {}  # method -> error to answer once
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    # -- what a test sets up and reads --------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/platform_api"

    def credentials(self, **override: str) -> ProviderCredentials:
        secrets = {"key_id": self.key_id, "private_key": self.private_key}
        account = override.pop("account_id", self.account_id)
        return ProviderCredentials("voximplant", account, {**secrets, **override})

    def add_region(
        self, country: str, category: str, name: str, code: str, numbers: list[str]
    ) -> Region:
        region = Region(next(self._ids), name, code, [n.lstrip("+") for n in numbers])
        self.regions.setdefault((country, category), []).append(region)
        return region

    def calls(self, method: str) -> list[dict[str, str]]:
        return [params for name, params in self.requests if name == method]

    # -- the server -----------------------------------------------------------------------
    def start(self) -> FakeVoximplant:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                status, answer = fake.handle(self.path, dict(self.headers), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, path: str, headers: dict[str, str], body: str) -> tuple[int, Any]:
        url = urlsplit(path)
        if url.path.startswith("/request/"):
            return self._session_command(url.path.removeprefix("/request/"), body)
        if not url.path.startswith("/platform_api"):
            return 404, {"error": {"code": 404, "msg": "not found"}}
        params = dict(parse_qsl(url.query)) | dict(parse_qsl(body, keep_blank_values=True))
        method = params.pop("cmd", None) or url.path.removeprefix("/platform_api").strip("/")
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if not self._authorised(auth):
            return 200, {"error": AUTH_FAILED}
        with self._lock:
            self.requests.append((method, params))
            failure = self.fail_next.pop(method, None)
            if failure is not None:
                return 200, {"error": failure}
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                return 200, {"error": {"code": 102, "msg": f"Unknown method {method}"}}
            return 200, handler(params)

    def _authorised(self, header: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            public = self.keys.get(str(kid))
            if public is None:
                return False
            claims = jwt.decode(
                token, public, algorithms=["RS256"], options={"require": ["iss", "exp", "iat"]}
            )
        except jwt.PyJWTError:
            return False
        return str(claims["iss"]) == self.account_id

    # -- the methods ----------------------------------------------------------------------
    def _m_GetPhoneNumberRegions(self, p: dict[str, str]) -> Any:  # noqa: N802
        regions = self.regions.get((p.get("country_code", ""), p.get("phone_category_name", "")))
        rows = [
            {"phone_region_id": r.phone_region_id, "phone_region_name": r.phone_region_name,
             "phone_region_code": r.phone_region_code, "phone_count": len(r.numbers),
             "is_sms_supported": False}
            for r in regions or []
            if p.get("phone_region_code") in (None, r.phone_region_code)
        ]  # fmt: skip
        return {"result": rows, "count": len(rows)}

    def _m_GetNewPhoneNumbers(self, p: dict[str, str]) -> Any:  # noqa: N802
        key = (p.get("country_code", ""), p.get("phone_category_name", ""))
        wanted = p.get("phone_region_id")
        region = next((r for r in self.regions.get(key, []) if str(r.phone_region_id) == wanted),
                      None)  # fmt: skip
        if region is None:
            return {"error": {"code": 143, "msg": "Invalid phone_region_id"}}
        mask = p.get("phone_number_mask", "").strip("*")
        rows = [
            {"phone_id": 0, "phone_number": n, "phone_price": 1.0, "phone_installation_price": 0,
             "phone_country_code": key[0], "phone_category_name": key[1],
             "phone_region_name": region.phone_region_name, "phone_period": "0-1-0 0:0:0"}
            for n in region.numbers
            if not mask or "*" in mask or mask in n
        ][: int(p.get("count", "20"))]  # fmt: skip
        return {"result": rows, "total_count": len(rows), "count": len(rows)}

    def _m_AttachPhoneNumber(self, p: dict[str, str]) -> Any:  # noqa: N802
        number = p.get("phone_number", "")
        for regions in self.regions.values():
            for region in regions:
                if number in region.numbers:
                    region.numbers.remove(number)
                    attached = Attached(next(self._ids), number)
                    self.attached[attached.phone_id] = attached
                    return {"result": 1, "phone_numbers": [
                        {"phone_id": attached.phone_id, "phone_number": number}]}  # fmt: skip
        return {"error": {"code": 121, "msg": f"The phone number {number} is not available"}}

    def _m_BindPhoneNumberToApplication(self, p: dict[str, str]) -> Any:  # noqa: N802
        phone = self.attached.get(int(p.get("phone_id", "0")))
        if phone is None or phone.deactivated:
            return {"error": {"code": 124, "msg": "Phone number not found"}}
        bind = p.get("bind", "True") != "False"
        phone.application_name = p.get("application_name") if bind else None
        phone.rule_name = p.get("rule_name") if bind else None
        return {"result": 1}

    def _m_DeactivatePhoneNumber(self, p: dict[str, str]) -> Any:  # noqa: N802
        phone = self.attached.get(int(p.get("phone_id", "0")))
        if phone is None or phone.deactivated:
            return {"error": {"code": 124, "msg": "Phone number not found"}}
        phone.deactivated = True
        return {"result": 1}

    def _m_StartScenarios(self, p: dict[str, str]) -> Any:  # noqa: N802
        if not p.get("rule_id") and not p.get("rule_name"):
            return {"error": {"code": 104, "msg": "rule_id is required"}}
        session = Session(f"S{next(self._ids)}.1580999958", p.get("script_custom_data", ""),
                          p.get("rule_name"))  # fmt: skip
        self.sessions[session.session_id] = session
        base = f"127.0.0.1:{self.port}/request/{session.session_id}"
        return {"result": 1, "media_session_access_url": f"http://{base}",
                "media_session_access_secure_url": f"http://{base}",
                "call_session_history_id": next(self._ids)}  # fmt: skip

    def _session_command(self, session_id: str, body: str) -> tuple[int, Any]:
        with self._lock:
            session = self.sessions.get(session_id)
            if session is None or session.ended:
                return 404, {"error": "no such session"}
            command = json.loads(body or "{}")
            session.commands.append(command)
            if command.get("command") == "hangup":
                session.ended = True
        return 200, {"result": 1}
