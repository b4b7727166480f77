"""Opening a call for a caller on any channel: the Call, then its LiveKit room with the agent
dispatched into it. The web token route and the telephony routes share this."""

from __future__ import annotations

import logging
from uuid import UUID

from fastapi.concurrency import run_in_threadpool

from adapters.api.errors import ApiError
from adapters.livekit.rooms import CallRoom, LiveKitRooms
from adapters.services import Services
from commands.agents import Actor
from commands.call_commands import EndCall, InitiateCall
from commands.idempotency import Key
from domain.calls import Call
from domain.errors import ProviderUnavailable
from domain.providers import problems

log = logging.getLogger(__name__)
# what opening a call can meet (the web token and telephony routes)
OPEN_CALL = (
    "agent_not_found",
    "agent_archived",
    "provider_unavailable",
    "call_ended",
    "livekit_unavailable",
)


async def open_call(
    container: Services, who: Actor, cmd: InitiateCall, idempotency_key: Key
) -> tuple[Call, CallRoom, bool]:
    """The call ``cmd`` describes with its room open, or an ``ApiError``: 422 when the agent
    cannot take calls here, 409 when a replayed key's call has ended, 503 (and the call ended
    as ``error``) when LiveKit cannot open the room. A replayed key returns the same call and
    room without opening anything again."""
    agent = await run_in_threadpool(container.agents.get_agent, who, cmd.agent_id)
    found = problems(agent.settings, container.settings.providers.credentials())
    if found:
        raise ProviderUnavailable("this agent cannot take calls here: " + "; ".join(found))
    result = await run_in_threadpool(container.calls.initiate_call, who, cmd, idempotency_key)
    call = result.call
    assert call is not None
    if result.replayed and call.ended_at is not None:
        raise ApiError(409, "call_ended", f"The call {call.id} this Idempotency-Key started has "
                       "ended; start a new call with a new key.")  # fmt: skip
    room = CallRoom(
        call_id=str(call.id), space_id=who.space_id, agent_id=str(cmd.agent_id),
        agent_config_version=call.agent_config_version, room_name=call.room_name,
        channel=cmd.channel, direction=cmd.direction, variables=cmd.variables,
    )  # fmt: skip
    if not result.replayed:
        try:
            await LiveKitRooms(container.settings.livekit).open(room)
        except Exception as exc:  # noqa: BLE001 - the server is down or refused
            log.error("could not open the room of call %s: %r", call.id, exc)
            end = EndCall(call_id=UUID(str(call.id)), reason="error")
            await run_in_threadpool(container.calls.end_call, who, end)
            raise ApiError(503, "livekit_unavailable",
                           "The voice server could not open the call's room; retry shortly.",
                           headers={"Retry-After": "2"}) from None  # fmt: skip
    return call, room, result.replayed
