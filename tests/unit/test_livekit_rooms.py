"""A LiveKit server shared by several deployments (the platform and test sessions): each one's
room webhooks become signals only for the rooms it opened for its own workers."""

from __future__ import annotations

import pytest
from livekit import api
from livekit.protocol import models

from adapters.livekit.rooms import CallRoom
from adapters.livekit.webhooks import signals_of

pytestmark = pytest.mark.unit


def room(agent_name: str = "") -> CallRoom:
    return CallRoom(call_id="c1", space_id="s1", agent_id="a1", agent_config_version=1,
                    room_name="call-c1", agent_name=agent_name)  # fmt: skip


def finished(call_room: CallRoom) -> api.WebhookEvent:
    lk_room = models.Room(name=call_room.room_name, metadata=call_room.metadata(),
                          creation_time=1_700_000_000)  # fmt: skip
    return api.WebhookEvent(event="room_finished", id="EV_1", room=lk_room,
                            created_at=1_700_000_002)  # fmt: skip


def test_the_agent_name_travels_in_the_rooms_metadata() -> None:
    assert CallRoom.from_metadata(room("voxagent-test-1").metadata()).agent_name == (
        "voxagent-test-1"
    )


def test_a_room_opened_for_our_workers_becomes_signals() -> None:
    signals = signals_of(finished(room("voxagent")), agent_name="voxagent")
    assert [s["type"] for s in signals] == ["call.ended"]


def test_a_room_another_deployment_opened_is_ignored() -> None:
    assert signals_of(finished(room("voxagent-test-1")), agent_name="voxagent") == []


def test_rooms_opened_before_the_name_was_recorded_still_count() -> None:
    assert len(signals_of(finished(room("")), agent_name="voxagent")) == 1
