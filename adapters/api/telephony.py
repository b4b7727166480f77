"""Phone calls through the media bridge.

``POST /api/telephony/streams`` (authenticated): a call on a phone channel with its room open
and the agent dispatched, plus what the provider needs to stream the call's audio to the
bridge — the stream URL and signed parameters (and ready TwiML for Twilio). Use it for
outbound calls and from VoxImplant scenarios.

``POST /api/twilio/voice`` (Twilio's voice webhook, verified by ``X-Twilio-Signature``): an
inbound call to a number whose voice URL names the agent, answered with TwiML that connects
the call to the bridge.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from twilio.request_validator import RequestValidator

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import IdempotencyKey, actor, container_of, replayed_header
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.livekit.rooms import CallRoom
from adapters.services import Services
from adapters.telephony import tokens, twiml
from commands.agents import Actor, AgentNotFound
from commands.call_commands import InitiateCall
from domain.errors import AgentArchived, ProviderUnavailable
from domain.text import Storable, text_problem

log = logging.getLogger(__name__)
router = APIRouter(tags=["telephony"])
PhoneChannel = Literal["twilio_media_streams", "voximplant"]
TWILIO_SUBJECT = "system:twilio"
XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
TWIML = {"description": "TwiML: connect the call to the bridge, or say why not and hang up.",
         "content": {XML: {"schema": {"type": "string"}}}}  # fmt: skip
TWILIO_FORM = {"requestBody": {"required": True, "content": {FORM: {"schema": {
    "type": "object", "description": "Twilio's call parameters (it sends more).",
    "properties": {k: {"type": "string"} for k in ("CallSid", "AccountSid", "From", "To")},
}}}}}  # fmt: skip
TWILIO = ("twilio_not_configured", "unsupported_media_type", "invalid_twilio_signature",
          "wrong_twilio_account", "invalid_call_sid", "invalid_form")  # fmt: skip


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


def _parameters(container: Services, room: CallRoom) -> tuple[dict[str, str], datetime]:
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
    parameters, expires = _parameters(container, room)
    url = twiml.stream_url(container.settings.telephony.bridge_public_url, body.channel)
    return StreamResponse(
        call_id=call.id, room_name=room.room_name, channel=body.channel, stream_url=url,
        parameters=parameters, expires_at=expires,
        twiml=twiml.connect_stream(url, parameters) if body.channel != "voximplant" else None,
    )  # fmt: skip


def _form(body: bytes) -> dict[str, str]:
    """A form body's fields; 400 ``invalid_form`` unless it is UTF-8 text our stores can hold
    (no NUL, no invalid percent-encoded UTF-8)."""
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_form", "The form body is not UTF-8 text.") from None
    for name, value in fields:
        why = text_problem(name) or text_problem(value)
        if why is not None:
            raise ApiError(400, "invalid_form", f"The form field {name!r} {why}.")
    return dict(fields)


def _signed_url(request: Request, public_api_url: str | None) -> str:
    if not public_api_url:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return public_api_url.rstrip("/") + request.url.path + query


@router.post(
    "/api/twilio/voice", response_class=Response, responses={200: TWIML, **errors(*TWILIO)},
    openapi_extra=TWILIO_FORM,
)  # fmt: skip
async def twilio_voice(
    request: Request,
    agent_id: UUID = Query(description="The agent that answers this number."),
    space_id: str = Query(min_length=1, max_length=128, description="The agent's space."),
    signature: str | None = Header(None, alias="X-Twilio-Signature"),
) -> Response:
    """Twilio's incoming-call webhook: answer with TwiML connecting the call to the bridge.
    Set a number's voice URL to ``https://<api>/api/twilio/voice?space_id=..&agent_id=..``;
    Twilio's signature covers that URL, so nobody else can send calls to an agent."""
    container = container_of(request)
    settings = container.settings.telephony
    if settings.twilio_auth_token is None:
        raise ApiError(503, "twilio_not_configured",
                       "Set telephony.twilio_auth_token to take Twilio calls.")  # fmt: skip
    if not request.headers.get("content-type", "").startswith(FORM):
        raise ApiError(415, "unsupported_media_type", f"Twilio's webhooks are {FORM}.")
    form = _form(await request.body())
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not signature or not validator.validate(
        _signed_url(request, settings.public_api_url), form, signature
    ):
        raise ApiError(403, "invalid_twilio_signature",
                       "X-Twilio-Signature does not match this request.")  # fmt: skip
    account = form.get("AccountSid")
    if settings.twilio_account_sid and account != settings.twilio_account_sid:
        raise ApiError(403, "wrong_twilio_account", "The webhook is from another account.")
    call_sid = form.get("CallSid", "")
    if not re.fullmatch(r"CA[0-9a-fA-F]{32}", call_sid):
        raise ApiError(400, "invalid_call_sid", "CallSid must be Twilio's CA... identifier.")
    try:
        cmd = InitiateCall(
            agent_id=agent_id, direction="inbound", channel="twilio_media_streams",
            from_number=(form.get("From") or None), to_number=(form.get("To") or None),
        )  # fmt: skip
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", "Twilio's From or To cannot be taken: "
                       + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()),
                       ) from None  # fmt: skip
    who = Actor(space_id=space_id, subject=TWILIO_SUBJECT)
    try:  # Twilio retries a webhook: the CallSid makes the retry the same call
        _call, room, _replayed = await open_call(container, who, cmd, f"twilio-{call_sid}")
    except (AgentNotFound, AgentArchived, ProviderUnavailable) as exc:
        log.warning("Twilio call %s to agent %s refused: %s", call_sid, agent_id, exc)
        message = "Sorry, this number cannot take calls right now. Goodbye."
        return Response(twiml.refuse(message), media_type=XML)
    parameters, _expires = _parameters(container, room)
    url = twiml.stream_url(settings.bridge_public_url, "twilio_media_streams")
    return Response(twiml.connect_stream(url, parameters), media_type=XML)
