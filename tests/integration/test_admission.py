"""Call admission on the real PostgreSQL (adapters/postgres/admission.py): a burst is admitted
exactly up to the limit, per space and per agent; a lease comes back when its call ends or when
it stops being renewed; one call holds one slot; spaces never share slots."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from adapters.postgres.admission import PostgresAdmissionStore
from commands.admission import AdmissionService, Lease, Limits, Refusal
from infra.settings import Settings

pytestmark = pytest.mark.integration

BURST = 50


@pytest.fixture
def pool(stack_settings: Settings) -> Iterator[ConnectionPool]:
    """A pool of its own, big enough for each thread of a burst to hold a connection at once."""
    pg = stack_settings.postgres
    with ConnectionPool(pg.conninfo(), min_size=BURST, max_size=BURST, timeout=30) as p:
        p.wait(timeout=30)
        yield p


def space() -> str:
    return f"space-{uuid.uuid4().hex[:10]}"


def call() -> str:
    return str(uuid.uuid4())


def burst(admission: AdmissionService, starts: list[tuple[str, str, str]], limits: Limits
          ) -> list[Lease | Refusal]:  # fmt: skip
    """Every start at once: one thread each, released together by a barrier."""
    results: list[Lease | Refusal | BaseException] = [RuntimeError("not run")] * len(starts)
    barrier = threading.Barrier(len(starts))

    def start(i: int) -> None:
        barrier.wait()
        try:
            results[i] = admission.admit(*starts[i], limits)
        except BaseException as exc:  # reported below, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(starts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return [r for r in results if not isinstance(r, BaseException)]


def live_leases(pool: ConnectionPool, space_id: str) -> int:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM call_leases WHERE space_id = %s AND expires_at > now()",
            (space_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_fifty_simultaneous_starts_against_a_limit_of_ten_admit_exactly_ten(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool))
    s = space()
    results = burst(admission, [(s, f"agent-{i % 7}", call()) for i in range(BURST)],
                    Limits(space_concurrency=10))  # fmt: skip
    leases = [r for r in results if isinstance(r, Lease)]
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert len(leases) == 10
    assert {(r.code, r.status) for r in refusals} == {("concurrency_limit", 429)}
    assert len(refusals) == 40
    assert live_leases(pool, s) == 10
    # and again, now that the space's row exists: still ten, the same ten
    again = burst(admission, [(s, "agent-x", call()) for _ in range(BURST)],
                  Limits(space_concurrency=10))  # fmt: skip
    assert not any(isinstance(r, Lease) for r in again)
    assert live_leases(pool, s) == 10


def test_a_burst_on_one_agent_is_held_to_the_agent_limit_and_others_still_start(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool))
    s = space()
    limits = Limits(space_concurrency=20, agent_concurrency=3)
    results = burst(admission, [(s, "busy", call()) for _ in range(BURST)], limits)
    assert sum(isinstance(r, Lease) for r in results) == 3
    assert {r.code for r in results if isinstance(r, Refusal)} == {"agent_concurrency_limit"}
    assert isinstance(admission.admit(s, "other", call(), limits), Lease)


def test_a_lease_that_is_not_renewed_expires_and_frees_its_slot(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool), lease_seconds=1.0)
    s, limits = space(), Limits(space_concurrency=1)
    dead, alive = call(), call()
    assert isinstance(admission.admit(s, "a", dead, limits), Lease)  # its worker then dies
    refused = admission.admit(s, "a", alive, limits)
    assert isinstance(refused, Refusal) and refused.code == "concurrency_limit"
    time.sleep(1.2)
    assert admission.renew(dead) is None  # too late to come back
    lease = admission.admit(s, "a", alive, limits)
    assert isinstance(lease, Lease) and lease.call_id == alive
    with pool.connection() as conn:  # the expired lease is gone, not just ignored
        assert (
            conn.execute("SELECT 1 FROM call_leases WHERE call_id = %s", (dead,)).fetchone() is None
        )


def test_a_renewed_lease_outlives_its_first_expiry(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool), lease_seconds=1.0)
    s, limits = space(), Limits(space_concurrency=1)
    first = admission.admit(s, "a", "live-" + call(), limits)
    assert isinstance(first, Lease)
    for _ in range(3):
        time.sleep(0.4)
        renewed = admission.renew(first.call_id)
        assert renewed is not None and renewed.expires_at > first.expires_at
    assert isinstance(admission.admit(s, "a", call(), limits), Refusal)  # 1.2 s in: still held


def test_release_frees_the_slot_at_once(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool))
    s, limits = space(), Limits(space_concurrency=1)
    first = call()
    assert isinstance(admission.admit(s, "a", first, limits), Lease)
    assert isinstance(admission.admit(s, "a", call(), limits), Refusal)
    assert admission.release(first) is True
    assert admission.release(first) is False
    assert admission.renew(first) is None
    assert isinstance(admission.admit(s, "a", call(), limits), Lease)


def test_the_same_call_admitted_twice_holds_one_slot(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool))
    s, limits, same = space(), Limits(space_concurrency=2), call()
    results = burst(admission, [(s, "a", same)] * 10, limits)  # a retry storm for one call
    assert all(isinstance(r, Lease) for r in results)
    assert len(set(results)) == 1
    assert live_leases(pool, s) == 1
    assert isinstance(admission.admit(s, "a", call(), limits), Lease)
    assert isinstance(admission.admit(s, "a", call(), limits), Refusal)
    # out of credit now, but the call already admitted keeps its lease on a retry
    assert admission.admit(s, "a", same, Limits(space_concurrency=2, credit_ok=False)) == results[0]


def test_a_full_space_leaves_another_space_unaffected_even_while_it_is_locked(pool):
    store = PostgresAdmissionStore(pool)
    admission = AdmissionService(store)
    full, other, limits = space(), space(), Limits(space_concurrency=1)
    assert isinstance(admission.admit(full, "a", call(), limits), Lease)
    assert isinstance(admission.admit(full, "a", call(), limits), Refusal)
    # hold the full space's lock in an open transaction: the other space still admits
    with pool.connection() as holder:
        holder.execute("SELECT 1 FROM admission_spaces WHERE space_id = %s FOR UPDATE", (full,))
        with pool.connection() as conn:
            conn.execute("SET lock_timeout = '2s'")
            conn.commit()
            quick = AdmissionService(PostgresAdmissionStore(_OneConnection(conn)))
            assert isinstance(quick.admit(other, "a", call(), limits), Lease)
            conn.execute("RESET lock_timeout")
        holder.rollback()
    assert live_leases(pool, other) == 1


def test_money_refusals_take_no_slot(pool):
    admission = AdmissionService(PostgresAdmissionStore(pool))
    s = space()
    no_credit = admission.admit(s, "a", call(), Limits(space_concurrency=1, credit_ok=False))
    at_cap = admission.admit(s, "a", call(), Limits(space_concurrency=1, under_cap=False))
    assert isinstance(no_credit, Refusal) and (no_credit.code, no_credit.status) == (
        "insufficient_credit", 402)  # fmt: skip
    assert isinstance(at_cap, Refusal) and (at_cap.code, at_cap.status) == (
        "spend_cap_reached",
        402,
    )
    assert live_leases(pool, s) == 0


class _OneConnection:
    """A pool of one connection already taken (to run an admit with its session settings)."""

    def __init__(self, conn: object) -> None:
        self.conn = conn

    def connection(self) -> object:
        import contextlib

        return contextlib.nullcontext(self.conn)
