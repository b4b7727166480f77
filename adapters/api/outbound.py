"""``POST /api/telephony/outbound`` (VoxArena's outbound call) and
``GET /api/telephony/{call_id}/status``: an agent dials a phone number from one of its space's
numbers, and anyone in the space follows the call.

Outbound: validate ``to`` (E.164), check the number (this space's, active, not another agent's
caller id, a provider account for it), [admission: the billing issue's hook goes here], open
the call (its room, the agent dispatched, the per-call ``variables`` for the worker), then ask
the provider to dial. A provider failure ends the call (``failed``) and answers 502
``provider_failed`` with the provider's code in ``details.code``. An ``Idempotency-Key``
replay answers the first call and never dials again.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import IdempotencyKey, actor, container_of, replayed_header
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.telephony import stream_parameters
from adapters.livekit.rooms import LiveKitRooms
from adapters.services import Services
from adapters.telephony import calls as phone
from adapters.telephony import twiml
from commands.agents import Actor
from commands.call_commands import EndCall, InitiateCall
from commands.numbers import NumberNotFound
from commands.signals import CallVariables
from commands.telephony import OutboundCall, ProviderError
from domain.phone_numbers import InvalidPhoneNumber, PhoneNumber, normalise_e164
from domain.text import Storable
from projections import call_queries, number_queries

log = logging.getLogger(__name__)
router = APIRouter(tags=["telephony"])
OUTBOUND = ("invalid_phone_number", "number_not_found", "number_not_usable", "no_caller_id",
            "provider_account_missing", "provider_not_configured", "provider_failed")  # fmt: skip


class OutboundRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    to: str = Field(min_length=1, max_length=64, description="E.164, e.g. `+14155550100`.")
    from_number_id: UUID | None = Field(
        None, description="The space's number to call from (its provider places the call); "
        "by default the agent's caller id (`POST /api/telephony/numbers/{id}/caller-id`).",
    )  # fmt: skip
    variables: CallVariables | None = Field(
        None, description="The call's dynamic variables (`{{name}}`), over the agent's defaults."
    )
    machine_detection: bool = Field(
        False, description="Ask the provider to detect answering machines (the agent's "
        "`voicemail` policy then applies).",
    )  # fmt: skip


class OutboundResponse(BaseModel):
    call_id: UUID
    session_id: UUID = Field(description="The same id (VoxArena calls it a session).")
    status: str
    provider: str
    provider_call_id: str | None
    from_number: str
    to_number: str
    room_name: str


class CallStatus(BaseModel):
    call_id: UUID
    status: str = Field(description="The call's: initiated, in_progress, transferring, ended.")
    direction: str | None
    channel: str | None
    provider: str | None
    provider_call_id: str | None
    provider_status: str | None = Field(description="The provider's last word on the phone leg.")
    answered_by: str | None
    from_number: str | None
    to_number: str | None
    end_reason: str | None
    duration_ms: int | None
    initiated_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    transfer_status: str | None
    transfer_outcome: str | None
    version: int


def e164_or_422(raw: str, what: str) -> str:
    """``raw`` normalised to E.164, or 422 ``invalid_phone_number`` saying why."""
    try:
        return normalise_e164(raw)
    except InvalidPhoneNumber as exc:
        raise ApiError(422, "invalid_phone_number", f"{what}: {exc.message}") from None


def _number(container: Services, who: Actor, number_id: UUID, agent_id: UUID) -> PhoneNumber:
    """The space's number ``number_id``, usable by ``agent_id`` to call out."""
    try:
        number = container.numbers.get_number(who, number_id)
    except NumberNotFound:
        raise ApiError(404, "number_not_found", f"No number {number_id} in your space.") from None
    if number.released:
        raise ApiError(409, "number_not_usable", f"Number {number.e164} has been released.")
    caller_of = number.outbound_agent_id
    if caller_of is not None and caller_of != agent_id:
        raise ApiError(409, "number_not_usable",
                       f"Number {number.e164} is another agent's caller id.")  # fmt: skip
    return number


def _caller_id(container: Services, who: Actor, agent_id: UUID) -> PhoneNumber:
    """The number ``agent_id`` calls out from (its caller id), or 422 ``no_caller_id``.

    Found in the numbers read model (indexed by agent; the write side has no such index), then
    confirmed on the write side: a number whose caller id was just cleared or that was just
    released is never dialed from. A caller id set a moment ago may not be visible yet: the
    client may name the number (``from_number_id``) instead."""
    container.agents.get_agent(who, agent_id)  # 404 agent_not_found before anything else
    with container.pool.connection() as conn:
        row = number_queries.caller_id_of(conn, who.space_id, agent_id)
    if row is not None:
        with contextlib.suppress(NumberNotFound):
            number = container.numbers.get_number(who, row["id"])
            if not number.released and number.outbound_agent_id == agent_id:
                return number
    raise ApiError(
        422, "no_caller_id", f"Agent {agent_id} has no caller id: name the number to call from "
        "(from_number_id) or make one of your numbers its caller id with "
        "POST /api/telephony/numbers/{number_id}/caller-id.",
    )  # fmt: skip


@router.post(
    "/api/telephony/outbound",
    status_code=201,
    response_model=OutboundResponse,
    responses=errors(*OUTBOUND, *OPEN_CALL),
)
async def outbound(
    request: Request, response: Response, caller: CallerDep, body: OutboundRequest,
    idempotency_key: IdempotencyKey = None,
) -> OutboundResponse:  # fmt: skip
    """Place a phone call from an agent to ``to``, from ``from_number_id`` or the agent's
    caller id. 201 once the provider took the call (``provider_call_id``); its progress comes
    from the provider's status callbacks (``GET /api/telephony/{call_id}/status``)."""
    container = container_of(request)
    who = actor(caller)
    to = e164_or_422(body.to, "to")
    if body.from_number_id is None:
        number = await run_in_threadpool(_caller_id, container, who, body.agent_id)
    else:
        number = await run_in_threadpool(
            _number, container, who, body.from_number_id, body.agent_id
        )
    provider = number.provider
    try:
        creds = await run_in_threadpool(
            phone.credentials_for, container.numbers, who.space_id, provider
        )
        container.telephony_providers.voice_provider(provider)  # configured here at all?
    except phone.NoProviderAccount as exc:
        raise ApiError(409, "provider_account_missing", str(exc)) from None
    except ProviderError as exc:
        raise ApiError(503, "provider_not_configured", exc.message) from None
    # admission (concurrency, credit) is asked here, before the call exists (billing issue)
    cmd = InitiateCall(
        agent_id=body.agent_id, direction="outbound", channel=phone.CHANNEL_OF[provider],
        from_number=number.e164, to_number=to, variables=body.variables,
    )  # fmt: skip
    call, room, replayed = await open_call(container, who, cmd, idempotency_key)
    replayed_header(response, replayed)
    if replayed:  # the first request dialed (or is dialing): never twice
        call = await run_in_threadpool(container.calls.find_call, who, call.id)
        return OutboundResponse(
            call_id=call.id, session_id=call.id, provider=call.provider or provider,
            from_number=call.from_number or number.e164, to_number=call.to_number or to,
            room_name=call.room_name, status=call.status, provider_call_id=call.provider_call_id,
        )  # fmt: skip
    urls = phone.outbound_urls(container.settings.telephony.public_api_url, provider, call.id)
    stream_url = stream_token = None
    if provider in phone.STREAM_AT_DIAL:  # it opens the stream itself when the callee answers
        parameters, _expires = stream_parameters(container, room)
        stream_url = twiml.stream_url(container.settings.telephony.bridge_public_url, room.channel)
        stream_token = parameters["token"]
    order = OutboundCall(call_id=call.id, from_e164=number.e164, to_e164=to, urls=urls,
                         machine_detection=body.machine_detection, stream_url=stream_url,
                         stream_token=stream_token)  # fmt: skip
    try:
        placed = await phone.place(container, who, provider, creds, order)
    except ProviderError as exc:
        log.warning("outbound call %s: %s refused: %s", call.id, provider, exc.code)
        end = EndCall(call_id=call.id, reason="failed")
        await run_in_threadpool(container.calls.end_call, who, end)
        with contextlib.suppress(Exception):  # the room would close itself when empty
            await LiveKitRooms(container.settings.livekit).close(call.room_name)
        raise ApiError(502, "provider_failed", f"{provider} did not place the call: "
                       f"{exc.message}", details={"code": exc.code, "call_id": str(call.id)},
                       ) from None  # fmt: skip
    return OutboundResponse(
        call_id=call.id, session_id=call.id, provider=provider, from_number=number.e164,
        to_number=to, room_name=call.room_name, status="initiated",
        provider_call_id=placed.provider_call_id,
    )  # fmt: skip


@router.get(
    "/api/telephony/{call_id}/status",
    response_model=CallStatus,
    responses=errors("session_not_found"),
)
def call_status(request: Request, caller: CallerDep, call_id: UUID) -> CallStatus:
    """A call's status, its provider's status of the phone leg and its times."""
    with container_of(request).pool.connection() as conn:
        row = call_queries.get_call(conn, caller.space_id, call_id)
    if row is None:
        raise ApiError(404, "session_not_found", f"No call {call_id} in your space.")
    return CallStatus(call_id=row["id"], **{k: row.get(k) for k in CallStatus.model_fields
                                            if k != "call_id"})  # fmt: skip
