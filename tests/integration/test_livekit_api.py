"""The web-call entry point and LiveKit's webhooks through the real API, the real LiveKit
server of the local stack (no worker runs here: the agent's dispatch just waits) and the
pipeline (ingest turns the webhooks' signals into call events)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid

import pytest
from google.protobuf.json_format import MessageToJson
from livekit import api
from livekit.protocol import models

from adapters.livekit.rooms import LiveKitRooms
from tests.support.processes import eventually

pytestmark = pytest.mark.integration


def signed(settings, event: api.WebhookEvent, secret: str | None = None) -> tuple[str, str]:
    """A webhook as LiveKit sends it: the JSON body and its token (a JWT over the body)."""
    body = MessageToJson(event)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    key = settings.livekit.api_key
    token = (
        api.AccessToken(key, secret or settings.livekit.api_secret.get_secret_value())
        .with_sha256(digest)
        .to_jwt()
    )
    return body, token


def start_web_call(client, issuer, sp: str) -> dict:
    h = issuer.headers(sp)
    agent = client.post("/api/agents", json={"name": "Web"}, headers=h).json()
    resp = client.post("/api/livekit/token", json={"agent_id": agent["id"]}, headers=h)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_a_web_call_gets_a_room_with_its_agent_dispatched_and_a_join_token(
    client, issuer, api_container
):
    sp = f"lk-{uuid.uuid4().hex[:8]}"
    web = start_web_call(client, issuer, sp)
    assert web["room_name"] == f"call-{web['call_id']}"
    claims = api.TokenVerifier(
        api_container.settings.livekit.api_key,
        api_container.settings.livekit.api_secret.get_secret_value(),
    ).verify(web["token"])
    assert claims.video.room == web["room_name"] and claims.video.room_join
    assert claims.identity == web["participant_identity"]

    async def room_and_dispatch() -> tuple[list, list]:
        rooms = LiveKitRooms(api_container.settings.livekit)
        async with rooms._client() as lk:
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[web["room_name"]]))
            dispatches = await lk.agent_dispatch.list_dispatch(web["room_name"])
        await rooms.close(web["room_name"])
        return list(listed.rooms), list(dispatches)

    listed, dispatches = asyncio.run(room_and_dispatch())
    assert len(listed) == 1 and json.loads(listed[0].metadata)["call_id"] == web["call_id"]
    assert [d.agent_name for d in dispatches] == [api_container.settings.livekit.agent_name]
    session = client.get(f"/api/sessions/{web['call_id']}?min_version=1",
                         headers=issuer.headers(sp)).json()  # fmt: skip
    assert session["channel"] == "web" and session["direction"] == "web"
    other = client.post("/api/livekit/token", json={"agent_id": str(uuid.uuid4())},
                        headers=issuer.headers(sp))  # fmt: skip
    assert other.status_code == 404 and other.json()["error"]["code"] == "agent_not_found"


def test_livekit_webhooks_are_verified_and_become_the_calls_signals(
    client, issuer, api_container, pipeline
):
    sp = f"lk-{uuid.uuid4().hex[:8]}"
    web = start_web_call(client, issuer, sp)
    settings = api_container.settings
    metadata = json.dumps({"call_id": web["call_id"], "space_id": sp, "agent_id": "x",
                           "agent_config_version": 1, "room_name": web["room_name"]})  # fmt: skip
    now = int(time.time())
    room = models.Room(name=web["room_name"], metadata=metadata, creation_time=now)
    joined = api.WebhookEvent(
        event="participant_joined", id=f"EV_{uuid.uuid4().hex}", room=room,
        created_at=now, participant=models.ParticipantInfo(
            identity="agent-1", kind=models.ParticipantInfo.Kind.AGENT),
    )  # fmt: skip
    body, token = signed(settings, joined)
    resp = client.post("/api/livekit/webhook", content=body,
                       headers={"Authorization": token})  # fmt: skip
    assert resp.status_code == 200 and resp.json()["signals"] == 1

    forged_body, forged = signed(settings, joined, secret="not-the-secret-" * 3)
    bad = client.post("/api/livekit/webhook", content=forged_body,
                      headers={"Authorization": forged})  # fmt: skip
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_webhook_signature"
    tampered = client.post("/api/livekit/webhook", content=body.replace("agent-1", "agent-2"),
                           headers={"Authorization": token})  # fmt: skip
    assert tampered.status_code == 401
    assert client.post("/api/livekit/webhook", content=body).status_code == 401

    finished = api.WebhookEvent(event="room_finished", id=f"EV_{uuid.uuid4().hex}", room=room,
                                created_at=now + 2)  # fmt: skip
    body, token = signed(settings, finished)
    assert client.post("/api/livekit/webhook", content=body,
                       headers={"Authorization": token}).status_code == 200  # fmt: skip

    def ended() -> dict | None:
        got = client.get(f"/api/sessions/{web['call_id']}", headers=issuer.headers(sp)).json()
        return got if got.get("status") == "ended" else None

    session = eventually(ended, timeout=60, processes=tuple(pipeline.values()))
    assert session["end_reason"] == "room_finished" and session["started_at"] is not None
    assert session["duration_ms"] == 2000  # from the room's creation to room_finished
