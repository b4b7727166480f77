"""The admission service's decisions (commands.admission) on an in-memory store: who may start
a call, with which refusal, and how leases come back (end, expiry) and stay one per call."""

from __future__ import annotations

import uuid

import pytest

from commands.admission import REFUSALS, AdmissionService, Lease, Limits, Refusal
from tests.fakes.admission import FakeClock, MemoryAdmissionStore

pytestmark = pytest.mark.unit


def service(lease_seconds: float = 120.0) -> tuple[AdmissionService, FakeClock]:
    clock = FakeClock()
    return AdmissionService(MemoryAdmissionStore(clock), lease_seconds), clock


def call() -> str:
    return str(uuid.uuid4())


def refused(result: Lease | Refusal, code: str) -> bool:
    return isinstance(result, Refusal) and result.code == code


def test_a_call_under_every_limit_gets_a_lease_that_expires_after_the_lease_time():
    admission, clock = service(lease_seconds=90)
    lease = admission.admit("s1", "a1", "c1", Limits(space_concurrency=2))
    assert isinstance(lease, Lease)
    assert (lease.call_id, lease.space_id, lease.agent_id) == ("c1", "s1", "a1")
    assert lease.granted_at == clock.now
    assert (lease.expires_at - lease.granted_at).total_seconds() == 90


def test_the_space_limit_refuses_the_call_over_it_with_429():
    admission, _ = service()
    limits = Limits(space_concurrency=2)
    assert isinstance(admission.admit("s1", "a1", call(), limits), Lease)
    assert isinstance(admission.admit("s1", "a2", call(), limits), Lease)
    third = admission.admit("s1", "a3", call(), limits)
    assert refused(third, "concurrency_limit")
    assert isinstance(third, Refusal) and third.status == 429


def test_the_agent_limit_refuses_only_that_agent():
    admission, _ = service()
    limits = Limits(space_concurrency=5, agent_concurrency=1)
    assert isinstance(admission.admit("s1", "a1", call(), limits), Lease)
    second = admission.admit("s1", "a1", call(), limits)
    assert refused(second, "agent_concurrency_limit")
    assert isinstance(second, Refusal) and second.status == 429
    assert isinstance(admission.admit("s1", "a2", call(), limits), Lease)


def test_no_limit_admits_any_number_and_a_zero_limit_admits_none():
    admission, _ = service()
    for _ in range(50):
        assert isinstance(admission.admit("s1", "a1", call(), Limits()), Lease)
    assert refused(admission.admit("s2", "a1", call(), Limits(space_concurrency=0)),
                   "concurrency_limit")  # fmt: skip
    assert refused(admission.admit("s3", "a1", call(), Limits(agent_concurrency=0)),
                   "agent_concurrency_limit")  # fmt: skip


def test_a_space_without_credit_or_at_its_cap_is_refused_with_402_and_takes_no_slot():
    admission, _ = service()
    no_credit = admission.admit("s1", "a1", "c1", Limits(space_concurrency=1, credit_ok=False))
    assert refused(no_credit, "insufficient_credit")
    assert isinstance(no_credit, Refusal) and no_credit.status == 402
    at_cap = admission.admit("s1", "a1", "c2", Limits(space_concurrency=1, under_cap=False))
    assert refused(at_cap, "spend_cap_reached")
    assert isinstance(at_cap, Refusal) and at_cap.status == 402
    both = admission.admit("s1", "a1", "c3", Limits(credit_ok=False, under_cap=False))
    assert refused(both, "spend_cap_reached")  # the cap speaks first
    assert isinstance(admission.admit("s1", "a1", "c4", Limits(space_concurrency=1)), Lease)


def test_admitting_the_same_call_twice_returns_the_same_lease_and_holds_one_slot():
    admission, clock = service()
    limits = Limits(space_concurrency=2)
    first = admission.admit("s1", "a1", "c1", limits)
    clock.advance(5)
    assert admission.admit("s1", "a1", "c1", limits) == first
    assert isinstance(admission.admit("s1", "a1", "c2", limits), Lease)
    assert refused(admission.admit("s1", "a1", "c3", limits), "concurrency_limit")


def test_an_admitted_call_is_not_refused_on_a_retry_after_the_money_ran_out():
    admission, _ = service()
    first = admission.admit("s1", "a1", "c1", Limits(space_concurrency=1))
    assert admission.admit("s1", "a1", "c1", Limits(space_concurrency=1, credit_ok=False)) == first


def test_release_gives_the_slot_back_and_is_idempotent():
    admission, _ = service()
    limits = Limits(space_concurrency=1)
    assert isinstance(admission.admit("s1", "a1", "c1", limits), Lease)
    assert refused(admission.admit("s1", "a1", "c2", limits), "concurrency_limit")
    assert admission.release("c1") is True
    assert admission.release("c1") is False
    assert isinstance(admission.admit("s1", "a1", "c2", limits), Lease)


def test_a_lease_not_renewed_expires_and_frees_its_slot():
    admission, clock = service(lease_seconds=120)
    limits = Limits(space_concurrency=1)
    assert isinstance(admission.admit("s1", "a1", "c1", limits), Lease)
    clock.advance(119)
    assert refused(admission.admit("s1", "a1", "c2", limits), "concurrency_limit")
    clock.advance(1)
    assert isinstance(admission.admit("s1", "a1", "c2", limits), Lease)
    assert admission.renew("c1") is None  # too late: its slot is c2's now


def test_renewing_keeps_a_live_call_admitted_past_its_first_expiry():
    admission, clock = service(lease_seconds=120)
    limits = Limits(space_concurrency=1)
    first = admission.admit("s1", "a1", "c1", limits)
    assert isinstance(first, Lease)
    clock.advance(100)
    renewed = admission.renew("c1")
    assert renewed is not None and renewed.expires_at == clock.now + (
        first.expires_at - first.granted_at
    )
    assert renewed.granted_at == first.granted_at
    clock.advance(100)  # 200 s after the start, 100 after the renewal
    assert refused(admission.admit("s1", "a1", "c2", limits), "concurrency_limit")
    assert admission.renew("nobody") is None


def test_a_full_space_does_not_affect_another_space():
    admission, _ = service()
    limits = Limits(space_concurrency=1)
    assert isinstance(admission.admit("s1", "a1", call(), limits), Lease)
    assert refused(admission.admit("s1", "a1", call(), limits), "concurrency_limit")
    assert isinstance(admission.admit("s2", "a1", call(), limits), Lease)


def test_call_and_agent_ids_may_be_uuids():
    admission, _ = service()
    call_id, agent_id = uuid.uuid4(), uuid.uuid4()
    lease = admission.admit("s1", agent_id, call_id, Limits())
    assert isinstance(lease, Lease) and (lease.call_id, lease.agent_id) == (
        str(call_id),
        str(agent_id),
    )
    assert admission.release(call_id) is True


def test_bad_limits_and_lease_times_are_refused_at_once():
    with pytest.raises(ValueError, match="space_concurrency"):
        Limits(space_concurrency=-1)
    with pytest.raises(ValueError, match="agent_concurrency"):
        Limits(agent_concurrency=-2)
    with pytest.raises(ValueError, match="lease_seconds"):
        AdmissionService(MemoryAdmissionStore(), lease_seconds=0)


def test_every_refusal_code_is_a_402_or_429():
    assert {code: status for code, (status, _) in REFUSALS.items()} == {
        "concurrency_limit": 429,
        "agent_concurrency_limit": 429,
        "insufficient_credit": 402,
        "spend_cap_reached": 402,
    }
