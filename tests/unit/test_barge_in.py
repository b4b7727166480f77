"""Barge-in on the worker's side: what it tells the media bridge, when, and what the
transcript keeps of a reply the caller cut off. The room is a stand-in for LiveKit's (a
third-party client); the bridge's side runs against the real server in
tests/integration/test_bridge.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.livekit.rooms import PLAYBACK_TOPIC
from agent.playback import PlaybackLink, heard_part
from agent.recorder import CallRecorder
from commands.signals import parse_signal
from tests.unit.test_calls_domain import started_call
from tests.unit.test_worker_signals import Captured, emitter, sent

pytestmark = pytest.mark.unit
STORY = "Once upon a time there was a lighthouse keeper who counted ships every night."


@pytest.mark.parametrize(
    ("played", "heard", "kept"),
    [
        (4.0, 4.0, STORY),  # all of it
        (4.0, 9.0, STORY),  # the bridge sent more than LiveKit counted: LiveKit's cut stands
        (4.0, 2.0, "Once upon a time there was a"),  # half the characters, whole words only
        (4.0, 0.1, ""),  # not even the first word
        (0.0, 1.0, STORY),  # nothing to scale by
    ],
)
def test_the_heard_part_is_the_words_that_fit_in_what_the_caller_heard(played, heard, kept):
    assert heard_part(STORY, played, heard) == kept


@dataclass
class Packet:
    data: bytes
    topic: str = PLAYBACK_TOPIC


@dataclass
class Participant:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def publish_data(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        assert reliable and topic == PLAYBACK_TOPIC
        self.sent.append(json.loads(payload))


class Room:
    def __init__(self) -> None:
        self.local_participant = Participant()
        self.handlers: dict[str, Any] = {}

    def on(self, name: str, handler: Any) -> None:
        self.handlers[name] = handler

    def isconnected(self) -> bool:
        return True

    def bridge_says(self, message: dict[str, Any]) -> None:
        self.handlers["data_received"](Packet(json.dumps(message).encode()))


def test_the_bridge_hears_of_a_yield_at_once_and_only_once_and_of_full_replies():
    async def scenario() -> tuple[list[dict[str, Any]], str]:
        room = Room()
        link = PlaybackLink(room, "call-1")  # type: ignore[arg-type]
        link.yielded()  # nothing of any reply reached the output yet: nothing to clear
        link.audio()  # the greeting plays...
        link.finished(1.5, interrupted=False)  # ...in full
        link.audio()  # the story plays...
        link.yielded()  # the caller talks over it: LiveKit pauses the output
        link.yielded()  # and clears its buffer once the caller's turn is understood
        await asyncio.sleep(0)
        room.bridge_says({"type": "cleared", "id": 1, "heard_ms": 2000})
        link.finished(4.0, interrupted=True)
        heard = await link.heard_text(STORY)
        await asyncio.sleep(0)
        return room.local_participant.sent, heard

    messages, heard = asyncio.run(scenario())
    assert messages == [{"type": "played"}, {"type": "clear", "id": 1}]
    assert heard == "Once upon a time there was a"


def test_a_false_interruption_resumes_and_the_reply_is_then_marked_as_played():
    async def scenario() -> list[dict[str, Any]]:
        room = Room()
        link = PlaybackLink(room, "call-1")  # type: ignore[arg-type]
        link.audio()
        link.yielded()  # paused for a cough
        link.resumed()  # nothing was said: the reply goes on
        link.finished(6.0, interrupted=False)
        await asyncio.sleep(0)
        return room.local_participant.sent

    assert asyncio.run(scenario()) == [{"type": "clear", "id": 1}, {"type": "played"}]


def test_without_the_bridges_answer_the_transcript_keeps_livekits_cut(monkeypatch):
    monkeypatch.setattr("agent.playback.REPORT_WAIT_SECONDS", 0.05)

    async def scenario() -> str:
        room = Room()
        link = PlaybackLink(room, "call-1")  # type: ignore[arg-type]
        link.audio()
        link.yielded()
        link.finished(4.0, interrupted=True)
        return await link.heard_text(STORY)

    assert asyncio.run(scenario()) == STORY


def test_an_interrupted_reply_is_recorded_as_such_in_its_own_turn():
    producer = Captured()
    rec = CallRecorder(emitter(producer), started_at=100.0, clock=lambda: 101.0)
    rec.message("user", "Tell me a story.", {})
    turn = rec.turn_id
    rec.message("user", "Thank you, goodbye.", {})  # the interruption is recorded first
    rec.message("assistant", "Once upon a time", {}, interrupted=True, turn_id=turn)
    transcripts = [s for s in sent(producer) if s["type"] == "call.transcript"]
    assert [(t["turn_id"], t["speaker"], t.get("interrupted")) for t in transcripts] == [
        ("turn-1", "user", None), ("turn-2", "user", None), ("turn-1", "agent", True)]  # fmt: skip
    signal = parse_signal(json.dumps(transcripts[-1]).encode())
    assert signal.interrupted is True  # type: ignore[union-attr]
    assert parse_signal(json.dumps(transcripts[0]).encode()).interrupted is False  # type: ignore[union-attr]
    assert rec.transcript[-1] == {"turn_id": "turn-1", "speaker": "agent",
                                  "text": "Once upon a time", "interrupted": True}  # fmt: skip


def test_the_call_records_the_interrupted_flag_on_its_transcript_event():
    call = started_call()
    call.add_transcript(turn_id="turn-1", speaker="agent", text="Once upon", start_ms=1,
                        end_ms=2, at="2026-01-01T00:00:02.000Z", interrupted=True)  # fmt: skip
    call.add_transcript(turn_id="turn-1", speaker="user", text="Stop", start_ms=2, end_ms=3,
                        at="2026-01-01T00:00:03.000Z")  # fmt: skip
    events = call.collect_events()
    assert [getattr(e, "interrupted", None) for e in events[-2:]] == [True, False]
