"""A side record that collides with a concurrent transaction's (a number claim, an idempotency
key, a webhook secret) fails its save with ``IntegrityError`` and leaves the pooled connection
fit for the next save.

The collision is staged the way concurrent requests meet it: another transaction holds the
colliding row uncommitted, so PostgreSQL answers the side insert only when that transaction
commits, after eventsourcing has queued the rest of the save in the pipeline and waits in
``pipeline.sync()``. psycopg 3.3 decides on the client which statements are prepared; one it
decides to prepare in that aborted pipeline never reaches the server, and a connection that
believed otherwise failed every later save with "prepared statement "_pg3_N" does not exist".
The applications here share a pool of one connection so that every save uses that connection,
in a database of their own (the stand-in aggregates they save are no domain events).
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from commands.idempotency import IdempotencyRecord
from commands.numbers import NumberClaim
from commands.webhooks import SecretRecord
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from tests.support.databases import isolated
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

# after one save that succeeds, enough colliding saves for psycopg to decide, during one of
# them, to prepare the statements it has run ``prepare_threshold`` (5) times on the connection:
# the pipelined NOTIFY and events INSERT (a statement whose first run fails is not counted)
ROUNDS = 5 + 2


class Thing(Aggregate):
    """Any aggregate: what matters is the side record saved with its event."""


@pytest.fixture(scope="module")
def own_database(stack_settings: Settings) -> Iterator[Settings]:
    with isolated(stack_settings, f"{stack_settings.postgres.database}_sides") as settings:
        yield settings


@pytest.fixture
def one_connection(own_database: Settings) -> Iterator[Container]:
    pg = own_database.postgres.model_copy(update={"pool_min": 1, "pool_max": 1})
    c = bootstrap(own_database.model_copy(update={"postgres": pg}))
    yield c
    c.close()


def _claim(e164: str) -> tuple[str, tuple[Any, ...], NumberClaim]:
    number_id = uuid.uuid4()
    sql = "INSERT INTO number_claims (e164, number_id, space_id, provider) VALUES (%s,%s,%s,%s)"
    return (sql, (e164, uuid.uuid4(), "elsewhere", "twilio"),
            NumberClaim(e164, number_id, "space", "twilio", None))  # fmt: skip


def _key(key: str) -> tuple[str, tuple[Any, ...], IdempotencyRecord]:
    sql = "INSERT INTO idempotency_keys (space_id, key, command, fingerprint) VALUES (%s,%s,%s,%s)"
    return (sql, ("space", key, "other", "f0"),
            IdempotencyRecord("space", key, "create_thing", "f1", uuid.uuid4(), 1))  # fmt: skip


def _secret(endpoint_id: uuid.UUID) -> tuple[str, tuple[Any, ...], SecretRecord]:
    sql = "INSERT INTO webhook_secrets (endpoint_id, secret_version, secret) VALUES (%s,%s,%s)"
    return sql, (endpoint_id, 1, "theirs"), SecretRecord(endpoint_id, 1, "ours")


def _waiting_in_pipeline_sync(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "sync" and code.co_filename.endswith("psycopg/_pipeline.py"):
            return True
        frame = frame.f_back
    return False


def _race(
    settings: Settings, app: Any, collision: tuple[str, tuple[Any, ...], Any], *, won: bool
) -> BaseException | None:
    """Save a Thing with the collision's side record while another transaction holds the
    colliding row; that transaction commits when it ``won`` the race, else rolls back. The
    outcome of the save: None when saved, else its error."""
    sql, params, record = collision
    outcome: list[BaseException | None] = []

    def save() -> None:
        try:
            app.save(Thing(), records=[record])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome.append(exc)

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as other:
        other.execute("BEGIN")
        other.execute(sql, params)
        saver = threading.Thread(target=save)
        saver.start()
        # the save has sent everything and waits for our row's lock in pipeline.sync()
        eventually(lambda: _waiting_in_pipeline_sync(saver) or not saver.is_alive(),
                   timeout=30, interval=0.01, what="the save to wait on the row lock")  # fmt: skip
        other.execute("COMMIT" if won else "ROLLBACK")
        saver.join()
    assert len(outcome) == 1
    return outcome[0]


CASES: dict[str, tuple[Callable[[Container], Any], Callable[[], Any]]] = {
    "number claim": (lambda c: c.numbers, lambda: _claim(f"+1415{uuid.uuid4().int % 10**7:07d}")),
    "idempotency key": (lambda c: c.agents, lambda: _key(f"key-{uuid.uuid4().hex}")),
    "webhook secret": (lambda c: c.webhooks, lambda: _secret(uuid.uuid4())),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_colliding_side_record_fails_its_save_and_the_connection_saves_on(one_connection, case):
    app_of, collision = CASES[case]
    app = app_of(one_connection)
    settings = one_connection.settings
    app.save(Thing())
    for _ in range(ROUNDS):
        lost = _race(settings, app, collision(), won=True)
        assert isinstance(lost, IntegrityError), lost
    # the same (only) connection, the side record waited for and then free: saved, rather than
    # 'prepared statement "_pg3_2" does not exist' (the NOTIFY psycopg believed prepared)
    assert _race(settings, app, collision(), won=False) is None
    thing = Thing()
    app.save(thing)
    assert app.repository.get(thing.id).version == 1


def _together(n: int, work: Callable[[], Any]) -> list[Any]:
    """``work`` in ``n`` threads at once; each one's result or error."""
    start, outcomes = threading.Barrier(n), []

    def run() -> None:
        start.wait()
        try:
            outcomes.append(work())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_requests_with_one_key_or_one_number_get_their_answers_round_after_round(
    one_connection,
):
    """The races themselves, through the commands (group commit and all) on one connection:
    every round has one winner and its losers, and never an infrastructure error."""
    from commands.agents import Actor, CreateAgent
    from commands.numbers import NumberTaken, ProvisionNumber
    from domain.agent_config import AgentConfig

    who = Actor(space_id=f"space-{uuid.uuid4().hex[:10]}", subject="tester")
    for _ in range(ROUNDS):
        key, create = f"key-{uuid.uuid4().hex}", CreateAgent(config=AgentConfig(name="a"))
        made = _together(6, lambda: one_connection.agents.create_agent(who, create, key))
        assert all(not isinstance(m, Exception) for m in made), made
        assert len({m.id for m in made}) == 1

        e164 = f"+1415{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"
        provision = ProvisionNumber(e164=e164, provider="twilio")
        claims = _together(6, lambda: one_connection.numbers.provision_number(who, provision))
        lost = [c for c in claims if isinstance(c, Exception)]
        assert len(lost) == 5 and all(isinstance(c, NumberTaken) for c in lost), claims
