"""Phone entry points through the real API and the real LiveKit server: a stream for a call
(its room open, the agent dispatched, a signed token only for that call and channel). Twilio's
webhooks, routed by the number dialed, are in test_twilio_webhooks.py."""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest

from adapters.livekit.rooms import LiveKitRooms
from adapters.telephony import tokens
from tests.support.processes import eventually

pytestmark = pytest.mark.integration


def new_agent(client, headers) -> str:
    resp = client.post("/api/agents", json={"name": "Phone desk"}, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def room_metadata(settings, room_name: str) -> dict | None:
    async def find() -> dict | None:
        rooms = LiveKitRooms(settings.livekit)
        async with rooms._client() as lk:
            from livekit import api

            found = await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        return json.loads(found.rooms[0].metadata) if found.rooms else None

    return asyncio.run(find())


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url"), params


def test_a_twilio_stream_opens_the_call_and_its_room(client, issuer, api_container, pipeline):
    sp = f"tel-{uuid.uuid4().hex[:8]}"
    h = issuer.headers(sp)
    agent_id = new_agent(client, h)
    resp = client.post("/api/telephony/streams", headers=h, json={
        "agent_id": agent_id, "channel": "twilio_media_streams", "direction": "outbound",
        "from_number": "+15550001111", "to_number": "+15550002222"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert urlsplit(body["stream_url"]).path == "/streams/twilio"
    assert body["parameters"]["call_id"] == body["call_id"]
    settings = api_container.settings
    grant = tokens.verify(body["parameters"]["token"],
                          settings.telephony.stream_secret.get_secret_value(),
                          "twilio_media_streams")  # fmt: skip
    assert grant.call_id == body["call_id"] and grant.room_name == body["room_name"]
    assert grant.space_id == sp and grant.agent_id == agent_id
    url, params = stream_of(body["twiml"])
    assert url == body["stream_url"] and params == body["parameters"]
    metadata = room_metadata(settings, body["room_name"])
    assert metadata is not None and metadata["channel"] == "twilio_media_streams"
    assert metadata["call_id"] == body["call_id"]

    def recorded() -> dict | None:
        got = client.get(f"/api/sessions/{body['call_id']}", headers=h)
        return got.json() if got.status_code == 200 else None

    session = eventually(recorded, timeout=30, what="the call in the read model",
                         processes=tuple(pipeline.values()))  # fmt: skip
    assert session["channel"] == "twilio_media_streams"
    assert session["direction"] == "outbound"
    assert session["from_number"] == "+15550001111"


def test_a_voximplant_stream_has_no_twiml_and_its_own_route(client, issuer):
    h = issuer.headers(f"tel-{uuid.uuid4().hex[:8]}")
    resp = client.post("/api/telephony/streams", headers=h, json={
        "agent_id": new_agent(client, h), "channel": "voximplant"})  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert urlsplit(resp.json()["stream_url"]).path == "/streams/voximplant"
    assert resp.json()["twiml"] is None


def test_stream_requests_are_validated_and_scoped_to_the_space(client, issuer):
    mine, theirs = (issuer.headers(f"tel-{uuid.uuid4().hex[:8]}") for _ in range(2))
    agent_id = new_agent(client, mine)
    web = client.post("/api/telephony/streams", headers=mine,
                      json={"agent_id": agent_id, "channel": "web"})  # fmt: skip
    assert web.status_code == 422
    other = client.post("/api/telephony/streams", headers=theirs,
                        json={"agent_id": agent_id, "channel": "voximplant"})  # fmt: skip
    assert other.status_code == 404 and other.json()["error"]["code"] == "agent_not_found"
    anonymous = client.post("/api/telephony/streams",
                            json={"agent_id": agent_id, "channel": "voximplant"})  # fmt: skip
    assert anonymous.status_code == 401
