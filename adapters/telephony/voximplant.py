"""VoxImplant through its official client (``voximplant-apiclient``): numbers (search, buy,
release) and calls (start our scenario for an outbound call; transfer and hang up a running
session).

**Credentials** (a space's ``ProviderCredentials`` for ``voximplant``): ``account_id`` is the
VoxImplant account id; ``secrets`` are the two secret fields of a service account's JSON key,
``key_id`` and ``private_key`` (PEM, RSA). The client signs each request with a short JWT
(RS256, ``kid`` = key id, ``iss`` = account id), exactly as it does from a ``credentials.json``;
the key never leaves the process and is never logged.

**Where our API comes in.** VoxImplant has no per-number webhooks: a number is bound to an
application's routing rule (``telephony.voximplant_application_name`` /
``voximplant_rule_name``), whose VoxEngine scenario (docs/telephony.md) asks our API
(``/api/voximplant/route``) which agent answers, and reports statuses
(``/api/voximplant/status``). The scenario authenticates with the account's **route token**
(``route_token``), derived from the credentials, so nothing else needs storing.

**A running session** is controlled through its media session access URL (StartScenarios answers
it; an inbound scenario reads it from ``AppEvents.Started``): that URL is VoxImplant's call id
here (``provider_call_id``). A POST to it raises ``AppEvents.HttpRequest`` in the scenario; our
commands (``transfer``, ``hangup``) carry the route token so that the URL alone commands nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from typing import Any, cast

import httpx
import phonenumbers
from voximplant.apiclient import VoximplantAPI, VoximplantException

from commands.telephony import (
    AvailableNumber,
    BoughtNumber,
    CallbackUrls,
    NumberQuery,
    OutboundCall,
    PlacedCall,
    ProviderCredentials,
    ProviderError,
    ProviderName,
    TransferMode,
)
from infra.settings import TelephonySettings

log = logging.getLogger(__name__)
SECRET_FIELDS = ("key_id", "private_key")
AUTH_FAILED = 100  # the Management API's "Authorization failed"
NOT_FOUND = re.compile(r"not found|does not exist|no such|unknown", re.IGNORECASE)
REGIONS_SEARCHED = 3  # without an area code, the first regions that have numbers
ROUTE_TOKEN_CONTEXT = b"voxagent/voximplant-route/v1"


def route_token(creds: ProviderCredentials) -> str:
    """The shared secret our scenario sends to ``/api/voximplant/route`` and ``/status`` (and
    puts in session commands): HMAC-SHA256 keyed by the account's private key (or legacy API
    key) over the account and key ids, base64url. It changes when the key is rotated; it
    reveals nothing of the key."""
    key_id = creds.secrets.get("key_id") or ""
    key = creds.secrets.get("private_key") or creds.secrets.get("api_key")
    if not creds.account_id or not key:
        raise ProviderError("provider_auth_failed", "The VoxImplant account has no key.")
    message = ROUTE_TOKEN_CONTEXT + f":{creds.account_id}:{key_id}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def tokens_match(given: str | None, creds: ProviderCredentials) -> bool:
    """Constant-time check of a presented route token."""
    if not given:
        return False
    try:
        expected = route_token(creds)
    except ProviderError:  # incomplete credentials: nothing matches
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _secrets(creds: ProviderCredentials) -> tuple[str, str]:
    key_id = creds.secrets.get("key_id")
    private_key = creds.secrets.get("private_key")
    if not creds.account_id or not key_id or not private_key:
        raise ProviderError(
            "provider_auth_failed",
            "VoxImplant credentials need the account id and a service account key's "
            "`key_id` and `private_key` (voximplant-apiclient signs with it; a legacy "
            "`api_key` alone cannot be used).",
        )
    return key_id, private_key


def digits(e164: str) -> str:
    """VoxImplant writes numbers without the plus."""
    return e164.lstrip("+")


class _Client(VoximplantAPI):  # type: ignore[misc]  # the SDK ships no type hints
    """The official client with the credentials in memory (its constructor only reads a
    ``credentials.json``) and our API URL and timeout (it builds ``https://<host>/platform_api``
    and waits forever). Methods, parameters, the JWT and the answer's handling are the SDK's."""

    def __init__(self, creds: ProviderCredentials, api_url: str, timeout: float) -> None:
        key_id, private_key = _secrets(creds)
        self.endpoint = api_url
        self.credentials_file_path = None
        self.account_id = creds.account_id
        self.credentials = {
            "account_id": creds.account_id, "key_id": key_id, "private_key": private_key,
        }  # fmt: skip
        self._url = api_url
        self._timeout = timeout

    def _perform_request(self, cmd: str, args: dict[str, Any]) -> Any:
        params = self._form_params(args)
        params["cmd"] = cmd
        try:
            header = self.build_auth_header()
        except Exception:  # noqa: BLE001 - a key PyJWT cannot sign with; never echo it
            raise ProviderError(
                "provider_auth_failed", "The VoxImplant private key is not a usable RSA key."
            ) from None
        try:
            result = httpx.post(
                self._url, data=params, headers={"Authorization": header},
                timeout=self._timeout, follow_redirects=False,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise ProviderError(
                "provider_unreachable", f"VoxImplant did not answer {cmd}: {type(exc).__name__}"
            ) from None
        content_type = result.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                return json.loads(result.text)
            except ValueError:
                pass
        self._http_error(result)


class VoximplantProvider:
    """``NumberProvider`` and ``VoiceProvider`` for VoxImplant (synchronous: run in a thread)."""

    name: ProviderName = "voximplant"

    def __init__(self, settings: TelephonySettings) -> None:
        self.settings = settings

    def _client(self, creds: ProviderCredentials) -> _Client:
        return _Client(
            creds, self.settings.voximplant_api_url, self.settings.voximplant_timeout_seconds
        )

    def _call(self, creds: ProviderCredentials, method: str, **params: Any) -> dict[str, Any]:
        """One Management API method through the SDK, its failures as ``ProviderError``."""
        try:
            return cast(dict[str, Any], getattr(self._client(creds), method)(**params))
        except ProviderError:
            raise
        except VoximplantException as exc:
            raise _error(method, exc) from None

    # -- NumberProvider -------------------------------------------------------------------
    def search(self, creds: ProviderCredentials, query: NumberQuery) -> list[AvailableNumber]:
        category = self.settings.voximplant_phone_category
        regions = self._call(
            creds, "get_phone_number_regions", country_code=query.country,
            phone_category_name=category, phone_region_code=query.area_code,
        ).get("result") or []  # fmt: skip
        wanted = _pattern(query.contains)
        found: list[AvailableNumber] = []
        searched = [r for r in regions if r.get("phone_count", 1)][:REGIONS_SEARCHED]
        for region in searched:
            # VoxImplant's mask is looser (its `*` is any run of digits); filtered below
            mask = f"*{query.contains}*" if query.contains else None
            numbers = self._call(
                creds, "get_new_phone_numbers", country_code=query.country,
                phone_category_name=category, phone_region_id=region["phone_region_id"],
                count=query.limit, phone_number_mask=mask,
            ).get("result") or []  # fmt: skip
            for item in numbers:
                number = "+" + digits(str(item.get("phone_number", "")))
                if wanted is not None and not wanted.search(number[1:]):
                    continue
                found.append(AvailableNumber(
                    e164=number, country=str(item.get("phone_country_code") or query.country),
                    region=item.get("phone_region_name") or region.get("phone_region_name"),
                    capabilities=["voice"],
                ))  # fmt: skip
                if len(found) >= query.limit:
                    return found
        return found

    def buy(self, creds: ProviderCredentials, e164: str, urls: CallbackUrls) -> BoughtNumber:
        """Attach the number to the account and bind it to our rule, whose scenario routes its
        calls (``urls`` are not used: VoxImplant has no per-number webhooks). A number that
        cannot be bound is deactivated again, so nothing is left half-bought."""
        try:
            country = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
        except phonenumbers.NumberParseException:
            raise ProviderError("provider_rejected", f"{e164!r} is not an E.164 number.") from None
        attached = self._call(
            creds, "attach_phone_number", phone_number=digits(e164), country_code=country,
            phone_category_name=self.settings.voximplant_phone_category,
        )  # fmt: skip
        rows = attached.get("phone_numbers") or []
        mine = [r for r in rows if digits(str(r.get("phone_number"))) == digits(e164)]
        phone_id = str(mine[0]["phone_id"]) if mine else None
        if phone_id is None:
            raise ProviderError(
                "provider_rejected", f"VoxImplant attached no number {e164} (it answered "
                f"{len(rows)} other numbers)."
            )  # fmt: skip
        try:
            self._call(
                creds, "bind_phone_number_to_application", phone_id=phone_id,
                application_name=self.settings.voximplant_application_name,
                rule_name=self.settings.voximplant_rule_name, bind=True,
            )  # fmt: skip
        except ProviderError:
            self._undo_attach(creds, phone_id)
            raise
        return BoughtNumber(e164=e164, provider_id=phone_id, capabilities=("voice",))

    def _undo_attach(self, creds: ProviderCredentials, phone_id: str) -> None:
        try:
            self.release(creds, phone_id)
        except ProviderError as exc:
            log.error(
                "VoxImplant number %s was attached but could not be bound nor deactivated "
                "(%s): deactivate it in the control panel", phone_id, exc.code,
            )  # fmt: skip

    def release(self, creds: ProviderCredentials, provider_id: str) -> None:
        self._call(creds, "deactivate_phone_number", phone_id=provider_id)

    # -- VoiceProvider --------------------------------------------------------------------
    def place_call(self, creds: ProviderCredentials, call: OutboundCall) -> PlacedCall:
        """Start our rule's scenario with the call in ``script_custom_data``; it dials ``to``
        from ``from`` and, once answered, asks ``/api/voximplant/route`` for the call's stream
        (minted then, so a long ring never outlives its token). ``call.urls`` are not sent:
        the scenario knows our API (its ``API`` constant) and reports to its two routes."""
        data = {
            "call_id": str(call.call_id), "from": call.from_e164, "to": call.to_e164,
            "machine_detection": call.machine_detection, "timeout": call.timeout_seconds,
        }  # fmt: skip
        started = self._call(
            creds, "start_scenarios", application_name=self.settings.voximplant_application_name,
            rule_name=self.settings.voximplant_rule_name,
            script_custom_data=json.dumps(data, separators=(",", ":")),
        )  # fmt: skip
        url = started.get("media_session_access_secure_url") or started.get(
            "media_session_access_url"
        )
        if not url:
            raise ProviderError(
                "provider_rejected", "VoxImplant started no session (no media session URL)."
            )
        return PlacedCall(provider_call_id=str(url))

    def transfer(
        self, creds: ProviderCredentials, provider_call_id: str, target: str, mode: TransferMode,
        *, outcome_url: str | None = None,
    ) -> None:  # fmt: skip
        """Our scenario dials ``target`` (E.164 or ``sip:`` URI); cold: joins the caller to it
        and drops the agent; warm: the agent talks to the target first, and the caller is
        joined when the agent's stream ends."""
        self._command(creds, provider_call_id, {"command": "transfer", "target": target,
                                                "mode": mode})  # fmt: skip

    def hang_up(self, creds: ProviderCredentials, provider_call_id: str) -> None:
        self._command(creds, provider_call_id, {"command": "hangup"})

    def _command(
        self, creds: ProviderCredentials, session_url: str, command: dict[str, str]
    ) -> None:
        if not re.fullmatch(r"https?://[^\s]+", session_url):
            raise ProviderError(
                "provider_rejected", "A VoxImplant call id is its media session access URL."
            )
        body = {**command, "token": route_token(creds)}
        try:
            answer = httpx.post(
                session_url, json=body, timeout=self.settings.voximplant_timeout_seconds,
                follow_redirects=False,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            # a session that has ended no longer listens on its URL
            raise ProviderError(
                "provider_not_found",
                f"The VoxImplant session did not take {command['command']!r} "
                f"({type(exc).__name__}); the call has probably ended.",
            ) from None
        if answer.status_code in (401, 403):
            raise ProviderError(
                "provider_auth_failed", "The scenario refused the command: its route token "
                "is not this account's.", answer.status_code,
            )  # fmt: skip
        if answer.status_code == 404:
            raise ProviderError("provider_not_found", "The VoxImplant session has ended.", 404)
        if answer.status_code >= 400:
            code = "provider_unreachable" if answer.status_code >= 500 else "provider_rejected"
            text = f"The VoxImplant session answered HTTP {answer.status_code}: {answer.text[:200]}"
            raise ProviderError(code, text, answer.status_code)


def _pattern(contains: str | None) -> re.Pattern[str] | None:
    """Twilio-style ``contains`` (``*`` is any one digit) as a regular expression."""
    if not contains:
        return None
    return re.compile("".join("[0-9]" if c == "*" else re.escape(c) for c in contains))


def _error(method: str, exc: VoximplantException) -> ProviderError:
    """The SDK raises one exception for API errors (``code`` VoxImplant's) and HTTP failures
    (``code`` the HTTP status)."""
    code = exc.code if isinstance(exc.code, int) else -1
    text = f"VoxImplant refused {method}: {exc.message} (code {code})"
    if code == AUTH_FAILED or code in (401, 403):
        return ProviderError("provider_auth_failed", text, 401 if code == AUTH_FAILED else code)
    if code == 429 or code >= 500:
        return ProviderError("provider_unreachable", text, code)
    if NOT_FOUND.search(str(exc.message)):
        return ProviderError("provider_not_found", text)
    return ProviderError("provider_rejected", text, code if 400 <= code < 500 else None)
