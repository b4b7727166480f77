"""The local stack (`voxagent stack up`): every service starts, answers, and `up` is idempotent.

These tests start the stack themselves (``up`` is a fast no-op when it already runs) and
leave it running for the tests after them.
"""

from __future__ import annotations

import time
import uuid

import pytest

from infra.settings import Settings
from infra.stack import manager

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def started(settings: Settings) -> list[str]:
    lines: list[str] = []
    manager.up(settings, lines.append)
    return lines


def _pids(settings: Settings) -> dict[str, int | None]:
    return {s.name: s.pid for s in manager.status(settings)}


def test_every_service_answers_after_up(settings: Settings, started: list[str]) -> None:
    rows = manager.status(settings)
    assert [r.name for r in rows] == ["postgres", "clickhouse", "kafka"]
    for row in rows:
        assert row.answering, f"{row.name} does not answer: {row.detail}"
        assert row.pid is not None, f"{row.name} has no live pid file"


def test_second_up_is_a_noop(settings: Settings, started: list[str]) -> None:
    before = _pids(settings)
    lines: list[str] = []
    began = time.monotonic()
    manager.up(settings, lines.append)
    elapsed = time.monotonic() - began
    assert _pids(settings) == before
    assert not [line for line in lines if "starting" in line or "first run" in line], lines
    assert elapsed < 10, f"a second up took {elapsed:.1f}s"


def test_postgres_accepts_the_app_role(settings: Settings, started: list[str]) -> None:
    import psycopg

    pg = settings.postgres
    with psycopg.connect(
        host="127.0.0.1",
        port=pg.port,
        user=pg.user,
        password=pg.password,
        dbname=pg.database,
        connect_timeout=5,
    ) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), rolsuper, rolcreatedb, "
            "current_setting('fsync'), current_setting('synchronous_commit') "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (pg.user, pg.database, False, True, "on", "on")


def test_clickhouse_answers_select_1(settings: Settings, started: list[str]) -> None:
    from clickhouse_driver import Client

    ch = settings.clickhouse
    client = Client(
        host="127.0.0.1",
        port=ch.port,
        user=ch.user,
        password=ch.password,
        database=ch.database,
        connect_timeout=5,
    )
    try:
        assert client.execute("SELECT 1") == [(1,)]
    finally:
        client.disconnect()


def test_kafka_round_trips_a_message(settings: Settings, started: list[str]) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = settings.kafka.bootstrap
    topic = f"stacktest.{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        producer.produce(topic, key=b"k", value=b"hello stack")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        try:
            deadline = time.monotonic() + 60
            message = None
            while message is None and time.monotonic() < deadline:
                polled = consumer.poll(1.0)
                if polled is not None and polled.error() is None:
                    message = polled
        finally:
            consumer.close()
        assert message is not None, "no message came back within 60s"
        assert (message.key(), message.value()) == (b"k", b"hello stack")
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_down_then_up_one_service(settings: Settings, started: list[str]) -> None:
    """`down --service clickhouse` stops it and keeps its data; `up` brings it back."""
    manager.down(settings, lambda _: None, ["clickhouse"])
    try:
        assert not manager.status(settings, ["clickhouse"])[0].answering
    finally:
        manager.up(settings, lambda _: None, ["clickhouse"])
    row = manager.status(settings, ["clickhouse"])[0]
    assert row.answering, row.detail
    assert all(r.answering for r in manager.status(settings))
