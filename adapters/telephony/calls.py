"""Placing and transferring phone calls through a space's provider: what the outbound route,
the transfer route and the worker's ``transfer_call`` tool share (one path for each).

The numbers context knows the space's numbers and provider credentials, the providers registry
the adapters (``commands/telephony.py`` ports); the Calls application records what happened:
``call.provider_status_changed`` with the provider's call id once a call is placed,
``call.transfer_requested`` then ``call.transfer_completed`` with the outcome. Provider calls
are blocking SDK calls: they run in a worker thread.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from uuid import UUID

import anyio

from commands.agents import Actor
from commands.call_commands import CompleteTransfer, RecordProviderStatus, RequestTransfer, Result
from commands.idempotency import Key
from commands.telephony import (
    CallbackUrls,
    OutboundCall,
    PlacedCall,
    ProviderCredentials,
    ProviderError,
    TransferMode,
    VoiceProvider,
)

log = logging.getLogger(__name__)
# the channel a provider's calls take into the room
CHANNEL_OF = {"twilio": "twilio_media_streams", "voximplant": "voximplant", "sip": "sip"}


class NumbersPort(Protocol):
    """What calls need of the numbers context (``commands.numbers.NumbersApplication``)."""

    def get_number(self, actor: Actor, number_id: UUID) -> Any: ...

    def credentials(self, space_id: str, provider: str) -> ProviderCredentials | None: ...


class VoiceProvidersPort(Protocol):
    """``adapters.telephony.providers.TelephonyProviders``."""

    def voice_provider(self, name: str) -> VoiceProvider: ...


class NoProviderAccount(Exception):
    code = "provider_account_missing"


def credentials_for(numbers: NumbersPort, space_id: str, provider: str) -> ProviderCredentials:
    """The space's account at ``provider``. Our SIP endpoint needs none (trunks carry their own
    secrets), so ``sip`` gets an empty one; any other provider without an account is refused."""
    creds = numbers.credentials(space_id, provider)
    if creds is not None:
        return creds
    if provider == "sip":
        return ProviderCredentials(provider="sip", account_id="", secrets={})
    raise NoProviderAccount(
        f"Your space has no {provider} account: connect one with "
        f"PUT /api/telephony/accounts/{provider} first."
    )


def outbound_urls(public_api_url: str | None, provider: str, call_id: UUID) -> CallbackUrls:
    """Where the provider asks how to connect a placed call's media and reports its statuses.
    The call id rides in the query: the provider's webhook then knows which open call (and room)
    the answered leg belongs to, instead of routing it as a new inbound call."""
    base = (public_api_url or "http://127.0.0.1:8000").rstrip("/")
    if provider == "twilio":
        return CallbackUrls(
            voice_url=f"{base}/api/twilio/voice?call_id={call_id}",
            status_url=f"{base}/api/twilio/status?call_id={call_id}",
        )
    if provider == "voximplant":
        return CallbackUrls(
            voice_url=f"{base}/api/voximplant/route?call_id={call_id}",
            status_url=f"{base}/api/voximplant/status?call_id={call_id}",
        )
    return CallbackUrls(voice_url=f"{base}/api/sip/invite", status_url=f"{base}/api/sip/status")


async def place(
    calls: Any, providers: VoiceProvidersPort, who: Actor, provider: str,
    creds: ProviderCredentials, call: OutboundCall,
) -> PlacedCall:  # fmt: skip
    """Dial; record the provider's call id (status ``queued``). ``ProviderError`` propagates."""
    voice = providers.voice_provider(provider)
    placed: PlacedCall = await anyio.to_thread.run_sync(voice.place_call, creds, call)
    cmd = RecordProviderStatus(
        call_id=call.call_id, provider=provider, provider_call_id=placed.provider_call_id,
        status="queued",
    )  # fmt: skip
    await anyio.to_thread.run_sync(calls.record_provider_status, who, cmd)
    return placed


async def transfer(
    container: Any, who: Actor, call_id: UUID, target: str, mode: TransferMode,
    idempotency_key: Key = None,
) -> tuple[Result, str | None]:  # fmt: skip
    """Transfer a call's phone leg to ``target`` (E.164 or SIP URI): ``call.transfer_requested``,
    the provider's transfer, then ``call.transfer_completed`` — ``completed`` once the provider
    took the handover, ``failed`` (reason: the provider's error code) when it refused. Returns
    the last write and the provider's error code (None on success). A replayed key changes
    nothing and transfers nothing."""
    calls = container.calls
    call = await anyio.to_thread.run_sync(calls.find_call, who, call_id)
    if call.provider is None or call.provider_call_id is None:
        raise NoPhoneLeg(f"Call {call_id} has no phone leg a provider could transfer.")
    request = RequestTransfer(call_id=call_id, mode=mode, target=target)
    requested: Result = await anyio.to_thread.run_sync(
        calls.request_transfer, who, request, idempotency_key
    )
    if requested.replayed:
        return requested, None
    problem: str | None = None
    reason: str | None = None
    try:
        creds = credentials_for(container.numbers, who.space_id, call.provider)
        voice = container.telephony_providers.voice_provider(call.provider)
        await anyio.to_thread.run_sync(voice.transfer, creds, call.provider_call_id, target, mode)
    except NoProviderAccount:
        problem, reason = "provider_account_missing", "provider_account_missing"
    except ProviderError as exc:
        log.warning("transfer of call %s failed: %s %s", call_id, exc.code, exc.message)
        problem, reason = exc.code, f"{exc.code}: {exc.message}"[:256]
    outcome = "failed" if problem else "completed"
    done = CompleteTransfer(call_id=call_id, outcome=outcome, reason=reason)
    result: Result = await anyio.to_thread.run_sync(calls.complete_transfer, who, done)
    return result, problem


class NoPhoneLeg(Exception):
    code = "no_phone_leg"
