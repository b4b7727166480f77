"""The relay on the real stack: PostgreSQL event store -> Kafka, in order, at least once."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.kafka.producer import build_producer
from adapters.kafka.relay import DeliveryFailed, Relay
from adapters.kafka.topics import domain_topics, ensure_topics
from commands.agents import Actor, ArchiveAgent, CreateAgent, UpdateAgent
from domain.agent_config import AgentConfig
from domain.contract import event_id
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from tests.support.databases import isolated

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RELAY_SCRIPT = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "from infra.bootstrap import bootstrap\n"
    "from infra.settings import Settings\n"
    "from adapters.kafka.relay import run_relay\n"
    "run_relay(bootstrap(Settings()))\n"
)


# -- helpers ----------------------------------------------------------------------------------
def an_actor() -> Actor:
    return Actor(space_id=f"space-{uuid.uuid4().hex[:8]}", subject="relay-test")


def a_config(name: str) -> AgentConfig:
    return AgentConfig(name=name, language="en", system_prompt="You are a test agent.")


def agents_topic(settings: Settings) -> str:
    return domain_topics(settings)[0]


def catch_up(relay: Relay, timeout: float = 60.0) -> int:
    deadline, total = time.monotonic() + timeout, 0
    while (count := relay.run_once()) or relay.lag():
        total += count
        assert time.monotonic() < deadline, f"relay not caught up after {timeout}s"
    return total


def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[tuple[str, bytes]]:
    """Every message of ``topic`` from the beginning up to its current end, as (key, value)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"test-relay-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        by_partition: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"partitions {pending} not read to the end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            by_partition[msg.partition()].append((msg.key().decode(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()]:
                pending.discard(msg.partition())
        return [m for p in sorted(by_partition) for m in by_partition[p]]
    finally:
        consumer.close()


def envelopes_of(messages: list[tuple[str, bytes]], aggregate_id: str) -> list[dict[str, Any]]:
    return [json.loads(v) for k, v in messages if k == aggregate_id]


def relay_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    pg, kafka = settings.postgres, settings.kafka
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOXAGENT_")},
        "PYTHONPATH": str(REPO_ROOT),
        "VOXAGENT_ENVIRONMENT": settings.environment,
        "VOXAGENT_TOPIC_PREFIX": settings.topic_prefix,
        "VOXAGENT_POSTGRES__HOST": pg.host,
        "VOXAGENT_POSTGRES__PORT": str(pg.port),
        "VOXAGENT_POSTGRES__USER": pg.user,
        "VOXAGENT_POSTGRES__PASSWORD": pg.password,
        "VOXAGENT_POSTGRES__DATABASE": pg.database,
        "VOXAGENT_KAFKA__BOOTSTRAP": kafka.bootstrap,
        "VOXAGENT_KAFKA__PARTITIONS": str(kafka.partitions),
    }
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", RELAY_SCRIPT],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(condition: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Iterator[Settings]:
    """A database and topic prefix of this module's own: a second relay on a shared event store
    would make every statement here about what *one* relay did (positions, counts, duplicates)
    moot."""
    with isolated(stack_settings, f"{stack_settings.postgres.database}_relay") as own:
        ensure_topics(own, domain_topics(own))
        yield own


@pytest.fixture
def container(settings: Settings) -> Iterator[Container]:
    c = bootstrap(settings)
    yield c
    c.close()


@pytest.fixture
def relay(container: Container, settings: Settings) -> Iterator[Relay]:
    r = Relay(container.agents, container.pool, settings)
    yield r
    r.close()


# -- specifications ---------------------------------------------------------------------------
def test_create_update_archive_reach_the_topic_in_order_as_envelopes(
    container: Container, settings: Settings, relay: Relay
) -> None:
    app, actor = container.agents, an_actor()
    created = app.create_agent(actor, CreateAgent(config=a_config("Relay one")))
    updated = app.update_agent(actor, UpdateAgent(agent_id=created.id, patch={"description": "x"}))
    archived = app.archive_agent(actor, ArchiveAgent(agent_id=created.id))

    catch_up(relay)

    assert relay.stored_position() >= archived.position
    agg = str(created.id)
    got = envelopes_of(read_topic(settings, agents_topic(settings)), agg)
    assert [e["type"] for e in got] == ["agent.created", "agent.updated", "agent.archived"]
    positions = [created.position, updated.position, archived.position]
    for version, (env, position) in enumerate(zip(got, positions, strict=True), start=1):
        assert env["event_id"] == event_id(created.id, version)
        assert env["schema_version"] == 1
        assert env["space_id"] == actor.space_id
        assert env["aggregate_id"] == agg
        assert env["aggregate_version"] == version
        assert env["position"] == position
        assert ISO_MS_Z.match(env["occurred_at"]), env["occurred_at"]
        assert env["data"]["config"]["name"] == "Relay one"
        assert env["data"]["actor"] == "relay-test"
        assert env["data"]["config_version"] == (1 if version == 1 else 2)
        assert "trace_id" not in env
    assert got[1]["data"]["changed"] == ["description"]
    assert got[1]["data"]["config"]["description"] == "x"
    assert set(got[0]) == {
        "event_id",
        "type",
        "schema_version",
        "space_id",
        "aggregate_id",
        "aggregate_version",
        "position",
        "occurred_at",
        "data",
    }


def test_running_relay_wakes_on_notify_without_polling(container: Container, relay: Relay) -> None:
    catch_up(relay)
    stopping = threading.Event()
    quiet = Relay(container.agents, container.pool, relay.settings, idle_wait=60.0)
    runner = threading.Thread(target=quiet.run_forever, args=(stopping,), daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # let it settle into LISTEN (a poll would come only after 60 s)
        result = container.agents.create_agent(an_actor(), CreateAgent(config=a_config("Wake")))
        wait_until(lambda: quiet.stored_position() >= result.position, 10.0, "NOTIFY wake-up")
    finally:
        stopping.set()
        runner.join(5.0)
        quiet.close()
    assert not runner.is_alive()


def test_position_does_not_move_when_kafka_refuses(
    container: Container, settings: Settings, relay: Relay
) -> None:
    catch_up(relay)
    result = container.agents.create_agent(an_actor(), CreateAgent(config=a_config("Refused")))
    before = relay.stored_position()
    unreachable = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap": "127.0.0.1:1"})}
    )
    refused = Relay(
        container.agents,
        container.pool,
        settings,
        ack_timeout=20.0,
        producer_factory=lambda: build_producer(unreachable, **{"message.timeout.ms": 1500}),
    )
    try:
        with pytest.raises(DeliveryFailed):
            refused.run_once()
        with pytest.raises(DeliveryFailed):  # retried from the stored position, still refused
            refused.run_once()
        stopping = threading.Event()
        runner = threading.Thread(target=refused.run_forever, args=(stopping,), daemon=True)
        runner.start()
        time.sleep(4.0)  # a few failed rounds with backoff: logged, not raised
        assert runner.is_alive()
        stopping.set()
        runner.join(10.0)
        assert not runner.is_alive()
    finally:
        refused.close(timeout=0)
    assert relay.stored_position() == before < result.position
    assert relay.lag() > 0

    catch_up(relay)  # the broker is back (a real one): the same events go out
    assert relay.stored_position() >= result.position


def test_kill_9_mid_stream_loses_nothing_and_republishes_identically(
    container: Container, settings: Settings, tmp_path: Path
) -> None:
    app, actor = container.agents, an_actor()
    ids = [app.create_agent(actor, CreateAgent(config=a_config(f"Kill {i}"))).id for i in range(20)]
    updates, written = 1000, [0]
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(updates):
                patch = {"description": f"{n}"}
                app.update_agent(actor, UpdateAgent(agent_id=ids[n % len(ids)], patch=patch))
                written[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)

    log_path = tmp_path / "relay.log"
    probe = Relay(app, container.pool, settings)
    window = CrashWindow(container, settings, probe.stored_position())
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    first = relay_process(settings, log_path)
    try:
        wait_until(lambda: probe.stored_position() > window.start, 60.0, "a first batch")
        in_window = window.kill_between_ack_and_position(first)
        killed_at = probe.stored_position()
        wait_until(lambda: written[0] >= 700 or not writer.is_alive(), 60.0, "more writes")
        second = relay_process(settings, log_path)
        try:
            writer.join(120)
            assert not failures, failures
            assert written[0] == updates
            newest = app.recorder.max_notification_id()
            wait_until(lambda: probe.stored_position() == newest, 60.0, "the relay to catch up")
        finally:
            second.kill()
            second.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        window.close()
        probe.close()

    assert window.start < killed_at < newest, (window.start, killed_at, newest)
    assert probe.lag() == 0
    mine = {str(i) for i in ids}
    messages = [(k, v) for k, v in read_topic(settings, agents_topic(settings)) if k in mine]
    payload_of: dict[str, bytes] = {}
    first_versions: dict[str, list[int]] = defaultdict(list)
    for key, value in messages:
        env = json.loads(value)
        assert env["aggregate_id"] == key
        assert env["event_id"] == event_id(key, env["aggregate_version"])
        if env["event_id"] in payload_of:
            # a duplicate is only ever a re-publication: same event id, same bytes
            assert payload_of[env["event_id"]] == value
            continue
        payload_of[env["event_id"]] = value
        first_versions[key].append(env["aggregate_version"])
    final = {str(i): app.repository.get(i).version for i in ids}
    assert sum(final.values()) == len(ids) + updates
    for key in mine:
        # first occurrences come in version order, and none is missing
        assert first_versions[key] == list(range(1, final[key] + 1)), key
    duplicates = len(messages) - len(payload_of)
    if in_window:
        assert duplicates > 0
    print(
        f"kill -9 at position {killed_at} (acked but unrecorded: {in_window}): "
        f"{len(messages)} messages, {duplicates} re-published, none lost"
    )


class CrashWindow:
    """Finds the moment a relay is most fragile: messages acknowledged by Kafka, position not
    stored yet. It freezes the relay (SIGSTOP) at random moments and compares what the topic
    holds with what the stored position accounts for; there, it sends SIGKILL."""

    def __init__(self, container: Container, settings: Settings, start: int) -> None:
        self.start = start
        self.pool = container.pool
        self.events_table = container.agents.recorder.events_table_name  # type: ignore[attr-defined]
        self.topic = agents_topic(settings)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "group.id": f"test-relay-{uuid.uuid4().hex}",
            }
        )
        self.partitions = list(
            self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        )
        self.base = self.on_topic()

    def on_topic(self) -> int:
        return sum(
            self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10, cached=False
            )[1]
            for p in self.partitions
        )

    def accounted(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {self.events_table} WHERE notification_id > %s "
                "AND notification_id <= (SELECT position FROM relay_positions "
                "WHERE application = 'agents')",
                (self.start,),
            ).fetchone()
        return int(row[0]) if row else 0

    def kill_between_ack_and_position(self, proc: subprocess.Popen[bytes]) -> bool:
        """SIGKILL ``proc``; True when it died with acknowledged but unrecorded messages."""
        rng = random.Random()
        hit = False
        for _ in range(300):
            time.sleep(rng.uniform(0.0, 0.015))
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.02)  # let requests already on the wire land
            if self.on_topic() - self.base > self.accounted():
                hit = True
                break
            proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return hit

    def close(self) -> None:
        self.consumer.close()
