"""The batch path of ingest on the real event store: a batch brings every call it touches up to
date with one query, and still sees what another writer saved in between."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from commands.agents import Actor, CreateAgent
from commands.calls import AddTranscript, InitiateCall
from commands.signals import validate_signal
from domain.agent_config import AgentConfig
from infra.bootstrap import bootstrap

pytestmark = pytest.mark.integration


def signal(call_id, space, kind, **fields):
    return validate_signal({
        "signal_id": uuid.uuid4().hex, "type": kind, "space_id": space, "call_id": str(call_id),
        "at": datetime.now(UTC).isoformat(), "source": "worker", **fields,
    })  # fmt: skip


def transcript(call_id, space, n):
    return signal(call_id, space, "call.transcript", turn_id=f"t{n}", speaker="user",
                  text=f"utterance {n}", start_ms=n * 1000, end_ms=n * 1000 + 500)  # fmt: skip


def test_a_batch_sees_what_another_writer_saved_since_the_cache_was_filled(stack_settings):
    ingest, api = bootstrap(stack_settings), bootstrap(stack_settings)
    try:
        space = f"batch-{uuid.uuid4().hex[:8]}"
        actor = Actor(space_id=space, subject="test")
        agent = ingest.agents.create_agent(actor, CreateAgent(config=AgentConfig(name="a")))
        calls = [
            ingest.calls.initiate_call(
                actor, InitiateCall(agent_id=agent.id, direction="web", channel="web")
            ).id
            for _ in range(3)
        ]
        # the ingest side caches the calls...
        first = ingest.calls.apply_signals([transcript(c, space, 1) for c in calls])
        assert [o.status for o in first] == ["applied"] * 3
        # ...another process (the API) writes to one of them...
        api.calls.add_transcript(
            actor, AddTranscript(call_id=calls[0], turn_id="api", speaker="agent", text="hi",
                                 start_ms=1500, end_ms=1900),
        )  # fmt: skip
        # ...and the next batch applies on top of it instead of failing or losing it
        second = ingest.calls.apply_signals([transcript(c, space, 2) for c in calls])
        assert [o.status for o in second] == ["applied"] * 3
        for call_id, expected in zip(calls, (4, 3, 3), strict=True):
            events = list(api.calls.events.get(call_id))
            assert len(events) == expected
            assert [e.originator_version for e in events] == list(range(1, expected + 1))
        texts = [e.text for e in api.calls.events.get(calls[0]) if hasattr(e, "text")]
        assert texts == ["utterance 1", "hi", "utterance 2"]
    finally:
        ingest.close()
        api.close()


def test_a_saved_batch_leaves_its_calls_in_the_cache_at_their_new_version(stack_settings):
    ingest = bootstrap(stack_settings)
    try:
        space = f"batch-{uuid.uuid4().hex[:8]}"
        actor = Actor(space_id=space, subject="test")
        agent = ingest.agents.create_agent(actor, CreateAgent(config=AgentConfig(name="a")))
        call_id = ingest.calls.initiate_call(
            actor, InitiateCall(agent_id=agent.id, direction="web", channel="web")
        ).id
        ingest.calls.apply_signals([transcript(call_id, space, 1), transcript(call_id, space, 2)])
        cached = ingest.calls.repository.cache.get(call_id)
        assert cached.version == 3  # initiated + two transcripts: no fast-forward next time
        assert not list(ingest.calls.recorder.select_events_after([(call_id, cached.version)]))
        # the next batch starts from the cached state without changing the cached object
        again = ingest.calls.apply_signals([transcript(call_id, space, 3)])
        assert [o.status for o in again] == ["applied"]
        assert ingest.calls.repository.cache.get(call_id).version == 4
        assert cached.version == 3
        assert ingest.calls.find_call(actor, call_id).version == 4
    finally:
        ingest.close()
