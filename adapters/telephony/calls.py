"""Placing and transferring phone calls through a space's provider: what the outbound route,
the transfer route and the worker's ``transfer_call`` tool share (one path for each).

The numbers context knows the space's numbers and provider credentials, the providers registry
the adapters (``commands/telephony.py`` ports); the Calls application records what happened:
``call.provider_status_changed`` with the provider's call id once a call is placed,
``call.transfer_requested`` then ``call.transfer_completed`` with the outcome. Provider calls
are blocking SDK calls: they run in a worker thread.

A transfer's outcome: a provider that reports how the dialed leg went (Twilio: the ``<Dial>``'s
``action`` callback, ``/api/twilio/transfer``; our SIP service: the REFER's NOTIFY,
``/api/sip/transfer``) completes the transfer when it reports; with
any other, the transfer is ``completed`` once the provider took the handover. A refused
handover is ``failed`` at once, whatever the provider.
"""

from __future__ import annotations

import logging
from uuid import UUID

import anyio

from adapters.services import Services
from commands.agents import Actor
from commands.call_commands import CompleteTransfer, RecordProviderStatus, RequestTransfer, Result
from commands.idempotency import Key
from commands.numbers import NumbersApplication
from commands.telephony import (
    CallbackUrls,
    OutboundCall,
    PlacedCall,
    ProviderCredentials,
    ProviderError,
    TransferMode,
)

log = logging.getLogger(__name__)
# the channel a provider's calls take into the room
CHANNEL_OF = {"twilio": "twilio_media_streams", "voximplant": "voximplant", "sip": "sip"}
# the channels of calls with a phone leg (a web call has none: nothing to transfer)
PHONE_CHANNELS = frozenset({"twilio_sip", "twilio_media_streams", "voximplant", "sip"})
# providers that report a transfer's outcome to ``transfer_outcome_url``
REPORTS_TRANSFER_OUTCOME = frozenset({"twilio", "sip"})
# providers given the call's bridge stream when they dial (``OutboundCall.stream_url``): our SIP
# service opens it itself on answer, the others ask our API for it then
STREAM_AT_DIAL = frozenset({"sip"})
# providers that know a running call by our call id (sipd's control API), not by theirs
KNOWN_BY_OUR_CALL_ID = frozenset({"sip"})
# channels whose provider, for a warm transfer, connects the agent to the target first (the
# caller on hold) and joins the caller only once the agent's stream ends: the agent briefs the
# human itself after the transfer is taken (sipd's consult leg; our VoxImplant scenario)
CONSULTING_CHANNELS = frozenset({"sip", "voximplant"})
LOCAL_API = "http://127.0.0.1:8000"


class NoProviderAccount(Exception):
    code = "provider_account_missing"


class NoPhoneLeg(Exception):
    """The call is not a phone call (a web call): nothing to transfer."""

    code = "not_a_phone_call"


def credentials_for(
    numbers: NumbersApplication, space_id: str, provider: str
) -> ProviderCredentials:
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


def _base(public_api_url: str | None) -> str:
    return (public_api_url or LOCAL_API).rstrip("/")


def outbound_urls(public_api_url: str | None, provider: str, call_id: UUID) -> CallbackUrls:
    """Where the provider asks how to connect a placed call's media and reports its statuses.
    The call id rides in the query: the provider's webhook then knows which open call (and room)
    the answered leg belongs to, instead of routing it as a new inbound call."""
    base = _base(public_api_url)
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


def call_handle(provider: str, call_id: UUID, provider_call_id: str) -> str:
    """The id ``provider``'s control API knows a running call by: its own call id, or ours
    for ``sipd`` (whose ``provider_call_id`` is the SIP Call-ID, kept for the record)."""
    return str(call_id) if provider in KNOWN_BY_OUR_CALL_ID else provider_call_id


def transfer_outcome_url(public_api_url: str | None, provider: str, call_id: UUID) -> str | None:
    """Where ``provider`` reports how a transfer of ``call_id`` went; None when it cannot."""
    if provider not in REPORTS_TRANSFER_OUTCOME:
        return None
    return f"{_base(public_api_url)}/api/{provider}/transfer?call_id={call_id}"


async def place(
    container: Services, who: Actor, provider: str, creds: ProviderCredentials,
    call: OutboundCall,
) -> PlacedCall:  # fmt: skip
    """Dial; record the provider's call id (status ``queued``). ``ProviderError`` propagates."""
    voice = container.telephony_providers.voice_provider(provider)
    placed: PlacedCall = await anyio.to_thread.run_sync(voice.place_call, creds, call)
    cmd = RecordProviderStatus(
        call_id=call.call_id, provider=provider, provider_call_id=placed.provider_call_id,
        status="queued",
    )  # fmt: skip
    await anyio.to_thread.run_sync(container.calls.record_provider_status, who, cmd)
    return placed


async def transfer(
    container: Services, who: Actor, call_id: UUID, target: str, mode: TransferMode,
    idempotency_key: Key = None,
) -> tuple[Result, str | None]:  # fmt: skip
    """Transfer a call's phone leg to ``target`` (E.164 or SIP URI): ``call.transfer_requested``,
    the provider's transfer, then ``call.transfer_completed``: at once when the provider refused
    (``failed``, reason: its error code) or cannot report the dialed leg (``completed``: it
    took the handover); later, from the provider's report, when it can (see the module's
    docstring). Returns the last write and the provider's error code (None on success).
    ``NoPhoneLeg`` for a web call; a replayed key changes nothing and transfers nothing."""
    calls = container.calls
    call = await anyio.to_thread.run_sync(calls.find_call, who, call_id)
    if call.channel not in PHONE_CHANNELS:
        raise NoPhoneLeg(f"Call {call_id} is a {call.channel} call: only a phone call can be "
                         "transferred.")  # fmt: skip
    if call.provider is None or call.provider_call_id is None:
        raise NoPhoneLeg(f"Call {call_id} has no phone leg a provider reported: there is "
                         "nothing to transfer.")  # fmt: skip
    request = RequestTransfer(call_id=call_id, mode=mode, target=target)
    requested: Result = await anyio.to_thread.run_sync(
        calls.request_transfer, who, request, idempotency_key
    )
    if requested.replayed:
        return requested, None
    provider = call.provider
    provider_call_id = call_handle(provider, call_id, call.provider_call_id)
    report_to = transfer_outcome_url(container.settings.telephony.public_api_url, provider, call_id)
    problem: str | None = None
    reason: str | None = None
    try:
        creds = credentials_for(container.numbers, who.space_id, provider)
        voice = container.telephony_providers.voice_provider(provider)
        if report_to is None:
            await anyio.to_thread.run_sync(voice.transfer, creds, provider_call_id, target, mode)
        else:

            def hand_over() -> None:
                voice.transfer(creds, provider_call_id, target, mode, outcome_url=report_to)

            await anyio.to_thread.run_sync(hand_over)
    except NoProviderAccount:
        problem, reason = "provider_account_missing", "provider_account_missing"
    except ProviderError as exc:
        log.warning("transfer of call %s failed: %s %s", call_id, exc.code, exc.message)
        problem, reason = exc.code, f"{exc.code}: {exc.message}"[:256]
    if problem is None and report_to is not None:
        return requested, None  # the provider reports the outcome (its dialed leg's fate)
    outcome = "failed" if problem else "completed"
    done = CompleteTransfer(call_id=call_id, outcome=outcome, reason=reason)
    result: Result = await anyio.to_thread.run_sync(calls.complete_transfer, who, done)
    return result, problem
