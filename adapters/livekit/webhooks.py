"""LiveKit's room webhooks: verified (its JWT over the body's SHA-256), then turned into
provider signals (docs/signals.md) for ingest.

- the agent joined the call's room -> ``call.started`` (the call is answered);
- the room finished -> ``call.ended`` (reason ``room_finished``): a safety net when the worker
  could not report the end itself; after the worker's end it is skipped as a duplicate.
Events of rooms that are not calls (no call metadata), and of rooms another deployment on the
same LiveKit server opened for its own workers (another agent name: a test session beside the
platform), are acknowledged and ignored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from livekit import api
from livekit.protocol import models

from adapters.livekit.rooms import CallRoom
from commands.signals import iso_ms


class InvalidWebhook(Exception):
    code = "invalid_webhook_signature"


def verify(settings: Any, body: str, authorization: str | None) -> Any:
    """The event, when LiveKit signed it with our key; InvalidWebhook otherwise."""
    if not authorization:
        raise InvalidWebhook("the Authorization header with LiveKit's webhook token is missing")
    verifier = api.TokenVerifier(settings.api_key, settings.api_secret.get_secret_value())
    try:
        return api.WebhookReceiver(verifier).receive(body, authorization)
    except Exception as exc:  # noqa: BLE001 - jwt and hash errors alike
        raise InvalidWebhook(f"LiveKit webhook not verified: {type(exc).__name__}") from None


def signals_of(
    event: Any, now: datetime | None = None, *, agent_name: str | None = None
) -> list[dict[str, Any]]:
    """The signals of a verified event; none for rooms opened for another ``agent_name``."""
    room = _call_room(event.room.metadata if event.HasField("room") else "")
    if room is None or (agent_name and room.agent_name and room.agent_name != agent_name):
        return []
    at = datetime.fromtimestamp(event.created_at, UTC) if event.created_at else now
    base = {
        "signal_id": f"livekit-{event.id}", "space_id": room.space_id, "call_id": room.call_id,
        "at": iso_ms(at or datetime.now(UTC)), "source": "provider", "schema_version": 1,
    }  # fmt: skip
    if event.event == "participant_joined" and (
        event.participant.kind == models.ParticipantInfo.Kind.AGENT
    ):
        return [{**base, "type": "call.started"}]
    if event.event == "room_finished":
        created = event.room.creation_time_ms or event.room.creation_time * 1000
        ended_ms = int((at or datetime.now(UTC)).timestamp() * 1000)
        duration = max(ended_ms - created, 0) if created else 0
        return [{**base, "type": "call.ended", "reason": "room_finished", "duration_ms": duration}]
    return []


def _call_room(metadata: str) -> CallRoom | None:
    try:
        return CallRoom.from_metadata(metadata) if metadata else None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
