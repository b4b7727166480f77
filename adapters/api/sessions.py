"""``/api/sessions``: VoxArena's sessions router; a session is a Call.

Writes go through the CallsApplication; reads come from the calls read models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4, uuid5

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from adapters.api.auth import CallerDep
from adapters.api.common import (
    IdempotencyKey,
    Limit,
    MinVersion,
    MinVersionHeader,
    Offset,
    actor,
    container_of,
    write_headers,
)
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.outbound import to_e164
from adapters.api.reads import read_at_least, read_until
from adapters.api.session_schemas import (
    Accepted,
    Analysis,
    CostBreakdown,
    SessionCreate,
    SessionEnd,
    SessionPage,
    SessionPublic,
    SessionUpdate,
    Status,
    Transcript,
    TranscriptCreate,
    TransferCreate,
)
from adapters.telephony import calls as phone
from commands.calls import (
    AddTranscript,
    EndCall,
    InitiateCall,
    RequestTransfer,
    Result,
    StartCall,
)
from commands.idempotency import RequestKey
from projections import call_queries

router = APIRouter(prefix="/api/sessions", tags=["sessions"])
TURN_NAMESPACE = UUID("6b1f3c2e-9d4a-4f0e-8a7b-2c5d1e0f9a31")

# a write by room waits (bounded, per space) for a session created a moment ago
ROOM_WAIT = ("too_many_waits",)
# what a write to an existing session can meet
CHANGE = ("session_not_found", "call_ended", "invalid_call_update", "concurrent_modification")


def _not_found(session_id: Any) -> ApiError:
    return ApiError(404, "session_not_found", f"No session {session_id} in your space.")


def _from_write(result: Result) -> SessionPublic:
    call = result.call
    assert call is not None
    return SessionPublic(
        id=call.id, agent_id=call.agent_id, agent_config_version=call.agent_config_version,
        direction=call.direction, channel=call.channel, room_name=call.room_name,
        status=call.status, from_number=call.from_number, to_number=call.to_number,
        initiated_at=call.initiated_at, started_at=call.started_at, ended_at=call.ended_at,
        end_reason=call.end_reason, duration_ms=call.duration_ms, version=call.version,
    )  # fmt: skip


def _accepted(response: Response, result: Result) -> Accepted:
    write_headers(response, result)
    assert result.call is not None
    return Accepted(session_id=result.id, version=result.version, status=result.call.status)


async def _room_call(
    request: Request, caller: Any, room_name: str, wait: bool = False
) -> dict[str, Any]:
    """The session in ``room_name``. Writes by room wait (bounded, as reads of a min version
    do) for a session created a moment ago to reach the read model; reads answer at once."""
    row, _ = await read_until(
        request, caller.space_id,
        lambda conn: call_queries.get_call_by_room(conn, caller.space_id, room_name),
        lambda row: row is not None, wait=wait,
    )  # fmt: skip
    if row is None:
        raise ApiError(404, "session_not_found", f"No session in room {room_name!r}.")
    return row


def default_turn_id(caller: Any, key: RequestKey | None) -> str:
    """A turn sent without ``turn_id``: named after its Idempotency-Key when it has one, so
    that a retry is the same turn (and the same request); else a fresh id."""
    if key is None:
        return f"api-{uuid4()}"
    name = f"{caller.space_id}:{key.key}"
    return f"api-{uuid5(TURN_NAMESPACE, name)}"


def _add_transcript(
    request: Request, caller: Any, session_id: UUID, body: TranscriptCreate,
    key: RequestKey | None,
) -> Result:  # fmt: skip
    if body.end_ms < body.start_ms:
        raise ApiError(422, "invalid_request", "end_ms must not be before start_ms")
    cmd = AddTranscript(
        call_id=session_id, turn_id=body.turn_id or default_turn_id(caller, key),
        speaker=body.speaker, text=body.text, start_ms=body.start_ms, end_ms=body.end_ms,
    )  # fmt: skip
    return container_of(request).calls.add_transcript(actor(caller), cmd, key)


def _end(
    request: Request, caller: Any, session_id: UUID, body: SessionEnd, key: RequestKey | None
) -> Result:
    cmd = EndCall(call_id=session_id, reason=body.reason, duration_ms=body.duration_ms)
    return container_of(request).calls.end_call(actor(caller), cmd, key)


# -- by room (the worker knows its room, not always the id) ---------------------------------
@router.get(
    "/by-room/{room_name}", response_model=SessionPublic, responses=errors("session_not_found")
)
async def get_by_room(request: Request, caller: CallerDep, room_name: str) -> SessionPublic:
    return SessionPublic(**await _room_call(request, caller, room_name))


@router.post(
    "/by-room/{room_name}/end", response_model=Accepted, responses=errors(*CHANGE, *ROOM_WAIT)
)
async def end_by_room(
    request: Request, response: Response, caller: CallerDep, room_name: str,
    body: SessionEnd | None = None, idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    row = await _room_call(request, caller, room_name, wait=True)
    end = body or SessionEnd()
    result = await run_in_threadpool(_end, request, caller, row["id"], end, idempotency_key)
    return _accepted(response, result)


@router.post(
    "/by-room/{room_name}/transcripts",
    status_code=201,
    response_model=Accepted,
    responses=errors(*CHANGE, *ROOM_WAIT),
)
async def add_transcript_by_room(
    request: Request, response: Response, caller: CallerDep, room_name: str,
    body: TranscriptCreate, idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    row = await _room_call(request, caller, room_name, wait=True)
    result = await run_in_threadpool(
        _add_transcript, request, caller, row["id"], body, idempotency_key
    )
    return _accepted(response, result)


# -- sessions -------------------------------------------------------------------------------
@router.get("", response_model=SessionPage)
def list_sessions(
    request: Request, caller: CallerDep, limit: Limit = 50, offset: Offset = 0,
    agent_id: UUID | None = None, status: Status | None = None,
    since: Annotated[datetime | None, Query(description="initiated at or after")] = None,
    until: Annotated[datetime | None, Query(description="initiated before")] = None,
) -> SessionPage:  # fmt: skip
    with container_of(request).pool.connection() as conn:
        rows, total = call_queries.list_calls(
            conn, caller.space_id, limit=limit, offset=offset, agent_id=agent_id,
            status=status, since=since, until=until,
        )  # fmt: skip
    items = [SessionPublic(**row) for row in rows]
    return SessionPage(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "",
    status_code=201,
    response_model=SessionPublic,
    responses=errors("agent_not_found", "agent_archived", "invalid_call_update"),
)
def create_session(
    request: Request, response: Response, caller: CallerDep, body: SessionCreate,
    idempotency_key: IdempotencyKey = None,
) -> SessionPublic:  # fmt: skip
    cmd = InitiateCall(**body.model_dump())
    result = container_of(request).calls.initiate_call(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    response.headers["Location"] = f"/api/sessions/{result.id}"
    return _from_write(result)


@router.get("/{session_id}", response_model=SessionPublic, responses=errors("session_not_found"))
async def get_session(
    request: Request, response: Response, caller: CallerDep, session_id: UUID,
    min_version: MinVersion = None, min_version_header: MinVersionHeader = None,
) -> SessionPublic:  # fmt: skip
    row = await read_at_least(
        request, caller.space_id,
        lambda conn: call_queries.get_call(conn, caller.space_id, session_id),
        max(min_version or 0, min_version_header or 0), f"session {session_id}",
    )  # fmt: skip
    if row is None:
        raise _not_found(session_id)
    response.headers["ETag"] = f'"{row["version"]}"'
    return SessionPublic(**row)


@router.patch("/{session_id}", response_model=Accepted, responses=errors(*CHANGE))
def update_session(
    request: Request, response: Response, caller: CallerDep, session_id: UUID,
    body: SessionUpdate, idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    if body.status == "ended":
        end = SessionEnd(reason=body.end_reason or "completed", duration_ms=body.duration_ms)
        return _accepted(response, _end(request, caller, session_id, end, idempotency_key))
    calls = container_of(request).calls
    result = calls.start_call(actor(caller), StartCall(call_id=session_id), idempotency_key)
    return _accepted(response, result)


@router.get(
    "/{session_id}/transcripts",
    response_model=list[Transcript],
    responses=errors("session_not_found"),
)
def get_transcripts(request: Request, caller: CallerDep, session_id: UUID) -> list[Any]:
    with container_of(request).pool.connection() as conn:
        if call_queries.get_call(conn, caller.space_id, session_id) is None:
            raise _not_found(session_id)
        return call_queries.transcripts(conn, caller.space_id, session_id)


@router.post(
    "/{session_id}/transcripts", status_code=201, response_model=Accepted, responses=errors(*CHANGE)
)
def add_transcript(
    request: Request, response: Response, caller: CallerDep, session_id: UUID,
    body: TranscriptCreate, idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    return _accepted(response, _add_transcript(request, caller, session_id, body, idempotency_key))


@router.get(
    "/{session_id}/analysis", response_model=Analysis, responses=errors("session_not_found")
)
def get_analysis(request: Request, caller: CallerDep, session_id: UUID) -> Analysis:
    """Empty (``pending``) until the post-call analysis exists."""
    with container_of(request).pool.connection() as conn:
        if call_queries.get_call(conn, caller.space_id, session_id) is None:
            raise _not_found(session_id)
    return Analysis(session_id=session_id, status="pending", analysis=None)


@router.get(
    "/{session_id}/cost-breakdown",
    response_model=CostBreakdown,
    responses=errors("session_not_found"),
)
def get_cost_breakdown(request: Request, caller: CallerDep, session_id: UUID) -> Any:
    with container_of(request).pool.connection() as conn:
        breakdown = call_queries.cost_breakdown(conn, caller.space_id, session_id)
    if breakdown is None:
        raise _not_found(session_id)
    return breakdown


@router.post(
    "/{session_id}/transfer",
    status_code=202,
    response_model=Accepted,
    responses=errors(*CHANGE, "call_not_started", "invalid_phone_number", "transfer_failed"),
)
async def transfer(
    request: Request, response: Response, caller: CallerDep, session_id: UUID,
    body: TransferCreate, idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    """Transfer the caller (VoxArena's call transfer). A call with a phone leg is handed to the
    provider at once (``call.transfer_requested`` then ``call.transfer_completed`` with its
    outcome; 502 ``transfer_failed`` when the provider refused, the caller staying with the
    agent); a call without one (web) records the request only. ``target``: E.164 or SIP URI."""
    container, who = container_of(request), actor(caller)
    if body.briefing:
        raise ApiError(422, "invalid_request", "briefing: a warm transfer with a briefing is "
                       "made by the agent's transfer_call tool (the agent speaks it); this "
                       "route transfers at once.")  # fmt: skip
    call = await run_in_threadpool(container.calls.find_call, who, session_id)
    if call.provider_call_id is None:
        cmd = RequestTransfer(call_id=session_id, mode=body.mode, target=body.target)
        result = await run_in_threadpool(
            container.calls.request_transfer, who, cmd, idempotency_key
        )
        return _accepted(response, result)
    target = body.target if body.target.startswith(("sip:", "sips:")) else to_e164(body.target)
    result, problem = await phone.transfer(
        container, who, session_id, target, body.mode, idempotency_key
    )
    if problem is not None:
        raise ApiError(502, "transfer_failed", "The provider did not take the transfer; the "
                       "caller stays with the agent.", details={"code": problem})  # fmt: skip
    return _accepted(response, result)
