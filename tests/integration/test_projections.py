"""The agents read side on the real stack: in-process runner, replay, and the Faust projectors.

The Faust projectors run as a subprocess started the way production starts them
(``voxagent projector`` with ``VOXAGENT_*`` settings), fed with envelopes this test
produces to Kafka, so the test does not depend on the relay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from commands.agents import Actor, ArchiveAgent, CreateAgent, UpdateAgent
from domain.agent_config import AgentConfig
from domain.contract import envelope
from infra.bootstrap import Container
from infra.settings import REPO_ROOT, Settings
from projections.agent_queries import agent_version, get_agent, list_agents
from projections.agents_view import apply_agent_envelopes
from projections.replay import replay_agents
from projections.runner import InProcessRunner

pytestmark = pytest.mark.integration


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def new_actor() -> Actor:
    return Actor(space_id=f"space-{uuid.uuid4().hex[:10]}", subject="tester")


def create(container: Container, actor: Actor, name: str, **config: Any) -> uuid.UUID:
    cmd = CreateAgent(config=AgentConfig(name=name, **config))
    return container.agents.create_agent(actor, cmd).id


def update(container: Container, actor: Actor, agent_id: uuid.UUID, **patch: Any) -> None:
    container.agents.update_agent(actor, UpdateAgent(agent_id=agent_id, patch=patch))


def envelopes_of(container: Container, ids: set[uuid.UUID]) -> list[dict[str, Any]]:
    """Every stored event of these agents, as the relay would publish them, in store order."""
    app, found, start = container.agents, [], None
    while batch := app.recorder.select_notifications(start, 1000, inclusive_of_start=False):
        for n in batch:
            if n.originator_id in ids:
                found.append(envelope(app.mapper.to_domain_event(n), n.id))
        start = batch[-1].id
    return found


def latest_versions(envs: list[dict[str, Any]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for env in envs:
        last[env["aggregate_id"]] = max(last.get(env["aggregate_id"], 0), env["aggregate_version"])
    return last


def pg_versions(container: Container, ids: set[str]) -> dict[str, int]:
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id::text, version FROM agents WHERE id::text = ANY(%s)", (list(ids),)
        ).fetchall()
    return dict(rows)


def replay_mismatches(container: Container, ids: set[str]) -> set[str]:
    report = replay_agents(container, check_only=True)
    return (set(report.missing) | set(report.extra) | set(report.different)) & ids


# -- in-process runner and replay -------------------------------------------------------------
def test_runner_projects_create_update_archive(container: Container) -> None:
    actor = new_actor()
    ada = create(container, actor, "Ada", language="de")
    update(container, actor, ada, name="Ada 2", llm={"provider": "openai"})
    bob = create(container, actor, "Bob")
    container.agents.archive_agent(actor, ArchiveAgent(agent_id=bob))

    InProcessRunner(container.agents, container.pool).run_until_caught_up()

    with container.pool.connection() as conn:
        row = get_agent(conn, actor.space_id, ada)
        assert row is not None
        assert (row["name"], row["language"], row["config_version"], row["version"]) == (
            "Ada 2",
            "de",
            2,
            2,
        )
        assert row["config"]["llm"]["provider"] == "openai"
        assert row["created_at"] < row["updated_at"] and not row["archived"]
        archived = get_agent(conn, actor.space_id, bob)
        assert archived is not None and archived["archived"] and archived["archived_at"]
        assert get_agent(conn, "another-space", ada) is None
        assert agent_version(conn, actor.space_id, ada) == 2
        assert agent_version(conn, actor.space_id, uuid.uuid4()) is None
        rows, total = list_agents(conn, actor.space_id, limit=10, offset=0)
        assert [r["id"] for r in rows] == [ada] and total == 1
        rows, total = list_agents(conn, actor.space_id, limit=1, offset=0, include_archived=True)
        assert [r["id"] for r in rows] == [bob] and total == 2  # newest first
        assert list_agents(conn, actor.space_id, limit=10, offset=5)[1] == 1
        for filters in ({"name_contains": "ada 2"}, {"language": "de"}, {"llm_provider": "openai"}):
            assert [
                r["id"] for r in list_agents(conn, actor.space_id, limit=10, offset=0, **filters)[0]
            ] == [ada]
        assert list_agents(conn, actor.space_id, limit=10, offset=0, name_contains="%")[1] == 0


def test_view_applies_each_version_once_and_keeps_created_at(container: Container) -> None:
    actor = new_actor()
    ada = create(container, actor, "Ada")
    update(container, actor, ada, name="Ada 2")
    created, updated = envelopes_of(container, {ada})
    with container.pool.connection() as conn:
        conn.execute("CREATE TEMP TABLE agents_guard (LIKE agents INCLUDING ALL)")
        conn.commit()

        def apply(envs: list[dict[str, Any]], source: str, position: int) -> int:
            return apply_agent_envelopes(
                conn, envs, "guard", source, position, table="agents_guard"
            )

        # an update arriving first still makes a row: events are self-contained
        assert apply([updated], "s1", 1) == 1
        row = conn.execute("SELECT name, version, created_at, updated_at FROM agents_guard")
        assert row.fetchone()[:2] == ("Ada 2", 2)
        assert apply([created], "s2", 1) == 0  # older version: ignored
        assert apply([updated], "s1", 1) == 0  # same position again: skipped by tracking
        assert apply([updated, created], "s1", 2) == 0  # duplicate and older: version guard
        conn.execute("TRUNCATE agents_guard")
        conn.commit()
        assert apply([created], "s3", 1) == 1
        assert apply([updated], "s3", 2) == 1
        name, version, created_at, updated_at = conn.execute(
            "SELECT name, version, created_at, updated_at FROM agents_guard"
        ).fetchone()
        assert (name, version) == ("Ada 2", 2) and created_at < updated_at
        assert conn.execute(
            "SELECT position FROM projection_tracking WHERE projection = 'guard' AND source = 's3'"
        ).fetchone() == (2,)


def test_replay_equals_live_then_swaps_without_losing_live_writes(
    container: Container,
) -> None:
    actor = new_actor()
    ids = {create(container, actor, f"agent {i}") for i in range(5)}
    runner = InProcessRunner(container.agents, container.pool)
    runner.run_until_caught_up()
    assert replay_mismatches(container, {str(i) for i in ids}) == set()

    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            update(container, actor, sorted(ids)[n % len(ids)], description=f"edit {n}")

    writer = threading.Thread(target=keep_writing)
    with runner:  # the live projector keeps following the store during the swap
        writer.start()
        time.sleep(0.3)
        report = replay_agents(container, progress=lambda _msg: None)
        time.sleep(0.3)
        stop.set()
        writer.join()
        wait_until(
            lambda: runner.position() == container.agents.recorder.max_notification_id(),
            what="live runner caught up",
        )
    assert report.swapped and report.events > 0
    with container.pool.connection() as conn:
        names = {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'agents'")
        }
    assert names == {"agents_pkey", "agents_space_listing"}
    last = latest_versions(envelopes_of(container, ids))
    assert pg_versions(container, set(last)) == last
    assert replay_mismatches(container, set(last)) == set()


# -- the Faust projectors ---------------------------------------------------------------------
class ProjectorProcess:
    """``voxagent projector`` (``python -m infra.cli projector``) for this session's databases
    and topics."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings, self.log_path = settings, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        s = self.settings
        env = dict(
            os.environ,
            VOXAGENT_ENVIRONMENT="test",
            VOXAGENT_POSTGRES__DATABASE=s.postgres.database,
            VOXAGENT_CLICKHOUSE__DATABASE=s.clickhouse.database,
            VOXAGENT_TOPIC_PREFIX=s.topic_prefix,
            VOXAGENT_LOG_LEVEL="WARNING",
            PYTHONPATH=str(REPO_ROOT),
        )
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "projector"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None:
            self.log.close()


@pytest.fixture(scope="module")
def kafka(stack_settings: Settings) -> dict[str, Any]:
    """The agents topic and its DLQ, created the way the relay creates them."""
    from adapters.kafka.topics import domain_topics, ensure_topics

    topic, dlq = domain_topics(stack_settings, ["agent"])
    ensure_topics(stack_settings, [topic, dlq])
    return {"topic": topic, "dlq": dlq, "bootstrap": stack_settings.kafka.bootstrap}


@pytest.fixture(scope="module")
def projector(
    stack_settings: Settings, kafka: dict[str, Any], tmp_path_factory: Any
) -> Iterator[ProjectorProcess]:
    proc = ProjectorProcess(stack_settings, tmp_path_factory.mktemp("faust") / "projector.log")
    proc.start()
    yield proc
    proc.stop()


def produce(kafka: dict[str, Any], envs: list[dict[str, Any]], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    producer = Producer(
        {"bootstrap.servers": kafka["bootstrap"], "linger.ms": 5, "enable.idempotence": True}
    )
    for env in envs:
        producer.produce(kafka["topic"], json.dumps(env).encode(), key=env["aggregate_id"].encode())
    for message in raw:
        producer.produce(kafka["topic"], message, key=b"malformed")
    assert producer.flush(30) == 0


def ch_latest(container: Container, ids: set[str]) -> dict[str, int]:
    rows = container.clickhouse().execute(
        "SELECT agent_id, version FROM agents FINAL WHERE agent_id IN %(ids)s", {"ids": tuple(ids)}
    )
    return dict(rows)


def ch_event_counts(container: Container, ids: set[str]) -> tuple[int, int, int]:
    """(rows, rows after FINAL, distinct event ids) of these agents' events in ClickHouse."""
    client = container.clickhouse()
    raw = client.execute(
        "SELECT count() FROM events WHERE aggregate_id IN %(ids)s", {"ids": tuple(ids)}
    )[0][0]
    final = client.execute(
        "SELECT count() FROM events FINAL WHERE aggregate_id IN %(ids)s", {"ids": tuple(ids)}
    )[0][0]
    distinct = client.execute(
        "SELECT uniqExact(event_id) FROM events WHERE aggregate_id IN %(ids)s", {"ids": tuple(ids)}
    )[0][0]
    return raw, final, distinct


def partition_ends(kafka: dict[str, Any]) -> dict[int, int]:
    """The last offset of every partition that has messages."""
    consumer = Consumer({"bootstrap.servers": kafka["bootstrap"], "group.id": "watermarks"})
    try:
        parts = consumer.list_topics(kafka["topic"], timeout=10).topics[kafka["topic"]].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(kafka["topic"], p), 10)[1] - 1
            for p in parts
        }
    finally:
        consumer.close()
    return {p: end for p, end in ends.items() if end >= 0}


def committed_offsets(kafka: dict[str, Any], group: str) -> dict[int, int]:
    """The consumer group's committed offset per partition (the next offset it will read)."""
    consumer = Consumer({"bootstrap.servers": kafka["bootstrap"], "group.id": group})
    try:
        parts = consumer.list_topics(kafka["topic"], timeout=10).topics[kafka["topic"]].partitions
        found = consumer.committed([TopicPartition(kafka["topic"], p) for p in parts], 10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def tracking(container: Container, kafka: dict[str, Any]) -> dict[int, int]:
    """The Faust projector's tracked offset per partition."""
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT source, position FROM projection_tracking "
            "WHERE projection = 'agents' AND source LIKE %s",
            (kafka["topic"] + "#%",),
        ).fetchall()
    return {int(source.rsplit("#", 1)[1]): position for source, position in rows}


def wait_projected(container: Container, last: dict[str, int], timeout: float = 60.0) -> None:
    wait_until(lambda: pg_versions(container, set(last)) == last, timeout, "PostgreSQL read model")
    wait_until(lambda: ch_latest(container, set(last)) == last, timeout, "ClickHouse agents")


def test_faust_projects_envelopes_and_redelivery_changes_nothing(
    container: Container, kafka: dict[str, Any], projector: ProjectorProcess
) -> None:
    actor = new_actor()
    ids = {create(container, actor, f"faust {i}", language="fr") for i in range(6)}
    for agent_id in sorted(ids)[:3]:
        update(container, actor, agent_id, llm={"provider": "openai", "model": "gpt-4o"})
    envs = envelopes_of(container, ids)
    last = latest_versions(envs)
    produce(kafka, envs)
    wait_projected(container, last)
    n = len(envs)
    wait_until(lambda: ch_event_counts(container, set(last)) == (n, n, n), what="CH events")
    with container.pool.connection() as conn:
        before = conn.execute(
            "SELECT * FROM agents WHERE id = ANY(%s) ORDER BY id", (list(ids),)
        ).fetchall()
    assert tracking(container, kafka)
    produce(kafka, envs)  # the relay re-publishes after a crash: same envelopes again
    wait_until(
        lambda: ch_event_counts(container, set(last)) == (2 * n, n, n),
        what="CH events inserted again, deduplicated by FINAL",
    )
    wait_until(
        lambda: tracking(container, kafka) == partition_ends(kafka),
        what="redelivered offsets tracked",
    )
    with container.pool.connection() as conn:
        after = conn.execute(
            "SELECT * FROM agents WHERE id = ANY(%s) ORDER BY id", (list(ids),)
        ).fetchall()
    assert after == before
    assert ch_latest(container, set(last)) == last
    assert replay_mismatches(container, set(last)) == set()


def test_malformed_message_goes_to_the_dlq_and_later_messages_are_projected(
    container: Container, kafka: dict[str, Any], projector: ProjectorProcess
) -> None:
    actor = new_actor()
    marker = uuid.uuid4().hex.encode()
    poison = b'{"type": "agent.created", "broken": ' + marker
    not_an_agent = json.dumps({"type": "agent.created", "marker": marker.decode()}).encode()
    ids = {create(container, actor, "after the poison")}
    envs = envelopes_of(container, ids)
    # (a well-formed event PostgreSQL refuses is not dead-lettered: the projector halts on it,
    # see test_consumer_outages.py)
    produce(kafka, [], raw=[poison, not_an_agent])
    produce(kafka, envs)
    wait_projected(container, latest_versions(envs))

    consumer = Consumer(
        {
            "bootstrap.servers": kafka["bootstrap"],
            "auto.offset.reset": "earliest",
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
        }
    )
    consumer.subscribe([kafka["dlq"]])
    seen: dict[tuple[bytes, str], dict[str, bytes]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(seen) < 4 and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1.0):
                if msg.error() is None and marker in (msg.value() or b""):
                    headers = dict(msg.headers() or [])
                    seen[(msg.value(), headers["dlq.projector"].decode())] = headers
    finally:
        consumer.close()
    assert set(seen) == {
        (poison, "postgres"),
        (poison, "clickhouse"),
        (not_an_agent, "postgres"),
        (not_an_agent, "clickhouse"),
    }
    headers = seen[(poison, "postgres")]
    assert headers["dlq.error"] == b"MalformedEnvelope"
    assert b"not JSON" in headers["dlq.message"]
    assert headers["dlq.source"].startswith(kafka["topic"].encode() + b"#")
    # the dead-lettered offsets count as handled: every partition is tracked to its end
    wait_until(lambda: tracking(container, kafka) == partition_ends(kafka), what="tracking")


def test_kill_9_in_the_middle_loses_nothing_and_applies_nothing_twice(
    container: Container, kafka: dict[str, Any], projector: ProjectorProcess
) -> None:
    actor = new_actor()
    ids = [create(container, actor, f"busy {i}") for i in range(20)]
    for round_ in range(50):
        for agent_id in ids:
            update(container, actor, agent_id, description=f"round {round_}")
    envs = envelopes_of(container, set(ids))
    assert len(envs) == 1020
    last = latest_versions(envs)
    total = sum(last.values())

    def trickle() -> None:  # the updates keep arriving while the projector is killed
        for start in range(0, len(envs), 20):
            produce(kafka, envs[start : start + 20])
            time.sleep(0.02)

    producer = threading.Thread(target=trickle)
    producer.start()
    wait_until(
        lambda: sum(pg_versions(container, set(last)).values()) >= total * 0.3,
        what="a third of the updates projected",
    )
    projector.kill()
    progress = sum(pg_versions(container, set(last)).values())
    assert 0 < progress < total
    # Faust commits an offset only after the batch's transaction: never ahead of our tracking
    tracked = tracking(container, kafka)
    committed = committed_offsets(kafka, f"{container.settings.topic_prefix}-projectors")
    assert all(offset <= tracked.get(p, -1) + 1 for p, offset in committed.items())
    redelivered = sum(tracked.get(p, -1) + 1 - offset for p, offset in committed.items())
    print(f"killed at {progress}/{total} versions; {redelivered} will be redelivered")
    producer.join()
    projector.start()
    wait_projected(container, last, timeout=120)

    assert pg_versions(container, set(last)) == last  # every agent at its last version
    assert replay_mismatches(container, set(last)) == set()
    raw, final, distinct = ch_event_counts(container, set(last))
    assert raw >= final == distinct == len(envs)  # redelivered rows collapse under FINAL
    wait_until(
        lambda: tracking(container, kafka) == partition_ends(kafka),
        what="tracking at the last offset of every partition",
    )
