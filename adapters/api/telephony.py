"""Phone calls through the media bridge.

``POST /api/telephony/streams`` (authenticated): a call on a phone channel with its room open
and the agent dispatched, plus what the provider needs to stream the call's audio to the
bridge — the stream URL and signed parameters (and ready TwiML for Twilio). Use it for
outbound calls and from VoxImplant scenarios.

Twilio's webhooks (the voice URL, routed by the number dialed, and the status callbacks) are
in ``adapters/api/twilio_webhooks.py``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import IdempotencyKey, actor, container_of, replayed_header
from adapters.api.openapi import errors
from adapters.livekit.rooms import CallRoom
from adapters.services import Services
from adapters.telephony import tokens, twiml
from commands.call_commands import InitiateCall
from domain.text import Storable

log = logging.getLogger(__name__)
router = APIRouter(tags=["telephony"])
PhoneChannel = Literal["twilio_media_streams", "voximplant"]


class StreamRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    channel: PhoneChannel
    direction: Literal["inbound", "outbound"] = "outbound"
    from_number: str | None = Field(None, max_length=64)
    to_number: str | None = Field(None, max_length=64)


class StreamResponse(BaseModel):
    call_id: UUID
    room_name: str
    channel: PhoneChannel
    stream_url: str = Field(description="The bridge's WebSocket for this channel.")
    parameters: dict[str, str] = Field(
        description="Custom parameters the stream must carry (`call_id`, `token`)."
    )
    expires_at: datetime = Field(description="The stream must start before this.")
    twiml: str | None = Field(None, description="For Twilio: `<Connect><Stream>` TwiML.")


def stream_parameters(container: Services, room: CallRoom) -> tuple[dict[str, str], datetime]:
    settings = container.settings.telephony
    grant = tokens.StreamGrant(
        call_id=room.call_id, space_id=room.space_id, agent_id=room.agent_id,
        agent_config_version=room.agent_config_version, room_name=room.room_name,
        channel=room.channel,
    )  # fmt: skip
    ttl = settings.stream_token_ttl_seconds
    token = tokens.issue(grant, settings.stream_secret.get_secret_value(), ttl)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    return {"call_id": room.call_id, "token": token}, expires


@router.post(
    "/api/telephony/streams",
    status_code=201,
    response_model=StreamResponse,
    responses=errors(*OPEN_CALL),
)
async def open_stream(
    request: Request, response: Response, caller: CallerDep, body: StreamRequest,
    idempotency_key: IdempotencyKey = None,
) -> StreamResponse:  # fmt: skip
    """Start a phone call with an agent through the media bridge."""
    container = container_of(request)
    cmd = InitiateCall(
        agent_id=body.agent_id, direction=body.direction, channel=body.channel,
        from_number=body.from_number, to_number=body.to_number,
    )  # fmt: skip
    call, room, replayed = await open_call(container, actor(caller), cmd, idempotency_key)
    replayed_header(response, replayed)
    parameters, expires = stream_parameters(container, room)
    url = twiml.stream_url(container.settings.telephony.bridge_public_url, body.channel)
    return StreamResponse(
        call_id=call.id, room_name=room.room_name, channel=body.channel, stream_url=url,
        parameters=parameters, expires_at=expires,
        twiml=twiml.connect_stream(url, parameters) if body.channel != "voximplant" else None,
    )  # fmt: skip
