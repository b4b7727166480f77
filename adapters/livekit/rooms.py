"""A call's LiveKit room: created with the call's identity in its metadata and the agent
dispatched into it (explicit dispatch by agent name), and the caller's join token."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from livekit import api

PLAYBACK_TOPIC = "voxagent.playback"  # worker <-> media bridge: clear, played, cleared
# API -> worker: what the provider learnt about the phone leg, e.g.
# {"type": "answered_by", "value": "machine"} (answering-machine detection)
CALL_TOPIC = "voxagent.call"
EMPTY_TIMEOUT_SECONDS = 300  # a room nobody joined closes after this
DEPARTURE_TIMEOUT_SECONDS = 20  # a room closes this long after its last participant left


@dataclass(frozen=True)
class CallRoom:
    """What the agent worker needs to know about the call it is dispatched to."""

    call_id: str
    space_id: str
    agent_id: str
    agent_config_version: int
    room_name: str
    channel: str = "web"
    # the deployment's worker agent name the room was opened for: several deployments (the
    # platform and test sessions) may share one LiveKit server and its room webhooks
    agent_name: str = ""
    direction: str = "web"
    # the call's dynamic variables (outbound API): over the agent's defaults
    variables: dict[str, str] | None = None

    def metadata(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_metadata(cls, raw: str) -> CallRoom:
        data = json.loads(raw)
        return cls(
            call_id=str(data["call_id"]), space_id=str(data["space_id"]),
            agent_id=str(data["agent_id"]),
            agent_config_version=int(data["agent_config_version"]),
            room_name=str(data["room_name"]), channel=str(data.get("channel", "web")),
            agent_name=str(data.get("agent_name", "")),
            direction=str(data.get("direction", "web")),
            variables={str(k): str(v) for k, v in (data.get("variables") or {}).items()} or None,
        )  # fmt: skip


def http_url(url: str) -> str:
    """The server API's URL from the client URL (ws -> http)."""
    return "http" + url[2:] if url.startswith("ws") else url


class LiveKitRooms:
    def __init__(self, settings: Any) -> None:  # infra.settings.LiveKitSettings
        self.settings = settings

    def _client(self) -> api.LiveKitAPI:
        s = self.settings
        return api.LiveKitAPI(http_url(s.url), s.api_key, s.api_secret.get_secret_value())

    async def open(self, room: CallRoom) -> None:
        """Create the room and dispatch the agent into it, with the call in both metadata."""
        room = replace(room, agent_name=room.agent_name or self.settings.agent_name)
        dispatch = api.RoomAgentDispatch(
            agent_name=self.settings.agent_name, metadata=room.metadata()
        )
        request = api.CreateRoomRequest(
            name=room.room_name, metadata=room.metadata(), empty_timeout=EMPTY_TIMEOUT_SECONDS,
            departure_timeout=DEPARTURE_TIMEOUT_SECONDS, agents=[dispatch],
        )  # fmt: skip
        async with self._client() as lk:
            await lk.room.create_room(request)

    async def exists(self, room_name: str) -> bool:
        """Whether the room is open (a call's room goes when the call ends)."""
        async with self._client() as lk:
            found = await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        return any(room.name == room_name for room in found.rooms)

    async def tell_worker(self, room_name: str, message: dict[str, Any]) -> None:
        """Send the call's worker a message on ``CALL_TOPIC`` (reliable data packet)."""
        payload = json.dumps(message, separators=(",", ":")).encode()
        request = api.SendDataRequest(
            room=room_name, data=payload, kind=api.DataPacket.Kind.RELIABLE, topic=CALL_TOPIC
        )
        async with self._client() as lk:
            await lk.room.send_data(request)

    async def close(self, room_name: str) -> None:
        async with self._client() as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))

    def join_token(self, room_name: str, identity: str, name: str, ttl: timedelta) -> str:
        s = self.settings
        grants = api.VideoGrants(
            room_join=True, room=room_name, can_publish=True, can_subscribe=True,
            can_publish_data=True,
        )  # fmt: skip
        token = (
            api.AccessToken(s.api_key, s.api_secret.get_secret_value())
            .with_identity(identity)
            .with_name(name)
            .with_grants(grants)
            .with_ttl(ttl)
        )
        return token.to_jwt()
