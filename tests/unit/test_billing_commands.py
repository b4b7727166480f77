"""The billing write side on in-memory persistence with idempotency keys: one account per space,
top-ups once per key, consumption once per source event, budget crossings once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from commands.agents import Actor
from commands.billing import (
    BillingAccountExists,
    BillingAccountNotFound,
    BillingApplication,
    CancelSubscription,
    ChangePlan,
    Consume,
    EvaluateBudget,
    GrantCredits,
    IdempotencyKeyRequired,
    OpenAccount,
    Refund,
    TopUp,
)
from commands.idempotency import IdempotencyKeyReused
from domain.billing import SubscriptionCancelled, billing_account_id
from domain.billing_plans import InvalidAmount, Plan

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PLAN = Plan.model_validate({
    "id": "pro", "name": "Pro", "price_per_minute": {"web": "0.05"}, "monthly_fee": "30",
    "concurrency_limit": 10, "spend_cap": "10",
})  # fmt: skip


@pytest.fixture
def billing() -> BillingApplication:
    return BillingApplication(env={"PERSISTENCE_MODULE": "tests.fakes.recorder"})


def actor() -> Actor:
    return Actor(space_id=f"space-{uuid.uuid4().hex[:8]}", subject="owner")


def opened(billing: BillingApplication) -> Actor:
    who = actor()
    billing.open_account(who, OpenAccount(plan=PLAN, at=T0))
    return who


def types(billing: BillingApplication, who: Actor) -> list[str]:
    events = billing.repository.event_store.get(billing_account_id(who.space_id))
    return [type(e).TOPIC for e in events]


def test_an_account_is_opened_once_per_space(billing):
    who = actor()
    made = billing.open_account(who, OpenAccount(plan=PLAN, at=T0))
    assert made.id == billing_account_id(who.space_id) and made.version == 2
    with pytest.raises(BillingAccountExists):
        billing.open_account(who, OpenAccount(plan=PLAN, at=T0))
    with pytest.raises(BillingAccountNotFound):
        billing.get_account(actor())


def test_a_top_up_needs_a_key_and_a_replayed_key_tops_up_once(billing):
    who = opened(billing)
    with pytest.raises(IdempotencyKeyRequired):
        billing.top_up(who, TopUp(amount=Decimal("5"), at=T0), None)
    first = billing.top_up(who, TopUp(amount=Decimal("5"), at=T0), "pay-1")
    again = billing.top_up(who, TopUp(amount=Decimal("5"), at=T0), "pay-1")
    assert again.replayed and (again.id, again.version) == (first.id, first.version)
    assert billing.get_account(who).balance(T0) == Decimal("5")
    with pytest.raises(IdempotencyKeyReused):
        billing.top_up(who, TopUp(amount=Decimal("6"), at=T0), "pay-1")


def test_the_same_source_event_is_consumed_once(billing):
    who = opened(billing)
    cmd = Consume(source_event_id="evt-1", amount=Decimal("1.5"), seconds=Decimal(90), at=T0)
    first = billing.consume(who, cmd)
    again = billing.consume(who, cmd)
    assert again.replayed and again.version == first.version
    account = billing.get_account(who)
    assert account.period_spend == Decimal("1.5") and account.period_seconds == Decimal(90)
    assert types(billing, who).count("billing.credits_consumed") == 1
    with pytest.raises(IdempotencyKeyReused):  # a re-priced call is a new source, not an edit
        billing.consume(who, cmd.model_copy(update={"amount": Decimal("2")}))


def test_budget_crossings_are_emitted_once_whatever_is_evaluated_again(billing):
    who = opened(billing)  # cap 10
    billing.consume(who, Consume(source_event_id="a", amount=Decimal("6"), at=T0))
    billing.consume(who, Consume(source_event_id="a", amount=Decimal("6"), at=T0))
    unchanged = billing.evaluate_budget(who, EvaluateBudget(at=T0))
    assert unchanged.version == billing.get_account(who).version
    billing.consume(who, Consume(source_event_id="b", amount=Decimal("5"), at=T0))
    billing.evaluate_budget(who, EvaluateBudget(at=T0))
    crossed = [t for t in types(billing, who) if t.startswith("billing.budget")]
    assert len(crossed) == 3  # 50, 80, 100
    assert types(billing, who).count("billing.cap_reached") == 1


def test_evaluating_after_the_period_ended_rolls_it(billing):
    who = opened(billing)
    billing.evaluate_budget(who, EvaluateBudget(at=T0 + timedelta(days=31)))
    assert types(billing, who).count("billing.period_started") == 2


def test_plan_changes_grants_refunds_and_cancellation(billing):
    who = opened(billing)
    lite = PLAN.model_copy(update={"id": "lite"})
    billing.change_plan(who, ChangePlan(plan=lite, effective="period_boundary", at=T0))
    assert billing.get_account(who).scheduled_plan.id == "lite"
    same = billing.change_plan(who, ChangePlan(plan=lite, effective="period_boundary", at=T0))
    assert same.version == billing.get_account(who).version, "the same change writes nothing"
    billing.grant_credits(
        who, GrantCredits(amount=Decimal("3"), expires_at=T0 + timedelta(days=7), at=T0)
    )
    billing.consume(who, Consume(source_event_id="c", amount=Decimal("2"), at=T0))
    billing.refund(who, Refund(amount=Decimal("2"), source_id="c", at=T0))
    assert billing.get_account(who).balance(T0) == Decimal("3")
    billing.cancel_subscription(who, CancelSubscription(reason="done", at=T0))
    with pytest.raises(SubscriptionCancelled):
        billing.top_up(who, TopUp(amount=Decimal("1"), at=T0), "pay-2")


def test_a_negative_top_up_is_refused_and_writes_nothing(billing):
    who = opened(billing)
    before = types(billing, who)
    with pytest.raises(InvalidAmount):
        billing.top_up(who, TopUp(amount=Decimal("-1"), at=T0), "pay-3")
    assert types(billing, who) == before
    # the key was not used up by the refusal
    billing.top_up(who, TopUp(amount=Decimal("1"), at=T0), "pay-3")
