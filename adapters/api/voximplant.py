"""``/api/voximplant``: what our VoxEngine scenario (docs/telephony.md) asks the API.

VoxImplant signs nothing it sends, so the scenario authenticates with its account's **route
token** (``Authorization: Bearer <token>``, see ``adapters.telephony.voximplant.route_token``;
``GET /api/voximplant/route-token`` shows it to the space). Every request names one of our
numbers; the number gives the space, the space's VoxImplant credentials give the token to
compare (in constant time) and the account the request must come from. A token of one space
therefore never reaches another space's numbers or calls.

- ``POST /route``: which agent answers a call. Inbound (no ``call_id``): the dialed number's
  agent; the call is opened (channel ``voximplant``) and the answer carries the bridge stream
  URL and parameters, like ``POST /api/telephony/streams``. Outbound (``call_id`` of the call
  our API placed): the stream of that call, minted when the callee answers. A number we do not
  know, a released or unassigned one, or an agent that cannot take calls is a polite refusal
  the scenario speaks, never an error page. An inbound refusal at a number we know is recorded
  (``number.call_refused``, once per session id) when the request carries the route token of
  the number's space; a number we do not know is only logged and counted
  (``adapters/telephony/refusals.py``).
- ``POST /status``: the scenario's call statuses, produced as ``call.provider_status`` signals.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import container_of
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.provider_signals import produce_signal
from adapters.livekit.rooms import CallRoom
from adapters.services import Services
from adapters.telephony import tokens, twiml
from adapters.telephony.refusals import SpaceCheck, record_refusal
from adapters.telephony.voximplant import route_token as derive_route_token
from adapters.telephony.voximplant import tokens_match
from commands.agents import Actor, AgentNotFound
from commands.call_commands import CallNotFound, InitiateCall
from commands.signals import SignalRejected, iso_ms, validate_signal
from commands.telephony import (
    AnsweredBy,
    ProviderCallStatus,
    ProviderCredentials,
    ProviderError,
)
from domain.errors import AgentArchived, DomainError, ProviderUnavailable
from domain.phone_numbers import normalise_e164
from domain.text import Storable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/voximplant", tags=["voximplant"])
SUBJECT = "system:voximplant"
CHANNEL = "voximplant"
SORRY = "Sorry, this number cannot take calls right now. Goodbye."
SCENARIO_AUTH = ("invalid_voximplant_token", "wrong_voximplant_account")


class RouteRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    called_number: str = Field(min_length=1, max_length=64, description="The number dialed.")
    caller_number: str | None = Field(None, max_length=64, description="The caller id.")
    session_id: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$",
        description="VoxImplant's call session id: a retried request with it is the same call.",
    )  # fmt: skip
    account_id: str = Field(min_length=1, max_length=64, description="VoxImplant's account id.")
    call_id: UUID | None = Field(
        None, description="Outbound only: the call our API placed (from `script_custom_data`)."
    )


class RouteAnswer(BaseModel):
    action: Literal["connect", "refuse"]
    call_id: UUID | None = None
    stream_url: str | None = Field(None, description="The bridge's WebSocket for VoxImplant.")
    parameters: dict[str, str] | None = Field(
        None, description="`customParameters` of the media stream (`call_id`, `token`)."
    )
    expires_at: datetime | None = Field(None, description="The stream must start before this.")
    reason: str | None = Field(
        None, description="Why refused: `unknown_number`, `number_unassigned`, "
        "`agent_unavailable`, `unknown_call`, `call_ended`.",
    )  # fmt: skip
    message: str | None = Field(None, description="What the scenario says before hanging up.")


class StatusReport(Storable):
    model_config = ConfigDict(extra="forbid")

    call_id: UUID
    number: str = Field(
        min_length=1, max_length=64,
        description="Our number on the call (the one dialed inbound, the caller id outbound).",
    )  # fmt: skip
    account_id: str = Field(min_length=1, max_length=64)
    provider_call_id: str = Field(
        min_length=1, max_length=128, description="The session's media session access URL."
    )
    status: ProviderCallStatus
    answered_by: AnsweredBy | None = None
    sip_code: int | None = Field(None, ge=100, le=699)
    reason: str | None = Field(None, max_length=256)


class StatusReceived(BaseModel):
    received: bool
    signal_id: str


class RouteToken(BaseModel):
    account_id: str = Field(description="Your space's VoxImplant account.")
    route_token: str = Field(description="The scenario's `ROUTE_TOKEN` (a secret).")


def _e164(raw: str) -> str:
    """VoxImplant writes numbers without the plus (``12125550100``)."""
    raw = raw.strip()
    return normalise_e164("+" + raw if raw.isdigit() else raw)


def _caller(raw: str | None) -> str | None:
    """The caller id in E.164 when it is a number; as given otherwise (anonymous, SIP...)."""
    if not raw:
        return None
    try:
        return _e164(raw)
    except DomainError:
        return raw


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def _refuse(reason: str, body: RouteRequest, why: str) -> RouteAnswer:
    log.warning(
        "VoxImplant call refused (%s): session %s, number %s: %s",
        reason, body.session_id, body.called_number, why,
    )  # fmt: skip
    return RouteAnswer(action="refuse", reason=reason, message=SORRY)


async def _refused(
    container: Services,
    reason: str,
    body: RouteRequest,
    why: str,
    e164: str | None,
    space_check: SpaceCheck | None = None,
) -> RouteAnswer:
    """``_refuse``, the inbound refusal recorded first (see the module; never raises)."""
    answer = _refuse(reason, body, why)
    await record_refusal(
        container, provider="voximplant", e164=e164, caller=_caller(body.caller_number),
        reason=reason, provider_call_id=body.session_id, space_check=space_check,
    )  # fmt: skip
    return answer


def _token_of(container: Services, authorization: str | None, account_id: str) -> SpaceCheck:
    """Whether the request carries the route token of a space's account (before it is known
    which space, if any, the number belongs to)."""

    async def check(space_id: str) -> bool:
        creds = await _credentials(container, space_id)
        token = _bearer(authorization)
        return creds is not None and tokens_match(token, creds) and creds.account_id == account_id

    return check


async def _credentials(container: Services, space_id: str) -> ProviderCredentials | None:
    return await run_in_threadpool(container.numbers.credentials, space_id, "voximplant")


def _check(creds: ProviderCredentials | None, token: str | None, account_id: str) -> None:
    """403 unless the token is the route token of the number's space's account."""
    if creds is None or not tokens_match(token, creds):
        raise ApiError(
            403, "invalid_voximplant_token",
            "Authorization is not the route token of this number's account.",
        )  # fmt: skip
    if account_id != creds.account_id:
        raise ApiError(403, "wrong_voximplant_account", "The request names another account.")


def _stream(container: Services, room: CallRoom) -> RouteAnswer:
    settings = container.settings.telephony
    grant = tokens.StreamGrant(
        call_id=room.call_id, space_id=room.space_id, agent_id=room.agent_id,
        agent_config_version=room.agent_config_version, room_name=room.room_name,
        channel=CHANNEL,
    )  # fmt: skip
    ttl = settings.stream_token_ttl_seconds
    token = tokens.issue(grant, settings.stream_secret.get_secret_value(), ttl)
    return RouteAnswer(
        action="connect", call_id=UUID(room.call_id),
        stream_url=twiml.stream_url(settings.bridge_public_url, CHANNEL),
        parameters={"call_id": room.call_id, "token": token},
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
    )  # fmt: skip


@router.post(
    "/route", response_model=RouteAnswer, response_model_exclude_none=True,
    responses=errors(*SCENARIO_AUTH, *OPEN_CALL),
)  # fmt: skip
async def route_call(
    request: Request, body: RouteRequest, authorization: str | None = Header(None)
) -> RouteAnswer:
    """Our scenario asks which agent answers a call (inbound: by the number dialed; outbound:
    the call our API placed) and gets the bridge stream to connect, or words to refuse with."""
    container = container_of(request)
    outbound = body.call_id is not None
    ours = body.caller_number if outbound else body.called_number
    try:
        e164 = _e164(ours or "")
    except DomainError as exc:
        if outbound:
            return _refuse("unknown_number", body, str(exc))
        return await _refused(container, "unknown_number", body, str(exc), None)
    route = await run_in_threadpool(container.numbers.route, e164)
    if route is None or route.provider != "voximplant":
        why = "no active VoxImplant number"
        if outbound:
            return _refuse("unknown_number", body, why)
        check = _token_of(container, authorization, body.account_id)
        return await _refused(container, "unknown_number", body, why, e164, check)
    _check(await _credentials(container, route.space_id), _bearer(authorization), body.account_id)
    who = Actor(space_id=route.space_id, subject=SUBJECT)
    if body.call_id is not None:
        try:
            call = await run_in_threadpool(container.calls.find_call, who, body.call_id)
        except CallNotFound:
            return _refuse("unknown_call", body, f"no call {body.call_id} in the number's space")
        if call.channel != CHANNEL or call.ended_at is not None:
            return _refuse("call_ended", body, f"call {call.id} is not a live VoxImplant call")
        room = CallRoom(
            call_id=str(call.id), space_id=route.space_id, agent_id=str(call.agent_id),
            agent_config_version=call.agent_config_version, room_name=call.room_name,
            channel=CHANNEL,
        )  # fmt: skip
        return _stream(container, room)
    if route.agent_id is None:
        return await _refused(
            container, "number_unassigned", body, "no agent answers this number", e164
        )
    cmd = InitiateCall(
        agent_id=route.agent_id, direction="inbound", channel=CHANNEL,
        from_number=_caller(body.caller_number), to_number=e164,
    )  # fmt: skip
    try:  # a retried request (same session) is the same call
        _call, room, _replayed = await open_call(
            container, who, cmd, f"voximplant-{body.session_id}"
        )
    except (AgentNotFound, AgentArchived, ProviderUnavailable) as exc:
        return await _refused(container, "agent_unavailable", body, str(exc), e164)
    return _stream(container, room)


@router.post(
    "/status", response_model=StatusReceived,
    responses=errors(*SCENARIO_AUTH, "unknown_number", "session_not_found",
                     "not_a_voximplant_call", "ingress_unavailable"),
)  # fmt: skip
async def call_status(
    request: Request, body: StatusReport, authorization: str | None = Header(None)
) -> StatusReceived:
    """Our scenario reports a call's status (ringing, in-progress, completed, busy, no-answer,
    failed, canceled; answering-machine detection in `answered_by`): a `call.provider_status`
    signal. A repeated report is the same signal (ingest drops the duplicate)."""
    container = container_of(request)
    try:
        e164 = _e164(body.number)
    except DomainError as exc:
        raise ApiError(404, "unknown_number", f"Not one of our numbers: {exc}") from None
    route = await run_in_threadpool(container.numbers.route, e164)
    if route is None or route.provider != "voximplant":
        raise ApiError(404, "unknown_number", f"{e164} is not an active VoxImplant number here.")
    _check(await _credentials(container, route.space_id), _bearer(authorization), body.account_id)
    who = Actor(space_id=route.space_id, subject=SUBJECT)
    call = await run_in_threadpool(container.calls.find_call, who, body.call_id)  # 404 if not
    if call.channel != CHANNEL:
        raise ApiError(409, "not_a_voximplant_call", f"Call {call.id} is not a VoxImplant call.")
    signal_id = f"voximplant:{body.provider_call_id}:{body.status}"
    signal: dict[str, Any] = {
        "signal_id": signal_id, "type": "call.provider_status", "space_id": route.space_id,
        "call_id": str(call.id), "at": iso_ms(datetime.now(UTC)), "source": "provider",
        "schema_version": 1, "provider": "voximplant", "provider_call_id": body.provider_call_id,
        "status": body.status, "answered_by": body.answered_by, "sip_code": body.sip_code,
        "reason": body.reason,
    }  # fmt: skip
    try:  # what ingest would refuse is refused here, while the scenario listens
        validate_signal(signal)
    except SignalRejected as exc:
        why = f"The status cannot be taken: {exc.message}"
        raise ApiError(422, "invalid_request", why) from None
    await run_in_threadpool(produce_signal, container, signal)
    return StatusReceived(received=True, signal_id=signal_id)


@router.get("/route-token", response_model=RouteToken, responses=errors("voximplant_not_connected"))
async def route_token(request: Request, caller: CallerDep) -> RouteToken:
    """The route token your scenario sends (`ROUTE_TOKEN`), derived from your space's
    VoxImplant key: connect the account first; rotating the key changes the token."""
    creds = await _credentials(container_of(request), caller.space_id)
    if creds is None:
        raise ApiError(404, "voximplant_not_connected",
                       "Connect a VoxImplant account first (PUT /api/telephony/accounts/"
                       "voximplant).")  # fmt: skip
    try:
        token = derive_route_token(creds)
    except ProviderError as exc:
        raise ApiError(404, "voximplant_not_connected", exc.message) from None
    return RouteToken(account_id=creds.account_id, route_token=token)
