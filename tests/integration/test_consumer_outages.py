"""The consumer runtime on the real stack: ingest waits out its database going away and loses
nothing; signals parked for their call survive a kill -9 of ingest; a projector that meets a
stored event it cannot apply halts there and ``/health`` names it.

PostgreSQL is made unreachable for one database only (this module's own): it stops accepting
connections (``ALLOW_CONNECTIONS false``) and its sessions are terminated — the shared server
keeps running for everyone else.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from adapters.kafka.topics import domain_topics, ensure_topics, ingress_topics
from commands.agents import Actor, CreateAgent
from domain.agent_config import AgentConfig
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from infra.simulate import plan_call, simulate_calls
from tests.integration.test_ingest import EVENT_OF, a_signal, caught_up, produce, read_all
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

pytestmark = pytest.mark.integration

SPACE = "outage-space"


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Iterator[Settings]:
    with isolated(stack_settings, f"{stack_settings.postgres.database}_outage") as own:
        ensure_topics(own, domain_topics(own))
        yield own


@pytest.fixture(scope="module")
def container(settings: Settings) -> Iterator[Container]:
    c = bootstrap(settings)
    yield c
    c.close()


@pytest.fixture(scope="module")
def agent_id(container: Container) -> uuid.UUID:
    actor = Actor(space_id=SPACE, subject="outage-test")
    return container.agents.create_agent(actor, CreateAgent(config=AgentConfig(name="Sim"))).id


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("outage"))


def consumer_state(settings: Settings, name: str) -> Any:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        return conn.execute(
            "SELECT state, source, error FROM consumer_status WHERE consumer = %s", (name,)
        ).fetchone()


@pytest.fixture
def ingest(settings: Settings, logs: Path) -> Iterator[Process]:
    proc = Process("ingest", settings, logs).start()
    eventually(lambda: consumer_state(settings, "ingest"), timeout=60, what="ingest running",
               processes=(proc,))  # fmt: skip
    yield proc
    proc.stop()


def admin(settings: Settings) -> psycopg.Connection:
    info = settings.postgres.model_copy(update={"database": "postgres"}).conninfo()
    return psycopg.connect(info, autocommit=True)


@contextlib.contextmanager
def database_away(settings: Settings) -> Iterator[None]:
    """This module's database refuses connections and loses its sessions until the block ends."""
    name = settings.postgres.database
    with admin(settings) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield
    finally:
        with admin(settings) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


def stored_types(settings: Settings, call_id: Any) -> list[str]:
    c = bootstrap(settings)  # a fresh one: the module's pool lost its sessions in the outage
    try:
        return [type(e).TOPIC for e in c.calls.events.get(uuid.UUID(str(call_id)))]
    finally:
        c.close()


def dead_letters(settings: Settings) -> list[dict[str, str]]:
    return [h for t in ingress_topics(settings) for _, _, h in read_all(settings, t + ".dlq")]


def test_ingest_waits_while_its_database_is_away_and_loses_nothing(
    settings: Settings, agent_id: uuid.UUID, ingest: Process
) -> None:
    seed, calls = 20260201, 8
    plans = [plan_call(i, seed=seed, space_id=SPACE, agent_id=agent_id) for i in range(calls)]
    with database_away(settings):
        simulate_calls(settings, calls=calls, concurrency=4, space_id=SPACE, agent_id=agent_id,
                       seed=seed, start=datetime(2026, 2, 1, tzinfo=UTC))  # fmt: skip
        # longer than the old bounded retries (~3 s) after which it dead-lettered everything
        eventually(
            lambda: "waiting for infrastructure" in ingest.log.read_text(errors="replace"),
            timeout=60, what="ingest waiting", processes=(ingest,),
        )  # fmt: skip
        time.sleep(8)
        assert ingest.alive()
        assert dead_letters(settings) == []
        assert not caught_up(settings)  # nothing acknowledged while the database is away

    def all_stored() -> bool:
        return all(
            stored_types(settings, p[0].data["call_id"]) == [EVENT_OF[s.data["type"]] for s in p]
            for p in plans
        )

    eventually(all_stored, timeout=120, interval=1.0, what="every call", processes=(ingest,))
    eventually(lambda: caught_up(settings), timeout=60, what="caught up", processes=(ingest,))
    assert dead_letters(settings) == []
    assert "infrastructure is back" in ingest.log.read_text(errors="replace")
    assert len(stored_types(settings, plans[0][0].data["call_id"])) == len(plans[0])


def parked(settings: Settings) -> list[int]:
    with psycopg.connect(settings.postgres.conninfo()) as conn:
        return [r[0] for r in conn.execute("SELECT kafka_offset FROM ingest_parking")]


def test_signals_parked_for_their_call_survive_a_kill_9_of_ingest(
    settings: Settings, agent_id: uuid.UUID, logs: Path
) -> None:
    call = uuid.uuid4()
    key = str(call).encode()
    first = Process("ingest", settings, logs).start()
    try:
        produce(settings, [
            (key, a_signal(call, 1, "call.started")),
            (key, a_signal(call, 2, "call.transcript", turn_id="t1", speaker="user",
                           text="hi", start_ms=0, end_ms=900)),
        ])  # fmt: skip
        eventually(lambda: len(parked(settings)) == 2, timeout=60, what="two signals parked",
                   processes=(first,))  # fmt: skip
        eventually(lambda: caught_up(settings), timeout=60, what="their offsets committed",
                   processes=(first,))  # fmt: skip
        time.sleep(1.5)  # Faust commits every second: past the parked messages for sure
        first.kill9()  # its memory is gone; Kafka will not redeliver what was committed
        initiated = a_signal(call, 0, "call.initiated", agent_id=str(agent_id),
                             agent_config_version=1, direction="inbound",
                             channel="twilio_sip", room_name=f"room-{call}")  # fmt: skip
        produce(settings, [(key, initiated)], topic=1)
    finally:
        first.stop()
    second = Process("ingest", settings, logs).start()
    try:
        eventually(
            lambda: stored_types(settings, call)
            == ["call.initiated", "call.started", "call.transcript_added"],
            timeout=60, interval=0.5, what="the parked signals applied after the restart",
            processes=(second,),
        )  # fmt: skip
        eventually(lambda: parked(settings) == [], timeout=30, what="parking emptied")
        assert [h for h in dead_letters(settings) if str(call) in h["dlq.message"]] == []
    finally:
        second.stop()


# -- a projector halts on an event it cannot apply ------------------------------------------
def agent_envelope(agent: uuid.UUID, version: int, **config: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": "agent.created" if version == 1 else
        "agent.updated", "schema_version": 1, "space_id": SPACE, "aggregate_id": str(agent),
        "aggregate_version": version, "position": 1000 + version,
        "occurred_at": f"2026-02-01T12:00:0{version}.000Z",
        "data": {"config": {"name": f"v{version}", **config}, "config_version": version},
    }  # fmt: skip


def test_a_projector_halts_on_an_event_it_cannot_apply_and_health_says_so(
    settings: Settings, container: Container, logs: Path
) -> None:
    from adapters.api.app import create_app

    projector = Process("projector", settings, logs).start()
    try:
        agent, other = uuid.uuid4(), uuid.uuid4()
        good = agent_envelope(agent, 1)
        bad = agent_envelope(agent, 2)
        bad["data"]["config_version"] = 2**40  # valid JSON, valid envelope: no integer column
        after = agent_envelope(other, 1)
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
        for env in (good, bad, after):  # one key: one partition, in this order
            producer.produce(container.topic("agents"), json.dumps(env).encode(), str(agent))
        assert producer.flush(30) == 0

        def status() -> Any:
            return consumer_state(settings, "agents.postgres")

        row = eventually(lambda: (s := status()) and s[0] == "halted" and s, timeout=60,
                         what="agents.postgres halted", processes=(projector,))  # fmt: skip
        assert isinstance(row, tuple)
        assert row[1].startswith(container.topic("agents") + "#") and "out of range" in row[2]

        def versions() -> dict[str, int]:
            with container.pool.connection() as conn:
                rows = conn.execute(
                    "SELECT id::text, version FROM agents WHERE id = ANY(%s)", ([agent, other],)
                ).fetchall()
            return dict(rows)

        # the event before landed; the one after is not skipped to
        assert versions() == {str(agent): 1}
        time.sleep(2)
        assert versions() == {str(agent): 1} and projector.alive()
        assert "HALTED on" in projector.log.read_text(errors="replace")
        letters = read_all(settings, container.topic("agents") + ".dlq")
        assert [h for _, v, h in letters if str(agent).encode() in (v or b"")] == []

        with TestClient(create_app(container)) as client:
            body = client.get("/health")
        assert body.status_code == 503
        health = body.json()
        assert health["status"] == "degraded"
        consumers = health["dependencies"]["consumers"]
        assert not consumers["ok"] and "agents.postgres halted" in consumers["error"]
        assert consumers["consumers"]["agents.postgres"]["state"] == "halted"
    finally:
        projector.stop()
