"""Ingest on the real stack: simulated signals on Kafka -> `voxagent ingest` -> the calls
event store (the write side only; read models are tested with the projectors)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.kafka.producer import build_producer
from adapters.kafka.relay import Relay
from adapters.kafka.topics import domain_topics, ensure_topics, ingress_topics
from commands.agents import Actor, CreateAgent
from domain.agent_config import AgentConfig
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from infra.simulate import plan_call, simulate_calls
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

pytestmark = pytest.mark.integration

SPACE = "ingest-space"
SEED, CALLS = 20260131, 20
START = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
EVENT_OF = {
    "call.initiated": "call.initiated",
    "call.started": "call.started",
    "call.transcript": "call.transcript_added",
    "call.tool_invoked": "call.tool_invoked",
    "call.dtmf": "call.dtmf_received",
    "call.transfer_requested": "call.transfer_requested",
    "call.transfer_completed": "call.transfer_completed",
    "call.usage": "call.usage_recorded",
    "call.turn_metrics": "call.turn_metrics_recorded",
    "call.ended": "call.ended",
}


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Iterator[Settings]:
    """A database and topics of this module's own: ingest owns the calls event store here."""
    with isolated(stack_settings, f"{stack_settings.postgres.database}_ingest") as own:
        ensure_topics(own, domain_topics(own))
        yield own


@pytest.fixture(scope="module")
def container(settings: Settings) -> Iterator[Container]:
    c = bootstrap(settings)
    yield c
    c.close()


@pytest.fixture(scope="module")
def agent_id(container: Container) -> uuid.UUID:
    actor = Actor(space_id=SPACE, subject="ingest-test")
    return container.agents.create_agent(actor, CreateAgent(config=AgentConfig(name="Sim"))).id


@pytest.fixture(scope="module")
def ingest(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    proc = Process("ingest", settings, Path(tmp_path_factory.mktemp("ingest"))).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def simulated(settings: Settings, agent_id: uuid.UUID, ingest: Process) -> dict[str, Any]:
    summary = simulate_calls(
        settings,
        calls=CALLS,
        concurrency=5,
        space_id=SPACE,
        agent_id=agent_id,
        seed=SEED,
        start=START,
    )
    plans = [plan_call(i, seed=SEED, space_id=SPACE, agent_id=agent_id) for i in range(CALLS)]
    return {"summary": summary, "plans": plans}


# -- helpers ----------------------------------------------------------------------------------
def stored_types(container: Container, call_id: uuid.UUID | str) -> list[str]:
    return [type(e).TOPIC for e in container.calls.events.get(uuid.UUID(str(call_id)))]


def expected_types(steps: list[Any]) -> list[str]:
    return [EVENT_OF[s.data["type"]] for s in steps]


def caught_up(settings: Settings) -> bool:
    """Ingest committed every offset of both ingress topics."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"{settings.topic_prefix}-ingest",
        }
    )
    try:
        for topic in ingress_topics(settings):
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in meta.partitions]
            for tp in consumer.committed(parts, timeout=10):
                high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                if high and tp.offset < high:
                    return False
        return True
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None, dict]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending, out = {p for p, end in ends.items() if end > 0}, []
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = {k: v.decode() for k, v in (msg.headers() or [])}
            out.append((msg.key(), msg.value(), headers))
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        return out
    finally:
        consumer.close()


def produce(settings: Settings, messages: list[tuple[bytes, bytes]], topic: int = 0) -> None:
    producer = build_producer(settings)
    for key, value in messages:
        producer.produce(ingress_topics(settings)[topic], value, key)
    assert producer.flush(30) == 0


def a_signal(call_id: Any, n: int, signal_type: str, /, **fields: Any) -> bytes:
    return json.dumps(
        {
            "signal_id": f"test-{call_id}-{n}",
            "type": signal_type,
            "space_id": SPACE,
            "call_id": str(call_id),
            "at": "2026-01-31T13:00:00.000Z",
            "source": "worker",
            **fields,
        }
    ).encode()


# -- specifications ---------------------------------------------------------------------------
def test_every_simulated_call_has_exactly_its_events(
    container: Container, simulated: dict[str, Any], ingest: Process
) -> None:
    plans = simulated["plans"]
    assert simulated["summary"].calls == CALLS
    assert simulated["summary"].signals == sum(len(p) for p in plans)

    def all_stored() -> bool:
        return all(
            stored_types(container, p[0].data["call_id"]) == expected_types(p) for p in plans
        )

    eventually(
        all_stored, timeout=120, interval=0.5, what="every call's events", processes=(ingest,)
    )
    call = container.calls.find_call(
        Actor(space_id=SPACE, subject="t"), plans[0][0].data["call_id"]
    )
    assert call.status == "ended" and call.space_id == SPACE


def test_the_same_signals_again_change_nothing(
    container: Container,
    settings: Settings,
    simulated: dict[str, Any],
    agent_id: uuid.UUID,
    ingest: Process,
) -> None:
    eventually(
        lambda: caught_up(settings), timeout=60, what="ingest caught up", processes=(ingest,)
    )
    before = container.calls.recorder.max_notification_id()
    dlq_before = len(read_all(settings, ingress_topics(settings)[0] + ".dlq"))
    simulate_calls(
        settings,
        calls=CALLS,
        concurrency=5,
        space_id=SPACE,
        agent_id=agent_id,
        seed=SEED,
        start=START,
    )
    time.sleep(1.5)  # let the committed offsets move past the new messages
    eventually(
        lambda: caught_up(settings), timeout=60, what="ingest caught up", processes=(ingest,)
    )
    assert container.calls.recorder.max_notification_id() == before
    assert len(read_all(settings, ingress_topics(settings)[0] + ".dlq")) == dlq_before


def test_signal_after_the_end_and_malformed_message_are_dead_lettered_and_the_stream_goes_on(
    container: Container,
    settings: Settings,
    simulated: dict[str, Any],
    agent_id: uuid.UUID,
    ingest: Process,
) -> None:
    ended = simulated["plans"][0][0].data["call_id"]
    eventually(
        lambda: "call.ended" in stored_types(container, ended),
        timeout=120,
        what="the first call to end",
        processes=(ingest,),
    )
    late = a_signal(
        ended,
        1,
        "call.transcript",
        turn_id="late",
        speaker="user",
        text="hello?",
        start_ms=0,
        end_ms=10,
    )
    fresh = uuid.uuid4()
    key = str(fresh).encode()
    produce(
        settings,
        [
            (ended.encode(), late),
            (key, b"{this is not json"),
            (
                key,
                a_signal(
                    fresh,
                    0,
                    "call.initiated",
                    agent_id=str(agent_id),
                    agent_config_version=1,
                    direction="web",
                    channel="web",
                    room_name="late-room",
                ),
            ),
            (key, a_signal(fresh, 1, "call.started")),
            # numbers and times no column can hold: rejected, the call goes on without them
            (
                key,
                a_signal(
                    fresh,
                    3,
                    "call.usage",
                    provider="openai",
                    model="m",
                    kind="stt_seconds",
                    quantity=1e300,
                ),
            ),
            (key, a_signal(fresh, 4, "call.dtmf", digit="1", offset_ms=2**32)),
            (key, a_signal(fresh, 5, "call.started", at="2999-01-01T00:00:00Z")),
            (key, a_signal(fresh, 2, "call.ended", reason="hangup", duration_ms=5)),
        ],
    )

    eventually(
        lambda: stored_types(container, fresh) == ["call.initiated", "call.started", "call.ended"],
        timeout=60,
        what="the later call",
        processes=(ingest,),
    )
    dlq = ingress_topics(settings)[0] + ".dlq"

    def dead_letters() -> dict[str, dict]:
        return {h["dlq.error"]: {"key": k, "value": v, **h} for k, v, h in read_all(settings, dlq)}

    def invalid() -> list[str]:
        return sorted(
            h["dlq.message"].split(":")[0]
            for k, _, h in read_all(settings, dlq)
            if k == key and h["dlq.error"] == "invalid_signal"
        )

    letters = eventually(
        lambda: (d := dead_letters()) and {"call_ended", "malformed_json"} <= set(d) and d,
        timeout=30,
        what="the dead letters",
    )
    assert eventually(lambda: len(invalid()) == 3, timeout=30, what="the out-of-range signals")
    assert invalid() == ["at", "offset_ms", "quantity"]
    assert isinstance(letters, dict)
    after_end = letters["call_ended"]
    assert after_end["value"] == late and after_end["key"] == ended.encode()
    assert after_end["dlq.signal_id"] == f"test-{ended}-1"
    assert "has ended" in after_end["dlq.message"]
    assert after_end["dlq.source"].startswith(ingress_topics(settings)[0] + "#")
    malformed = letters["malformed_json"]
    assert malformed["value"] == b"{this is not json" and malformed["key"] == key
    assert "transcript_added" not in " ".join(stored_types(container, ended)[-1:])


def test_the_relay_publishes_call_events_to_the_calls_topic(
    container: Container, settings: Settings, simulated: dict[str, Any], ingest: Process
) -> None:
    plan = simulated["plans"][1]
    call_id = plan[0].data["call_id"]
    eventually(
        lambda: stored_types(container, call_id) == expected_types(plan),
        timeout=120,
        what="the second call",
        processes=(ingest,),
    )
    relay = Relay(container.calls, container.pool, settings)
    try:
        while relay.run_once() or relay.lag():
            pass
    finally:
        relay.close()
    envelopes = [
        json.loads(v)
        for k, v, _ in read_all(settings, f"{settings.topic_prefix}.calls.v1")
        if k == call_id.encode()
    ]
    assert [e["type"] for e in envelopes] == expected_types(plan)
    assert {e["space_id"] for e in envelopes} == {SPACE}
    assert [e["aggregate_version"] for e in envelopes] == list(range(1, len(plan) + 1))


def test_worker_signals_that_overtake_their_call_initiated_wait_for_it(
    container: Container, settings: Settings, agent_id: uuid.UUID, ingest: Process
) -> None:
    call = uuid.uuid4()
    key = str(call).encode()
    worker = [
        a_signal(call, 1, "call.started"),
        a_signal(call, 2, "call.transcript", turn_id="t1", speaker="user", text="hi",
                 start_ms=0, end_ms=900),
        a_signal(call, 3, "call.usage", provider="deepgram", model="nova-2",
                 kind="stt_seconds", quantity=0.9),
    ]  # fmt: skip
    produce(settings, [(key, value) for value in worker])
    eventually(lambda: caught_up(settings), timeout=60, what="ingest took the worker signals",
               processes=(ingest,))  # fmt: skip
    time.sleep(1.0)  # the worker's signals wait a moment (several retries) for their call
    assert stored_types(container, call) == []
    initiated = a_signal(call, 0, "call.initiated", agent_id=str(agent_id),
                         agent_config_version=1, direction="inbound", channel="twilio_sip",
                         room_name=f"room-{call}")  # fmt: skip
    produce(settings, [(key, initiated)], topic=1)  # the provider's topic
    produce(settings, [(key, a_signal(call, 4, "call.ended", reason="hangup", duration_ms=5))])
    eventually(
        lambda: stored_types(container, call)
        == ["call.initiated", "call.started", "call.transcript_added", "call.usage_recorded",
            "call.ended"],
        timeout=60, what="every signal of the call", processes=(ingest,),
    )  # fmt: skip
    eventually(lambda: caught_up(settings), timeout=60, what="ingest caught up",
               processes=(ingest,))  # fmt: skip
    for topic in ingress_topics(settings):
        assert [k for k, _, _ in read_all(settings, topic + ".dlq") if k == key] == []
