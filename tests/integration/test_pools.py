"""PostgreSQL connections on the real stack: every pool is sized from the settings, the
applications of one process share one event-store pool, idle pools close back to their minimum,
and a platform process holds no more than its budget (docs/operations.md)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.api.health import APPLICATIONS
from commands.agents import Actor, CreateAgent
from domain.agent_config import AgentConfig
from infra.bootstrap import bootstrap
from infra.settings import Settings
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

pytestmark = pytest.mark.integration


def connections(application_name: str) -> int:
    """How many connections to the stack say ``application_name``."""
    with psycopg.connect(Settings().postgres.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def small(stack_settings: Settings) -> Settings:
    """The session's databases with small pools, a short idle time and a name of its own."""
    pg = stack_settings.postgres.model_copy(
        update={
            "pool_min": 1,
            "pool_max": 3,
            "pool_max_idle_seconds": 0.2,
            "application_name": f"voxagent-pools-{uuid.uuid4().hex[:8]}",
        }
    )
    return stack_settings.model_copy(update={"postgres": pg})


def test_the_applications_of_a_process_share_one_event_store_pool_sized_from_settings(
    small: Settings,
) -> None:
    container = bootstrap(small)
    name = small.postgres.application_name
    try:
        apps = container.applications()
        stores = {id(app.factory.datastore) for app in apps}
        assert len(stores) == 1, "agents, calls and webhooks share one datastore"
        for pool in (apps[0].factory.datastore.pool, container.pool):
            assert (pool.min_size, pool.max_size, pool.max_idle) == (1, 3, 0.2)
        most = 0
        actor = Actor(space_id=f"pools-{uuid.uuid4().hex[:6]}", subject="test")

        def work() -> None:
            for i in range(5):
                container.agents.create_agent(
                    actor, CreateAgent(config=AgentConfig(name=f"agent {i}"))
                )
                with container.pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(0.02)")

        threads = [threading.Thread(target=work) for _ in range(12)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            most = max(most, connections(name))
            time.sleep(0.01)
        for t in threads:
            t.join()
        assert most <= 2 * 3, f"{most} connections for two pools of at most 3"
    finally:
        container.close()
    eventually(lambda: connections(name) == 0, timeout=30,
               what="every connection closed with the container")  # fmt: skip


def test_a_shared_pool_stays_open_until_its_last_application_closes(small: Settings) -> None:
    first, second = bootstrap(small), bootstrap(small)
    try:
        assert first.agents.factory.datastore is second.calls.factory.datastore
        first.close()
        second.calls.recorder.max_notification_id()  # the shared pool still serves
        second.agents.create_agent(
            Actor(space_id="pools", subject="test"), CreateAgent(config=AgentConfig(name="x"))
        )
    finally:
        second.close()
    eventually(lambda: connections(small.postgres.application_name) == 0, timeout=30,
               what="the pool closed with its last application")  # fmt: skip


def test_idle_pools_close_back_to_their_minimum(small: Settings) -> None:
    container = bootstrap(small)
    name = small.postgres.application_name
    try:
        store = container.agents.factory.datastore
        holding, release = threading.Barrier(4), threading.Event()

        def hold_one_of_each() -> None:
            with container.pool.connection(), store.get_connection():
                holding.wait(timeout=30)
                release.wait(timeout=30)

        threads = [threading.Thread(target=hold_one_of_each) for _ in range(3)]
        for t in threads:
            t.start()
        holding.wait(timeout=30)
        try:
            assert connections(name) == 6  # both pools grew to their maximum
        finally:
            release.set()
            for t in threads:
                t.join()
        eventually(lambda: connections(name) == 2, timeout=60,
                   what="both pools back at pool_min (1 each)")  # fmt: skip
    finally:
        container.close()


@pytest.fixture(scope="module")
def relay_settings(stack_settings: Settings) -> Iterator[Settings]:
    """A database of its own: a relay is the only one of its event store."""
    with isolated(stack_settings, f"{stack_settings.postgres.database}_pools") as settings:
        yield settings


def test_a_relay_process_holds_its_budget_once_idle(
    relay_settings: Settings, tmp_path: Path
) -> None:
    """Four applications (agents, calls, webhooks, numbers): per application a LISTEN
    connection, plus one pool for the event
    store and one for relay positions at ``pool_min`` each (eventsourcing alone used to keep
    ten per application)."""
    env = {"VOXAGENT_POSTGRES__POOL_MAX_IDLE_SECONDS": "0.5"}
    relay = Process("relay", relay_settings, tmp_path, env=env).start()
    name = f"{relay_settings.postgres.application_name}-relay"
    try:
        container = bootstrap(relay_settings)
        try:
            actor = Actor(space_id="pools", subject="test")
            for i in range(20):
                container.agents.create_agent(
                    actor, CreateAgent(config=AgentConfig(name=f"agent {i}"))
                )
        finally:
            container.close()
        eventually(lambda: "relay agents starting" in relay.tail(400), timeout=60,
                   what="the relay running", processes=(relay,))  # fmt: skip
        budget = 2 * relay_settings.postgres.pool_min + len(APPLICATIONS)
        seen: list[int] = []

        def at_budget() -> bool:
            seen.append(connections(name))
            return seen[-1] == budget

        try:
            eventually(at_budget, timeout=60, interval=0.5,
                       what=f"the relay at {budget} connections", processes=(relay,))  # fmt: skip
        except AssertionError as exc:  # say what it held instead
            raise AssertionError(f"{exc}\nconnections seen (last 10): {seen[-10:]}") from None
    finally:
        relay.stop()


def test_the_test_session_is_not_the_platform(stack_settings: Settings) -> None:
    """A running platform's worker never takes a test's call (nor the reverse), and its
    connections are told apart from the tests' in pg_stat_activity."""
    platform = Settings()
    assert stack_settings.livekit.agent_name != platform.livekit.agent_name
    assert stack_settings.postgres.database != platform.postgres.database
    assert stack_settings.postgres.application_name != platform.postgres.application_name
    assert stack_settings.topic_prefix != platform.topic_prefix
