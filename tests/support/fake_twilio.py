"""A local Twilio: the REST API's wire format, closely enough that the real ``twilio`` SDK works
against it unchanged, and the webhooks Twilio sends back (voice URL requests and status
callbacks), signed with ``X-Twilio-Signature`` exactly as Twilio signs them.

What it serves (``/2010-04-01/Accounts/{AccountSid}/...``, form-encoded requests, JSON answers,
HTTP Basic auth with the account SID and auth token or an API key SID and secret):

- ``AvailablePhoneNumbers/{Country}/Local.json`` (``AreaCode``, ``Contains`` with ``*``,
  ``PageSize``) from a stock of numbers the test controls;
- ``IncomingPhoneNumbers.json`` create (a number from the stock) and
  ``IncomingPhoneNumbers/{Sid}.json`` fetch, update, delete;
- ``Calls.json`` create (``Url`` or ``Twiml``, ``StatusCallback``, ``StatusCallbackEvent``,
  ``MachineDetection``, ``Timeout``) and ``Calls/{Sid}.json`` fetch and update (``Twiml``,
  ``Url``, ``Status=completed``); a ``<Dial>`` in new TwiML is recorded as a transfer.

Errors carry Twilio's JSON body (``code``, ``message``, ``more_info``, ``status``) and codes
(20003 bad credentials, 20404 not found, 21422 number not available, 21211 bad ``To``, 21210
``From`` not one of the account's numbers, 21220 call not in progress).

The test drives a placed call's life (``ring``, ``answer``, ``finish``) and places inbound
calls (``incoming_call``); each webhook goes through ``deliver`` (HTTP by default; a test of an
in-process API passes its TestClient's ``post`` through ``via_client``). Reference:
https://www.twilio.com/docs/usage/webhooks/webhooks-security,
https://www.twilio.com/docs/voice/api/call-resource.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import secrets
import threading
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "2010-04-01"
PATH = re.compile(rf"^/{API}/Accounts/(AC[0-9a-f]{{32}})/(.+)\.json$")
NANP = re.compile(r"^\+1(\d{3})\d{7}$")


def sid(prefix: str) -> str:
    """A Twilio SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1, keyed by the auth token, over the full URL
    followed by each POST parameter's name and value, sorted by name. Written here from
    Twilio's description, not taken from the SDK, so a test can check our verifier with it."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Delivered:
    """One webhook the fake sent: where, what, and what came back."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]
    status: int
    body: str


Deliver = Callable[[str, dict[str, str], dict[str, str]], tuple[int, str]]


def over_http(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    from urllib.error import HTTPError
    from urllib.parse import urlencode

    request = urllib.request.Request(url, data=urlencode(form).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - test URLs
            return resp.status, resp.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def via_client(client: Any) -> Deliver:
    """Deliver webhooks to an in-process API (a Starlette TestClient): the URL's path and query
    go to ``client.post``, the URL itself is what the signature covers."""

    def deliver(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        resp = client.post(path, data=form, headers=headers)
        return resp.status_code, resp.text

    return deliver


@dataclass(frozen=True)
class Transfer:
    call_sid: str
    kind: str  # number | sip
    target: str
    twiml: str


@dataclass
class Account:
    sid: str
    auth_token: str
    api_keys: dict[str, str] = field(default_factory=dict)  # SK... -> secret


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
        }


class FakeTwilio:
    def __init__(self, deliver: Deliver = over_http) -> None:
        self.account = Account(sid("AC"), secrets.token_hex(16))
        self.deliver = deliver
        self.stock: dict[str, list[dict[str, Any]]] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.transfers: list[Transfer] = []
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []  # method, path, form
        self.delivered: list[Delivered] = []
        self.lock = threading.RLock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    # -- set-up -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_key(self) -> tuple[str, str]:
        """A new API key of the account: (SK... sid, secret)."""
        key, secret = sid("SK"), secrets.token_hex(16)
        self.account.api_keys[key] = secret
        return key, secret

    def offer(
        self,
        e164: str,
        *,
        locality: str = "San Francisco",
        region: str = "CA",
        voice: bool = True,
        sms: bool = True,
    ) -> None:
        """Put a number on sale (``AvailablePhoneNumbers``)."""
        country = "US" if e164.startswith("+1") else "GB" if e164.startswith("+44") else "ZZ"
        with self.lock:
            self.stock.setdefault(country, []).append(
                {
                    "friendly_name": e164,
                    "phone_number": e164,
                    "lata": None,
                    "locality": locality,
                    "rate_center": locality.upper(),
                    "latitude": "37.77",
                    "longitude": "-122.41",
                    "region": region,
                    "postal_code": None,
                    "iso_country": country,
                    "address_requirements": "none",
                    "beta": False,
                    "capabilities": {"voice": voice, "SMS": sms, "MMS": False, "fax": False},
                }
            )

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:  # noqa: N802
                fake._handle(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the REST API ---------------------------------------------------------------------------
    def _handle(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("content-length") or 0)
        form = parse_qs(handler.rfile.read(length).decode(), keep_blank_values=True)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self.lock:
            self.requests.append((method, parts.path, form))
        try:
            match = PATH.match(parts.path)
            if match is None:
                raise TwilioError(404, 20404, f"The requested resource {parts.path} was not found")
            self._authenticate(handler.headers.get("authorization"), match.group(1))
            status, body = self._route(method, match.group(2), form, query)
        except TwilioError as exc:
            status, body = exc.status, exc.body()
        payload = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _authenticate(self, header: str | None, account_sid: str) -> None:
        refused = TwilioError(401, 20003, "Authenticate")
        if not header or not header.startswith("Basic "):
            raise refused
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            raise refused from None
        account = self.account
        good = (user == account.sid and hmac.compare_digest(password, account.auth_token)) or (
            user in account.api_keys and hmac.compare_digest(password, account.api_keys[user])
        )
        if not good or account_sid != account.sid:
            raise refused

    def _route(
        self, method: str, resource: str, form: dict[str, list[str]], query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any] | None]:
        one = {k: v[-1] for k, v in form.items()}
        available = re.fullmatch(r"AvailablePhoneNumbers/([A-Z]{2})/Local", resource)
        if available and method == "GET":
            return 200, self._search(available.group(1), {k: v[-1] for k, v in query.items()})
        if resource == "IncomingPhoneNumbers" and method == "POST":
            return 201, self._buy(one)
        number = re.fullmatch(r"IncomingPhoneNumbers/(PN[0-9a-f]{32})", resource)
        if number:
            return self._number(method, number.group(1), one)
        if resource == "Calls" and method == "POST":
            return 201, self._place(one, form.get("StatusCallbackEvent", []))
        call = re.fullmatch(r"Calls/(CA[0-9a-f]{32})", resource)
        if call and method in ("GET", "POST"):
            return 200, self._call(method, call.group(1), one)
        raise TwilioError(404, 20404, f"The requested resource {resource}.json was not found")

    def _uri(self, resource: str) -> str:
        return f"/{API}/Accounts/{self.account.sid}/{resource}.json"

    def _search(self, country: str, query: dict[str, str]) -> dict[str, Any]:
        size = int(query.get("PageSize", "50"))
        pattern = query.get("Contains", "").replace("*", r"\d")
        with self.lock:
            found = [
                n
                for n in self.stock.get(country, [])
                if (
                    not query.get("AreaCode")
                    or (m := NANP.match(n["phone_number"])) is not None
                    and m.group(1) == query["AreaCode"]
                )
                and re.search(pattern, n["phone_number"][1:]) is not None
            ][:size]
        uri = self._uri(f"AvailablePhoneNumbers/{country}/Local")
        return {
            "available_phone_numbers": found,
            "uri": uri,
            "end": len(found) - 1,
            "first_page_uri": uri,
            "next_page_uri": None,
            "previous_page_uri": None,
            "page": 0,
            "page_size": size,
            "start": 0,
        }

    def _buy(self, form: dict[str, str]) -> dict[str, Any]:
        e164 = form.get("PhoneNumber", "")
        with self.lock:
            offered = [
                n for offers in self.stock.values() for n in offers if n["phone_number"] == e164
            ]
            if not offered:
                raise TwilioError(400, 21422, f"PhoneNumber {e164} is not available.")
            for offers in self.stock.values():
                offers[:] = [n for n in offers if n["phone_number"] != e164]
            caps = {k.lower(): v for k, v in offered[0]["capabilities"].items()}
            number_sid = sid("PN")
            now = formatdate(usegmt=False)
            self.numbers[number_sid] = {
                "sid": number_sid,
                "account_sid": self.account.sid,
                "phone_number": e164,
                "friendly_name": e164,
                "capabilities": caps,
                "date_created": now,
                "date_updated": now,
                "api_version": API,
                "status": "in-use",
                "uri": self._uri(f"IncomingPhoneNumbers/{number_sid}"),
                "origin": "twilio",
                "beta": False,
                "address_requirements": "none",
            }
            self._configure(self.numbers[number_sid], form)
            return dict(self.numbers[number_sid])

    FIELDS = {
        "VoiceUrl": ("voice_url", None),
        "VoiceMethod": ("voice_method", "POST"),
        "StatusCallback": ("status_callback", None),
        "StatusCallbackMethod": ("status_callback_method", "POST"),
        "FriendlyName": ("friendly_name", None),
    }

    def _configure(self, number: dict[str, Any], form: dict[str, str]) -> None:
        for name, (key, default) in self.FIELDS.items():
            if name in form:
                number[key] = form[name]
            else:
                number.setdefault(key, default)

    def _number(self, method: str, number_sid: str, form: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            number = self.numbers.get(number_sid)
            if number is None:
                resource = self._uri(f"IncomingPhoneNumbers/{number_sid}")
                raise TwilioError(404, 20404, f"The requested resource {resource} was not found")
            if method == "DELETE":
                del self.numbers[number_sid]
                return 204, None
            if method == "POST":
                self._configure(number, form)
                number["date_updated"] = formatdate()
            return 200, dict(number)

    def owned(self, e164: str) -> dict[str, Any] | None:
        with self.lock:
            return next((n for n in self.numbers.values() if n["phone_number"] == e164), None)

    # -- calls --------------------------------------------------------------------------------
    def _place(self, form: dict[str, str], events: list[str]) -> dict[str, Any]:
        to, origin = form.get("To", ""), form.get("From", "")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", to) and not to.startswith("sip:"):
            raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {to}")
        owner = self.owned(origin)
        if owner is None:
            raise TwilioError(
                400,
                21210,
                f"The source phone number provided, {origin}, is not "
                "yet verified for your account.",
            )
        if not form.get("Url") and not form.get("Twiml"):
            raise TwilioError(400, 21205, "Url or Twiml is required.")
        call_sid = sid("CA")
        call = {
            "sid": call_sid,
            "account_sid": self.account.sid,
            "to": to,
            "from": origin,
            "to_formatted": to,
            "from_formatted": origin,
            "status": "queued",
            "direction": "outbound-api",
            "api_version": API,
            "answered_by": None,
            "date_created": formatdate(),
            "date_updated": formatdate(),
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "parent_call_sid": None,
            "phone_number_sid": owner["sid"],
            "uri": self._uri(f"Calls/{call_sid}"),
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "forwarded_from": None,
            "group_sid": None,
            "annotation": None,
            "subresource_uris": {},
        }
        with self.lock:
            self.calls[call_sid] = {
                "resource": call,
                "url": form.get("Url"),
                "twiml": form.get("Twiml"),
                "status_callback": form.get("StatusCallback"),
                "events": set(events) or {"completed"},
                "machine_detection": form.get("MachineDetection"),
                "timeout": form.get("Timeout"),
                "sequence": 0,
            }
        return dict(call)

    def _call(self, method: str, call_sid: str, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            state = self.calls.get(call_sid)
            if state is None:
                resource = self._uri(f"Calls/{call_sid}")
                raise TwilioError(404, 20404, f"The requested resource {resource} was not found")
            call = state["resource"]
            if method == "GET":
                return dict(call)
            if form.get("Status") in ("completed", "canceled"):
                if call["status"] not in ("completed", "busy", "no-answer", "failed", "canceled"):
                    call["status"] = "completed" if call["status"] == "in-progress" else "canceled"
                    state["hung_up"] = True
                return dict(call)
            if call["status"] != "in-progress":
                raise TwilioError(400, 21220, "Call is not in-progress. Cannot redirect.")
            if form.get("Twiml"):
                state["twiml"] = form["Twiml"]
                self._record_dial(call_sid, form["Twiml"])
            elif form.get("Url"):
                state["url"] = form["Url"]
            return dict(call)

    def _record_dial(self, call_sid: str, twiml: str) -> None:
        root = ET.fromstring(twiml)
        for dial in root.iter("Dial"):
            targets = [(child.tag.lower(), (child.text or "").strip()) for child in dial]
            if (dial.text or "").strip():
                targets.append(("number", (dial.text or "").strip()))
            for kind, target in targets:
                self.transfers.append(Transfer(call_sid, kind, target, twiml))

    # -- what Twilio sends back -----------------------------------------------------------------
    def _send(self, url: str, form: dict[str, str]) -> Delivered:
        headers = {
            "X-Twilio-Signature": signature(self.account.auth_token, url, form),
            "User-Agent": "TwilioProxy/1.1",
        }
        status, body = self.deliver(url, form, headers)
        done = Delivered(url, form, headers, status, body)
        with self.lock:
            self.delivered.append(done)
        return done

    def _params(self, call: dict[str, Any]) -> dict[str, str]:
        return {
            "AccountSid": call["account_sid"],
            "ApiVersion": API,
            "CallSid": call["sid"],
            "CallStatus": call["status"],
            "Called": call["to"],
            "Caller": call["from"],
            "Direction": call["direction"],
            "From": call["from"],
            "To": call["to"],
        }

    def _callback(self, call_sid: str, event: str, **extra: str) -> Delivered | None:
        state = self.calls[call_sid]
        if not state["status_callback"] or event not in state["events"] | {"completed"}:
            return None
        state["sequence"] += 1
        form = (
            self._params(state["resource"])
            | {
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(state["sequence"] - 1),
                "Timestamp": formatdate(),
            }
            | extra
        )
        return self._send(state["status_callback"], form)

    def ring(self, call_sid: str) -> list[Delivered]:
        """The call leaves the queue and rings: ``initiated`` then ``ringing`` callbacks."""
        call = self.calls[call_sid]["resource"]
        call["status"] = "initiated"
        first = self._callback(call_sid, "initiated")
        call["status"] = "ringing"
        return [d for d in (first, self._callback(call_sid, "ringing")) if d]

    def answer(
        self, call_sid: str, answered_by: str | None = None
    ) -> tuple[Delivered | None, list[Delivered]]:
        """The callee picks up: Twilio requests the call's ``Url`` for its TwiML (after the
        answering-machine detection when asked for), then sends the ``answered`` callback.
        Returns (the voice URL's answer, the callbacks)."""
        state = self.calls[call_sid]
        call = state["resource"]
        call["status"], call["start_time"] = "in-progress", formatdate()
        extra: dict[str, str] = {}
        if state["machine_detection"]:
            call["answered_by"] = answered_by or "human"
            extra["AnsweredBy"] = call["answered_by"]
        voice = None
        if state["url"]:
            voice = self._send(state["url"], self._params(call) | extra)
            if voice.status == 200:
                state["twiml"] = voice.body
        answered = self._callback(call_sid, "answered", **extra)
        return voice, [answered] if answered else []

    def finish(
        self, call_sid: str, status: str = "completed", duration: int = 7
    ) -> Delivered | None:
        """The call ends with ``status`` (completed, busy, no-answer, failed, canceled): the
        ``completed`` callback, carrying the final status and SIP response code."""
        state = self.calls[call_sid]
        call = state["resource"]
        answered = call["status"] == "in-progress" or state.get("hung_up")
        if call["status"] in ("in-progress", "ringing", "queued", "initiated"):
            call["status"] = status
        sip = {
            "completed": "200",
            "busy": "486",
            "no-answer": "487",
            "failed": "404",
            "canceled": "487",
        }[call["status"]]
        call["end_time"], call["duration"] = formatdate(), str(duration if answered else 0)
        extra = {"CallDuration": call["duration"], "SipResponseCode": sip}
        if call["answered_by"]:
            extra["AnsweredBy"] = call["answered_by"]
        return self._callback(call_sid, "completed", **extra)

    def incoming_call(self, to: str, caller: str = "+15550003333") -> Delivered:
        """Someone dials one of the account's numbers: Twilio requests its voice URL."""
        number = self.owned(to)
        if number is None or not number.get("voice_url"):
            raise AssertionError(f"{to} is not a number of this account with a voice URL")
        call_sid = sid("CA")
        call = {
            "sid": call_sid,
            "account_sid": self.account.sid,
            "to": to,
            "from": caller,
            "status": "ringing",
            "direction": "inbound",
            "answered_by": None,
        }
        with self.lock:
            self.calls[call_sid] = {
                "resource": call,
                "url": number["voice_url"],
                "twiml": None,
                "status_callback": number.get("status_callback"),
                "events": {"completed"},
                "machine_detection": None,
                "timeout": None,
                "sequence": 0,
            }
        voice = self._send(number["voice_url"], self._params(call))
        call["status"] = "in-progress"
        return voice
