"""The telephony ports: what the numbers and calls contexts need from a phone provider.

A provider adapter (Twilio, VoxImplant, our SIP endpoint) implements ``NumberProvider`` when
numbers can be searched and bought through it, and ``VoiceProvider`` when it can place, transfer
and hang up calls. The adapters live in ``adapters/telephony``; the API and the commands see only
these protocols, so tests drive the real adapters against local servers that speak each
vendor's wire format.

Calls are synchronous (the vendors' SDKs are); callers on an event loop run them in a thread.
Every failure is a ``ProviderError`` whose ``code`` is stable and whose message says what the
provider answered, never a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol
from uuid import UUID

from pydantic import Field

from domain.text import Storable

ProviderName = Literal["twilio", "voximplant", "sip"]
Capability = Literal["voice", "sms", "mms", "fax"]
AnsweredBy = Literal["human", "machine", "fax", "unknown"]
ProviderCallStatus = Literal[
    "queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"
]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "busy", "no-answer", "failed", "canceled"}
)


class ProviderError(Exception):
    """The provider refused or failed. ``code``: ``provider_unreachable`` (network, timeout,
    5xx), ``provider_auth_failed`` (401/403), ``provider_rejected`` (4xx: the request is
    wrong for this provider, e.g. a number no longer available), ``provider_not_found`` or
    ``transfer_failed`` (a warm transfer's target did not answer: the caller stays)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ProviderCredentials:
    """A space's account at one provider. ``account_id`` is not secret (Twilio's account SID,
    VoxImplant's account id); ``secrets`` are (auth token, API key secret, private key) and
    must never be logged or returned."""

    provider: ProviderName
    account_id: str
    secrets: Mapping[str, str] = field(repr=False)


class NumberQuery(Storable):
    """Available numbers to search for."""

    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. `US`.")
    area_code: str | None = Field(None, pattern=r"^[0-9]{1,6}$")
    contains: str | None = Field(None, pattern=r"^[0-9*]{1,16}$")
    limit: int = Field(20, ge=1, le=100)


class AvailableNumber(Storable):
    e164: str = Field(max_length=16)
    country: str = Field(max_length=2)
    locality: str | None = Field(None, max_length=128)
    region: str | None = Field(None, max_length=128)
    capabilities: list[Capability] = Field(default_factory=list, max_length=4)


@dataclass(frozen=True)
class CallbackUrls:
    """Our webhooks a bought number (or a placed call) reports to."""

    voice_url: str
    status_url: str


@dataclass(frozen=True)
class BoughtNumber:
    e164: str
    provider_id: str  # Twilio's PN... sid, VoxImplant's phone_id
    capabilities: tuple[str, ...]


class NumberProvider(Protocol):
    name: ProviderName

    def search(self, creds: ProviderCredentials, query: NumberQuery) -> list[AvailableNumber]: ...

    def buy(self, creds: ProviderCredentials, e164: str, urls: CallbackUrls) -> BoughtNumber: ...

    def release(self, creds: ProviderCredentials, provider_id: str) -> None: ...


@dataclass(frozen=True)
class OutboundCall:
    """One call to place: ``call_id`` is ours (the Call already exists, its room is open)."""

    call_id: UUID
    from_e164: str
    to_e164: str
    urls: CallbackUrls  # voice_url answers with how to connect the media (TwiML, scenario...)
    machine_detection: bool = False
    timeout_seconds: int = 30
    # the bridge stream, for a provider that opens it itself when the callee answers (our SIP
    # service); the others ask our API for it then (``urls.voice_url``)
    stream_url: str | None = None
    stream_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PlacedCall:
    provider_call_id: str  # Twilio's CA... sid, VoxImplant's session id, our SIP Call-ID


TransferMode = Literal["cold", "warm"]


class VoiceProvider(Protocol):
    name: ProviderName

    def place_call(self, creds: ProviderCredentials, call: OutboundCall) -> PlacedCall: ...

    def transfer(
        self, creds: ProviderCredentials, provider_call_id: str, target: str, mode: TransferMode,
        *, outcome_url: str | None = None,
    ) -> None:  # fmt: skip
        """Hand the call to ``target``. ``outcome_url``: where a provider that can report how
        the dialed leg went (completed, busy, no-answer, failed) reports it; only given to the
        providers that do (``adapters.telephony.calls.REPORTS_TRANSFER_OUTCOME``)."""
        ...

    def hang_up(self, creds: ProviderCredentials, provider_call_id: str) -> None: ...
