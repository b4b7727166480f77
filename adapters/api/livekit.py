"""``/api/livekit``: the web entry point (a join token for a new web call with the agent
dispatched into its room) and LiveKit's room webhooks."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import CallerDep
from adapters.api.call_rooms import OPEN_CALL, open_call
from adapters.api.common import IdempotencyKey, actor, container_of, replayed_header
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.livekit.rooms import LiveKitRooms
from adapters.livekit.webhooks import InvalidWebhook, signals_of, verify
from adapters.services import Services
from commands.call_commands import InitiateCall
from commands.idempotency import RequestKey
from commands.signals import SignalRejected, validate_signal
from domain.text import Storable

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/livekit", tags=["livekit"])
TOKEN_TTL = timedelta(hours=1)


class TokenRequest(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    participant_name: str = Field("Caller", min_length=1, max_length=128)


class TokenResponse(BaseModel):
    call_id: UUID
    room_name: str
    url: str = Field(description="The LiveKit server to connect to (ws/wss).")
    token: str = Field(description="The caller's join token for this room only (1 hour).")
    participant_identity: str


class WebhookReceived(BaseModel):
    received: bool
    event: str = Field(description="LiveKit's event name, e.g. `room_finished`.")
    signals: int = Field(description="How many provider signals it became.")


def _identity(caller: Any, key: RequestKey | None) -> str:
    """The caller's participant identity: derived from the Idempotency-Key when there is one,
    so that a replay answers the same call, room and identity (with a freshly signed token)."""
    if key is None:
        return f"caller-{secrets.token_hex(6)}"
    digest = hashlib.sha256(f"{caller.space_id}:{key.key}".encode()).hexdigest()
    return f"caller-{digest[:12]}"


@router.post("/token", status_code=201, response_model=TokenResponse, responses=errors(*OPEN_CALL))
async def web_call_token(
    request: Request, response: Response, caller: CallerDep, body: TokenRequest,
    idempotency_key: IdempotencyKey = None,
) -> TokenResponse:  # fmt: skip
    """Start a web call with an agent: the Call (channel `web`), its room with the agent
    dispatched into it, and a token for the caller to join."""
    container = container_of(request)
    cmd = InitiateCall(agent_id=body.agent_id, direction="web", channel="web")
    call, _room, replayed = await open_call(container, actor(caller), cmd, idempotency_key)
    replayed_header(response, replayed)
    rooms = LiveKitRooms(container.settings.livekit)
    identity = _identity(caller, idempotency_key)
    token = rooms.join_token(call.room_name, identity, body.participant_name, TOKEN_TTL)
    return TokenResponse(
        call_id=call.id, room_name=call.room_name, url=container.settings.livekit.url,
        token=token, participant_identity=identity,
    )  # fmt: skip


@router.post(
    "/webhook",
    response_model=WebhookReceived,
    responses=errors("invalid_body", "invalid_webhook_signature", "ingress_unavailable"),
)
async def livekit_webhook(
    request: Request, authorization: str | None = Header(None)
) -> dict[str, Any]:
    """LiveKit's room webhooks (authenticated by LiveKit's signed token, not a user's)."""
    container = container_of(request)
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_body", "The webhook body is not UTF-8 text.") from None
    try:
        event = verify(container.settings.livekit, body, authorization)
    except InvalidWebhook as exc:
        raise ApiError(401, exc.code, str(exc)) from None
    produced = signals_of(event, agent_name=container.settings.livekit.agent_name)
    for signal in produced:  # what ingest would refuse is refused here, while LiveKit listens
        try:
            validate_signal(signal)
        except SignalRejected as exc:
            raise ApiError(
                422, exc.code, f"LiveKit's event cannot be taken: {exc.message}"
            ) from None
    if produced:
        await run_in_threadpool(_produce, container, produced)
    return {"received": True, "event": event.event, "signals": len(produced)}


def _produce(container: Services, signals: list[dict[str, Any]]) -> None:
    topic = f"{container.settings.topic_prefix}.ingress.provider.v1"
    producer = container.producer
    for signal in signals:
        value = json.dumps(signal, separators=(",", ":")).encode()
        producer.produce(topic, value, signal["call_id"].encode())
    left = producer.flush(10)
    if left:
        raise ApiError(503, "ingress_unavailable", "Kafka did not take the signals; LiveKit "
                       "will retry the webhook.")  # fmt: skip
