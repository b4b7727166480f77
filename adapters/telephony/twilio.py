"""Twilio as a number and voice provider, through the official ``twilio`` SDK.

Numbers: ``AvailablePhoneNumbers/{Country}/Local`` to search, ``IncomingPhoneNumbers`` to buy
(its voice URL and status callback set to our webhooks, both POST) and release. Calls: ``Calls``
create with ``Url`` = our voice webhook (Twilio asks it for TwiML once the callee answers; it
connects the Media Stream) and ``StatusCallback`` = our status webhook for every progress event,
both carrying our ``call_id`` (our call's id, never the agent: Twilio signs the whole URL);
transfer by replacing the call's TwiML with ``<Dial>``; hang up with ``Status=completed``.

A transfer at Twilio is always a redirect of the caller (cold): a Media Stream cannot hold the
caller while the agent briefs a human, so a warm transfer's briefing is the agent's business
before it asks for the transfer, and at the provider both modes are the same ``<Dial>``.

``telephony.twilio_api_base_url`` replaces the SDK's ``https://api.twilio.com`` (a
Twilio-compatible API, or the local server the tests run): the SDK code is the real one either
way. Every request has a timeout (``telephony.twilio_timeout_seconds``) and no retry: creating
a call or buying a number twice is worse than failing once.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from adapters.telephony import twiml
from commands.telephony import (
    AvailableNumber,
    BoughtNumber,
    CallbackUrls,
    Capability,
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
TWILIO_API = "https://api.twilio.com"
CAPABILITIES: tuple[Capability, ...] = ("voice", "sms", "mms", "fax")
PROGRESS_EVENTS = ["initiated", "ringing", "answered", "completed"]
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
NUMBER_SID = re.compile(r"^PN[0-9a-fA-F]{32}$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SIP_URI = re.compile(r"^sips?:[^\s<>&\"']{1,250}$")
# the names a space's Twilio secrets may carry (ProviderCredentials.secrets)
AUTH_TOKEN = "auth_token"  # noqa: S105 - the name of a secret, not one
API_KEY_SID, API_KEY_SECRET = "api_key_sid", "api_key_secret"


class BaseUrlHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, sending what it addresses to ``https://api.twilio.com`` to
    ``base_url`` instead (pagination URLs included: they go through here too)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout, logger=log)
        self.base_url = base_url.rstrip("/")

    def request(  # type: ignore[override]  # the SDK's signature, keyword for keyword
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        auth: Any = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self.base_url != TWILIO_API and (url == TWILIO_API or url.startswith(TWILIO_API + "/")):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )

    def log_request(self, kwargs: dict[str, Any]) -> None:
        """The SDK logs headers at DEBUG, the Basic credentials among them: we log less."""
        log.debug("Twilio %s %s", kwargs.get("method"), kwargs.get("url"))

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("Twilio answered %s", status_code)


def with_call_id(url: str, call_id: str) -> str:
    """``url`` with our call's id in its query (Twilio signs the URL, query included)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "call_id"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("call_id", call_id)])))


def capabilities_of(raw: Any) -> list[Capability]:
    """Twilio's capability map (``voice``, ``SMS``/``sms``, ``MMS``, ``fax``) as our list."""
    if not isinstance(raw, dict):
        return []
    found = {str(name).lower() for name, on in raw.items() if on is True}
    return [c for c in CAPABILITIES if c in found]


def refused(status: int, code: Any, message: str, doing: str) -> ProviderError:
    """What an HTTP error from Twilio means for us: 401/403 the credentials, 404 the
    resource, 429/5xx Twilio itself, any other 4xx the request."""
    said = f"Twilio refused to {doing} ({status}, code {code}): {message}"
    if status in (401, 403):
        return ProviderError(
            "provider_auth_failed",
            f"Twilio refused the account's credentials "
            f"while trying to {doing} ({status}, code {code}).",
            status,
        )
    if status == 404:
        return ProviderError("provider_not_found", said, status)
    if status == 429 or status >= 500:
        return ProviderError("provider_unreachable", said, status)
    return ProviderError("provider_rejected", said, status)


def provider_error(exc: Exception, doing: str) -> ProviderError:
    """A ``ProviderError`` saying what Twilio answered (never a credential: the SDK's message
    and Twilio's error code only)."""
    if isinstance(exc, TwilioRestException):
        return refused(int(exc.status), exc.code, exc.msg, doing)
    page = exc.args[1] if isinstance(exc, TwilioException) and len(exc.args) > 1 else None
    if isinstance(page, Response):  # a list's page: the SDK raises the bare answer
        try:
            body = json.loads(page.text)
            code, message = body.get("code"), str(body.get("message", ""))
        except (ValueError, AttributeError):
            code, message = None, ""
        return refused(page.status_code, code, f"{exc.args[0]}: {message}", doing)
    if isinstance(exc, requests.Timeout):
        return ProviderError("provider_unreachable", f"Twilio did not answer in time to {doing}.")
    if isinstance(exc, requests.RequestException):
        return ProviderError(
            "provider_unreachable",
            f"Twilio could not be reached to {doing} ({type(exc).__name__}).",
        )
    return ProviderError(
        "provider_unreachable",
        f"Twilio's answer could not be read while trying to {doing} ({type(exc).__name__}).",
    )


class TwilioProvider:
    """``NumberProvider`` and ``VoiceProvider`` for Twilio. Thread-safe: one instance serves
    every space (each request names its space's credentials)."""

    name: ProviderName = "twilio"

    def __init__(self, settings: TelephonySettings) -> None:
        self._http = BaseUrlHttpClient(
            settings.twilio_api_base_url, settings.twilio_timeout_seconds
        )

    def _client(self, creds: ProviderCredentials) -> Client:
        account = creds.account_id
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", account):
            raise ProviderError(
                "provider_auth_failed", "The Twilio account SID must be Twilio's AC... identifier."
            )
        secrets = creds.secrets
        if secrets.get(API_KEY_SID) and secrets.get(API_KEY_SECRET):
            return Client(
                secrets[API_KEY_SID], secrets[API_KEY_SECRET], account, http_client=self._http
            )
        if secrets.get(AUTH_TOKEN):
            return Client(account, secrets[AUTH_TOKEN], http_client=self._http)
        raise ProviderError(
            "provider_auth_failed",
            "The space's Twilio account has neither an auth token nor an API key and secret.",
        )

    def _run(self, doing: str, creds: ProviderCredentials, work: Any) -> Any:
        try:
            return work(self._client(creds))
        except ProviderError:
            raise
        except (TwilioException, requests.RequestException, ValueError) as exc:
            error = provider_error(exc, doing)
            log.warning("Twilio account %s: %s", creds.account_id, error.message)
            raise error from None

    # -- NumberProvider -------------------------------------------------------------------------
    def search(self, creds: ProviderCredentials, query: NumberQuery) -> list[AvailableNumber]:
        def work(client: Client) -> list[AvailableNumber]:
            found = client.available_phone_numbers(query.country).local.list(
                area_code=int(query.area_code) if query.area_code else None,
                contains=query.contains,
                limit=query.limit,
                page_size=query.limit,
            )
            return [
                AvailableNumber(
                    e164=n.phone_number,
                    country=n.iso_country or query.country,
                    locality=n.locality or None,
                    region=n.region or None,
                    capabilities=capabilities_of(n.capabilities),
                )
                for n in found[: query.limit]
            ]

        return list(self._run("search numbers", creds, work))

    def buy(self, creds: ProviderCredentials, e164: str, urls: CallbackUrls) -> BoughtNumber:
        def work(client: Client) -> BoughtNumber:
            number = client.incoming_phone_numbers.create(
                phone_number=e164,
                voice_url=urls.voice_url,
                voice_method="POST",
                status_callback=urls.status_url,
                status_callback_method="POST",
            )
            return BoughtNumber(
                e164=number.phone_number,
                provider_id=number.sid,
                capabilities=tuple(capabilities_of(number.capabilities)),
            )

        bought: BoughtNumber = self._run(f"buy {e164}", creds, work)
        log.info(
            "Twilio account %s bought %s (%s)", creds.account_id, bought.e164, bought.provider_id
        )
        return bought

    def release(self, creds: ProviderCredentials, provider_id: str) -> None:
        if not NUMBER_SID.fullmatch(provider_id):
            raise ProviderError("provider_not_found", f"{provider_id!r} is no Twilio number SID.")
        self._run(
            f"release {provider_id}",
            creds,
            lambda client: client.incoming_phone_numbers(provider_id).delete(),
        )
        log.info("Twilio account %s released %s", creds.account_id, provider_id)

    # -- VoiceProvider ------------------------------------------------------------------------
    def place_call(self, creds: ProviderCredentials, call: OutboundCall) -> PlacedCall:
        call_id = str(call.call_id)

        def work(client: Client) -> PlacedCall:
            placed = client.calls.create(
                to=call.to_e164,
                from_=call.from_e164,
                url=with_call_id(call.urls.voice_url, call_id),
                method="POST",
                status_callback=with_call_id(call.urls.status_url, call_id),
                status_callback_method="POST",
                status_callback_event=PROGRESS_EVENTS,
                machine_detection="DetectMessageEnd" if call.machine_detection else None,
                timeout=call.timeout_seconds,
            )
            return PlacedCall(provider_call_id=placed.sid)

        placed: PlacedCall = self._run(f"call {call.to_e164}", creds, work)
        log.info(
            "Twilio account %s placed call %s as %s",
            creds.account_id,
            call_id,
            placed.provider_call_id,
        )
        return placed

    def transfer(
        self, creds: ProviderCredentials, provider_call_id: str, target: str, mode: TransferMode
    ) -> None:
        """Redirect the caller to ``target`` (an E.164 number or a SIP URI) with ``<Dial>``;
        the Media Stream, and with it the agent, leaves the call. ``mode`` makes no difference
        here (see the module's docstring)."""
        self._call_sid(provider_call_id)
        if E164.fullmatch(target):
            dial = twiml.dial_number(target)
        elif SIP_URI.fullmatch(target):
            dial = twiml.dial_sip(target)
        else:
            raise ProviderError(
                "provider_rejected",
                "A transfer target must be an E.164 number "
                "(+15551234567) or a SIP URI (sip:desk@pbx.example.com).",
            )
        self._run(
            f"transfer {provider_call_id}",
            creds,
            lambda client: client.calls(provider_call_id).update(twiml=dial),
        )
        log.info(
            "Twilio call %s transferred (%s) to %s",
            provider_call_id,
            mode,
            "a SIP URI" if target.startswith("sip") else "a number",
        )

    def hang_up(self, creds: ProviderCredentials, provider_call_id: str) -> None:
        self._call_sid(provider_call_id)
        self._run(
            f"hang up {provider_call_id}",
            creds,
            lambda client: client.calls(provider_call_id).update(status="completed"),
        )

    @staticmethod
    def _call_sid(provider_call_id: str) -> None:
        if not CALL_SID.fullmatch(provider_call_id):
            raise ProviderError(
                "provider_not_found", f"{provider_call_id!r} is no Twilio call SID."
            )
