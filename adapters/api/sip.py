"""``/api/sip``: what our SIP service (``sipd``) asks the API. ``sipd`` holds no business state:
which agent answers, whether a trunk may call in, digest checks, all are decided here.

Every request carries ``Authorization: Bearer <telephony.sip_secret>`` (compared in constant
time; 401 ``invalid_sip_secret``): ``sipd`` is trusted infrastructure, so its reports name a
call by its id alone.

- ``POST /invite``: an INVITE to one of our ``sip`` numbers (the Request-URI's user part, with
  or without ``+``). Its trunk must let it in (``adapters.telephony.sip_auth``: source address,
  digest); then the number's agent gets the call, opened exactly as every phone call is
  (channel ``sip``), and the answer is ``connect`` with the bridge's ``/streams/sip`` URL and
  the call's stream token. A retried INVITE (same Call-ID, same number) is the same call.
  Otherwise ``challenge`` (a digest nonce) or ``refuse`` with a SIP status and a stable
  reason, decided in one place (``_refuse``) and logged.
- ``POST /status``: ``sipd``'s statuses of a call's SIP leg, produced as ``call.provider_status``
  signals (like ``/api/voximplant/status``).
- ``POST /transfer``: how a REFER went; it completes the call's transfer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.call_rooms import open_call
from adapters.api.common import container_of
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.provider_signals import produce_signal
from adapters.api.telephony import stream_parameters
from adapters.livekit.rooms import CallRoom
from adapters.services import Services
from adapters.telephony import sip_auth, twiml
from adapters.telephony.refusals import record_refusal
from commands.agents import Actor, AgentNotFound
from commands.call_commands import CompleteTransfer, InitiateCall
from commands.numbers import NumberRoute
from commands.signals import SignalRejected, iso_ms, validate_signal
from commands.telephony import ProviderCallStatus
from domain.calls import Call
from domain.errors import AgentArchived, DomainError, ProviderUnavailable
from domain.phone_numbers import normalise_e164
from domain.text import text_problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/sip", tags=["sip"])
SUBJECT = "system:sip"
CHANNEL = "sip"
CODECS = ("PCMU", "PCMA")  # what the bridge speaks (G.711, 8 kHz)
# each refusal: the SIP status sipd answers with
REFUSALS = {
    "unknown_number": 404,
    "number_unassigned": 480,
    "agent_unavailable": 480,
    "trunk_unauthenticated": 403,
    "address_not_allowed": 403,
    "digest_invalid": 403,
    "codec_unsupported": 488,
    "call_ended": 480,
    "livekit_unavailable": 503,
}
# how each refusal is recorded (``domain.refused_calls``); the rest are ours, not the number's
RECORDED_AS = {
    "unknown_number": "unknown_number", "number_unassigned": "number_unassigned",
    "agent_unavailable": "agent_unavailable", "trunk_unauthenticated": "trunk_unauthenticated",
    "address_not_allowed": "trunk_unauthenticated", "digest_invalid": "trunk_unauthenticated",
    "codec_unsupported": "codec_unsupported",
}  # fmt: skip
REFUSED: Counter[str] = Counter()  # refusals by reason, since the process started


class InviteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # sipd may say more than this version reads

    sip_call_id: str = Field(min_length=1, max_length=256, description="The Call-ID header.")
    to_user: str = Field(max_length=128, description="User part of the Request-URI (else To).")
    from_user: str | None = Field(None, max_length=256, description="User part of From.")
    from_display: str | None = Field(None, max_length=256)
    source_ip: str = Field(min_length=1, max_length=64)
    source_port: int | None = Field(None, ge=0, le=65535)
    transport: Literal["udp", "tcp"] = "udp"
    authorization: str | None = Field(None, max_length=4096, description="The header's value.")
    method: str = Field("INVITE", max_length=16)
    uri: str | None = Field(None, max_length=1024, description="The Request-URI.")
    codecs: list[str] = Field(default_factory=lambda: list(CODECS), max_length=32)


class InviteAnswer(BaseModel):
    action: Literal["connect", "challenge", "refuse"]
    call_id: UUID | None = None
    stream_url: str | None = Field(None, description="The bridge's WebSocket for SIP media.")
    token: str | None = Field(None, description="The stream token the `start` message carries.")
    codec: Literal["PCMU", "PCMA"] | None = None
    realm: str | None = None
    nonce: str | None = None
    status: int | None = Field(None, description="Refused: the SIP final response's status.")
    reason: str | None = Field(
        None, description="Refused: `unknown_number`, `number_unassigned`, `agent_unavailable`, "
        "`trunk_unauthenticated`, `address_not_allowed`, `digest_invalid`, `codec_unsupported`, "
        "`call_ended`, `livekit_unavailable`.",
    )  # fmt: skip


class StatusReport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: UUID
    sip_call_id: str = Field(min_length=1, max_length=128)
    status: ProviderCallStatus
    sip_code: int | None = Field(None, ge=100, le=699)
    reason: str | None = Field(None, max_length=256)


class TransferReport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    call_id: UUID
    outcome: Literal["completed", "failed"]
    sip_code: int | None = Field(None, ge=100, le=699)
    reason: str | None = Field(None, max_length=256)


class Received(BaseModel):
    received: bool
    signal_id: str | None = None
    changed: bool | None = None


def verify_secret(request: Request, authorization: str | None = Header(None)) -> None:
    """401 ``invalid_sip_secret`` unless the request carries ``sipd``'s shared secret."""
    expected = container_of(request).settings.telephony.sip_secret.get_secret_value()
    given = ""
    if authorization and authorization[:7].lower() == "bearer ":
        given = authorization[7:].strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "invalid_sip_secret",
                       "Authorization is not `Bearer <telephony.sip_secret>`.")  # fmt: skip


SECRET = [Depends(verify_secret)]


async def _refuse(container: Services, reason: str, body: InviteRequest, why: str,
                  route: NumberRoute | None = None) -> InviteAnswer:  # fmt: skip
    """The one place an INVITE is refused: its SIP status, the log line, and the record of
    refused calls (``number.call_refused`` in the number's space when we know the number;
    a failed trunk check is recorded as ``trunk_unauthenticated``)."""
    REFUSED[reason] += 1
    log.warning(
        "SIP call refused (%s): Call-ID %s to %r from %s (%s): %s", reason, body.sip_call_id,
        body.to_user, body.source_ip, route.space_id if route else "no space", why,
    )  # fmt: skip
    recorded = RECORDED_AS.get(reason)
    if recorded is not None:
        await record_refusal(
            container, provider=CHANNEL, e164=_e164(body.to_user), caller=_caller(body.from_user),
            reason=recorded, provider_call_id=body.sip_call_id[:128],
        )  # fmt: skip
    return InviteAnswer(action="refuse", status=REFUSALS[reason], reason=reason)


def _e164(raw: str) -> str | None:
    raw = raw.strip()
    try:
        return normalise_e164("+" + raw if raw.isdigit() else raw)
    except DomainError:
        return None


def _codec(offered: list[str]) -> str | None:
    """The first codec of the offer the bridge speaks."""
    for name in offered:
        if name.upper() in CODECS:
            return name.upper()
    return None


def _trunk(container: Services, route: NumberRoute) -> sip_auth.InboundTrunk | None:
    """The number's trunk as the inbound checks need it; None when it has none, or another
    space's (never: a number's trunk is its space's; checked all the same)."""
    if route.trunk_id is None:
        return None
    numbers = container.numbers
    trunk = numbers.trunk_of(route.trunk_id)
    secrets = numbers.trunk_secret(route.trunk_id)
    if trunk is None or secrets is None or trunk.space_id != route.space_id:
        return None
    return sip_auth.InboundTrunk(
        trunk_id=str(trunk.id), allowed_addresses=tuple(trunk.spec.inbound.allowed_addresses),
        username=secrets.inbound_username, password=secrets.inbound_password,
    )  # fmt: skip


def _invite_key(body: InviteRequest, e164: str) -> str:
    """A retried INVITE (same Call-ID, same number) opens the same call."""
    digest = hashlib.sha256(f"{body.sip_call_id}\n{e164}".encode()).hexdigest()[:40]
    return f"sip-{digest}"


@router.post("/invite", response_model=InviteAnswer, response_model_exclude_none=True,
             dependencies=SECRET, responses=errors("invalid_sip_secret"))  # fmt: skip
async def invite(request: Request, body: InviteRequest) -> InviteAnswer:
    """``sipd`` asks what to do with an INVITE: ``connect`` it to the number's agent (the
    bridge stream and its token), ``challenge`` it (digest), or ``refuse`` it (a SIP status
    and a reason)."""
    container = container_of(request)
    settings = container.settings.telephony
    e164 = _e164(body.to_user)
    route = await run_in_threadpool(container.numbers.route, e164) if e164 else None
    if route is None or route.provider != "sip":
        return await _refuse(container, "unknown_number", body, "no active SIP number")
    assert e164 is not None
    trunk = await run_in_threadpool(_trunk, container, route)
    verdict = sip_auth.authenticate(
        trunk, source_ip=body.source_ip, authorization=body.authorization, method=body.method,
        sip_call_id=body.sip_call_id, secret=settings.sip_secret.get_secret_value(),
        realm=settings.sip_realm,
    )  # fmt: skip
    if verdict.action == "challenge":
        log.info("SIP call %s to %s challenged: %s", body.sip_call_id, e164, verdict.detail)
        return InviteAnswer(action="challenge", realm=settings.sip_realm, nonce=verdict.nonce)
    if verdict.action == "refuse":
        reason = verdict.reason or "trunk_unauthenticated"
        return await _refuse(container, reason, body, verdict.detail, route)
    if route.agent_id is None:
        why = "no agent answers this number"
        return await _refuse(container, "number_unassigned", body, why, route)
    codec = _codec(body.codecs)
    if codec is None:
        why = f"offered {body.codecs[:8]}"
        return await _refuse(container, "codec_unsupported", body, why, route)
    who = Actor(space_id=route.space_id, subject=SUBJECT)
    cmd = InitiateCall(
        agent_id=route.agent_id, direction="inbound", channel=CHANNEL,
        from_number=_caller(body.from_user), to_number=e164,
    )  # fmt: skip
    try:
        _call, room, _replayed = await open_call(container, who, cmd, _invite_key(body, e164))
    except (AgentNotFound, AgentArchived, ProviderUnavailable) as exc:
        return await _refuse(container, "agent_unavailable", body, str(exc), route)
    except ApiError as exc:  # the retried INVITE's call has ended; LiveKit is away
        reason = exc.code if exc.code in REFUSALS else "agent_unavailable"
        return await _refuse(container, reason, body, exc.message, route)
    return _connect(container, room, codec)


def _caller(raw: str | None) -> str | None:
    """The caller as E.164 when it is a number; as given otherwise (``alice``, anonymous),
    cut to what a call holds; None when the text cannot be stored (a NUL, a lone surrogate):
    the From header is the carrier's, or anyone's, and never fails the INVITE."""
    if not raw:
        return None
    caller = _e164(raw) or raw[:64]
    return None if text_problem(caller) else caller


def _connect(container: Services, room: CallRoom, codec: str) -> InviteAnswer:
    parameters, _expires = stream_parameters(container, room)
    url = twiml.stream_url(container.settings.telephony.bridge_public_url, CHANNEL)
    return InviteAnswer(
        action="connect",
        call_id=UUID(room.call_id),
        stream_url=url,
        token=parameters["token"],
        codec=codec,
    )  # type: ignore[arg-type]


async def _sip_call(container: Services, call_id: UUID) -> Call:
    call: Call | None = await run_in_threadpool(container.calls.call_of, call_id)
    if call is None:
        raise ApiError(404, "session_not_found", f"No call {call_id}.")
    if call.channel != CHANNEL or call.provider not in (None, "sip"):
        raise ApiError(409, "not_a_sip_call", f"Call {call_id} is not a SIP call.")
    return call


@router.post("/status", response_model=Received, response_model_exclude_none=True,
             dependencies=SECRET,
             responses=errors("invalid_sip_secret", "session_not_found", "not_a_sip_call",
                              "ingress_unavailable"))  # fmt: skip
async def call_status(request: Request, body: StatusReport) -> Received:
    """A SIP leg's status (ringing, in-progress, completed, busy, no-answer, failed, canceled):
    a ``call.provider_status`` signal; a repeated report is the same signal."""
    container = container_of(request)
    call = await _sip_call(container, body.call_id)
    signal_id = f"sip:{body.sip_call_id}:{body.status}"
    signal: dict[str, Any] = {
        "signal_id": signal_id, "type": "call.provider_status", "space_id": call.space_id,
        "call_id": str(call.id), "at": iso_ms(datetime.now(UTC)), "source": "provider",
        "schema_version": 1, "provider": "sip", "provider_call_id": body.sip_call_id,
        "status": body.status, "answered_by": None, "sip_code": body.sip_code,
        "reason": body.reason,
    }  # fmt: skip
    try:
        validate_signal(signal)
    except SignalRejected as exc:
        raise ApiError(
            422, "invalid_request", f"The status cannot be taken: {exc.message}"
        ) from None
    await run_in_threadpool(produce_signal, container, signal)
    return Received(received=True, signal_id=signal_id)


@router.post("/transfer", response_model=Received, response_model_exclude_none=True,
             dependencies=SECRET,
             responses=errors("invalid_sip_secret", "session_not_found", "not_a_sip_call",
                              "no_transfer_in_progress"))  # fmt: skip
async def transfer_outcome(
    request: Request, body: TransferReport,
    call_id: UUID | None = Query(None, description="The call (as in the body), when given."),
) -> Received:  # fmt: skip
    """How a REFER went (``completed``: the target took the call; ``failed``): the call's
    transfer completes with that outcome. A repeated report changes nothing."""
    if call_id is not None and call_id != body.call_id:
        raise ApiError(422, "invalid_request", "The URL and the body name different calls.")
    container = container_of(request)
    call = await _sip_call(container, body.call_id)
    if call.transfer is None:
        if call.transfer_outcome is not None:  # already completed: a repeated report
            return Received(received=True, changed=False)
        raise ApiError(409, "no_transfer_in_progress", f"Call {call.id} has no transfer "
                       "in progress.")  # fmt: skip
    reason = body.reason
    if reason is None and body.outcome == "failed" and body.sip_code is not None:
        reason = f"sip: {body.sip_code}"
    who = Actor(space_id=call.space_id, subject=SUBJECT)
    done = CompleteTransfer(call_id=call.id, outcome=body.outcome, reason=reason)
    await run_in_threadpool(container.calls.complete_transfer, who, done)
    log.info("SIP transfer of call %s: %s (%s)", call.id, body.outcome, body.sip_code)
    return Received(received=True, changed=True)
