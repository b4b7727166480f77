"""The billing write side on the real event store (PostgreSQL): a top-up retried with its
Idempotency-Key records one event, and a usage event redelivered is consumed once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from commands.agents import Actor
from commands.billing import Consume, OpenAccount, TopUp
from domain.billing import billing_account_id
from domain.billing_plans import Plan

pytestmark = pytest.mark.integration

PLAN = Plan.model_validate({
    "id": "pro", "name": "Pro", "price_per_minute": {"web": "0.05"}, "monthly_fee": "30",
    "concurrency_limit": 10, "spend_cap": "100",
})  # fmt: skip


def actor() -> Actor:
    return Actor(space_id=f"space-{uuid.uuid4().hex[:10]}", subject="tester")


def test_a_top_up_retried_with_its_key_is_one_event_on_the_real_store(container):
    who, at = actor(), datetime.now(UTC)
    billing = container.billing
    opened = billing.open_account(who, OpenAccount(plan=PLAN, at=at))
    assert opened.id == billing_account_id(who.space_id) and opened.position is not None
    key = f"pay-{uuid.uuid4().hex}"
    first = billing.top_up(who, TopUp(amount=Decimal("12.345678"), at=at), key)
    again = billing.top_up(who, TopUp(amount=Decimal("12.345678"), at=at), key)
    assert again.replayed and (again.version, again.position) == (first.version, first.position)
    events = list(billing.repository.event_store.get(opened.id))
    kinds = [type(e).TOPIC for e in events]
    assert kinds.count("billing.credits_topped_up") == 1
    assert events[-1].amount == "12.345678"
    fresh = type(billing)(env=billing.env)  # no cache: read back from PostgreSQL
    try:
        assert fresh.get_account(who).balance(at) == Decimal("12.345678")
    finally:
        fresh.close()


def test_a_redelivered_usage_event_is_consumed_once_on_the_real_store(container):
    who, at = actor(), datetime.now(UTC)
    billing = container.billing
    billing.open_account(who, OpenAccount(plan=PLAN, at=at))
    source = str(uuid.uuid4())
    cmd = Consume(source_event_id=source, amount=Decimal("0.25"), seconds=Decimal(300), at=at)
    first = billing.consume(who, cmd)
    again = billing.consume(who, cmd)
    assert again.replayed and again.version == first.version
    account = billing.get_account(who)
    assert account.period_spend == Decimal("0.25") and account.balance(at) == Decimal("-0.25")


def test_the_same_usage_consumed_by_racing_meters_is_one_event(container):
    """Two meters (a redelivery during a rebalance) bill one source at once: one event."""
    who, at = actor(), datetime.now(UTC)
    billing = container.billing
    billing.open_account(who, OpenAccount(plan=PLAN, at=at))
    cmd = Consume(source_event_id=str(uuid.uuid4()), amount=Decimal("1"), at=at)
    barrier, results = threading.Barrier(4), []

    def meter() -> None:
        barrier.wait()
        results.append(billing.consume(who, cmd))

    threads = [threading.Thread(target=meter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and len({r.version for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    events = billing.repository.event_store.get(billing_account_id(who.space_id))
    assert [type(e).TOPIC for e in events].count("billing.credits_consumed") == 1
