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
from typing import Any
from uuid import UUID

import phonenumbers
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import IdempotencyKey, actor, container_of, replayed_header
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.livekit.rooms import LiveKitRooms
from adapters.telephony import calls as phone
from commands.call_commands import EndCall, InitiateCall
from commands.signals import CallVariables
from commands.telephony import OutboundCall, ProviderError
from domain.text import Storable
from projections import call_queries

log = logging.getLogger(__name__)
router = APIRouter(tags=["telephony"])
OUTBOUND = ("invalid_phone_number", "number_not_found", "number_not_usable",
            "provider_account_missing", "provider_not_configured", "provider_failed")  # fmt: skip


class OutboundRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    to: str = Field(min_length=1, max_length=64, description="E.164, e.g. `+14155550100`.")
    from_number_id: UUID = Field(
        description="The space's number to call from (its provider places the call)."
    )
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


def to_e164(raw: str) -> str:
    """``raw`` as E.164 or 422 ``invalid_phone_number``. (A local rule until
    ``domain.phone_numbers.normalise_e164`` of the numbers context is in: same library.)"""
    text = raw.strip()
    problem = None
    if not text.startswith("+"):
        problem = "has no country code: write it in E.164 form, e.g. +14155550100"
    else:
        try:
            parsed = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed):
            problem = "is not a valid phone number"
        else:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise ApiError(422, "invalid_phone_number", f"to: {raw!r} {problem}.")


def _number(container: Any, who: Any, number_id: UUID, agent_id: UUID) -> Any:
    try:
        number = container.numbers.get_number(who, number_id)
    except Exception as exc:
        if getattr(exc, "code", type(exc).__name__) in ("number_not_found", "NumberNotFound"):
            raise ApiError(
                404, "number_not_found", f"No number {number_id} in your space."
            ) from None
        raise
    if getattr(number, "status", "active") != "active":
        raise ApiError(409, "number_not_usable", f"Number {number.e164} has been released.")
    caller_of = getattr(number, "outbound_agent_id", None)
    if caller_of is not None and str(caller_of) != str(agent_id):
        raise ApiError(409, "number_not_usable",
                       f"Number {number.e164} is another agent's caller id.")  # fmt: skip
    return number


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
    """Place a phone call from an agent to ``to``."""
    # the numbers context and the providers registry (issue 12, merged from h/numbers)
    container: Any = container_of(request)
    who = actor(caller)
    to = to_e164(body.to)
    number = await run_in_threadpool(_number, container, who, body.from_number_id, body.agent_id)
    provider = str(number.provider)
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
    answer = dict(call_id=call.id, session_id=call.id, provider=provider,
                  from_number=number.e164, to_number=to, room_name=call.room_name)  # fmt: skip
    if replayed:  # the first request dialed (or is dialing): never twice
        return OutboundResponse(**answer, status=call.status,
                                provider_call_id=call.provider_call_id)  # fmt: skip
    urls = phone.outbound_urls(container.settings.telephony.public_api_url, provider, call.id)
    order = OutboundCall(call_id=call.id, from_e164=number.e164, to_e164=to, urls=urls,
                         machine_detection=body.machine_detection)  # fmt: skip
    try:
        placed = await phone.place(container.calls, container.telephony_providers, who,
                                   provider, creds, order)  # fmt: skip
    except ProviderError as exc:
        log.warning("outbound call %s: %s refused: %s", call.id, provider, exc.code)
        end = EndCall(call_id=call.id, reason="failed")
        await run_in_threadpool(container.calls.end_call, who, end)
        with contextlib.suppress(Exception):  # the room would close itself when empty
            await LiveKitRooms(container.settings.livekit).close(call.room_name)
        raise ApiError(502, "provider_failed", f"{provider} did not place the call: "
                       f"{exc.message}", details={"code": exc.code, "call_id": str(call.id)},
                       ) from None  # fmt: skip
    return OutboundResponse(**answer, status="initiated",
                            provider_call_id=placed.provider_call_id)  # fmt: skip


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
