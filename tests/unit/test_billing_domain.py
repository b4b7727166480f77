"""The BillingAccount aggregate and billing arithmetic, as pure code: given events, when a
command, then events (and money in Decimal to the micro-dollar)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.billing import (
    BillingAccount,
    InvalidGrant,
    PlanChangeMidPeriod,
    RefundExceedsConsumption,
    SubscriptionCancelled,
    billing_account_id,
)
from domain.billing_plans import (
    InvalidAmount,
    InvalidBudget,
    InvalidPlan,
    amount,
    next_period_end,
    prorated_fee_change,
    validated_budget,
    validated_plan,
)
from domain.contract import envelope, topic_for

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
PER_MINUTE = {
    "id": "pro", "name": "Pro", "included_minutes": 10,
    "price_per_minute": {"web": "0.05", "twilio_sip": "0.08"},
    "monthly_fee": "30", "concurrency_limit": 10, "spend_cap": "100",
}  # fmt: skip
MARKUP = {"id": "cost-plus", "name": "Cost plus", "markup_pct": "25", "concurrency_limit": 5}


def plan(**changes: Any) -> dict[str, Any]:
    return {**PER_MINUTE, **changes}


def opened(at: datetime = T0, **changes: Any) -> BillingAccount:
    account = BillingAccount.open("space-1", plan(**changes), at, "owner")
    account.collect_events()
    return account


def topics(account: BillingAccount) -> list[str]:
    return [e.TOPIC for e in account.collect_events()]


def replayed(account: BillingAccount, events: list[Any]) -> BillingAccount:
    copy: Any = None
    for event in events:
        copy = event.mutate(copy)
    return copy  # type: ignore[no-any-return]


# -- plans and pricing ------------------------------------------------------------------------
def test_a_per_minute_plan_prices_each_channel_after_the_included_minutes():
    pro = validated_plan(PER_MINUTE)
    # 3 minutes on the web, 1 minute of them still included: 2 billable minutes at 0.05
    assert pro.price("web", Decimal(180), Decimal("0.9"), Decimal(60)) == Decimal("0.100000")
    assert pro.price("twilio_sip", Decimal(90), Decimal(0), Decimal(0)) == Decimal("0.120000")
    assert pro.price("web", Decimal(100), Decimal(0), Decimal(600)) == Decimal("0.000000")
    with pytest.raises(InvalidPlan, match="no price for channel 'voximplant'"):
        pro.price("voximplant", Decimal(60), Decimal(0), Decimal(0))


def test_a_markup_plan_prices_the_provider_cost_plus_its_percent_rounded_to_the_micro_dollar():
    cost_plus = validated_plan(MARKUP)
    assert cost_plus.price("sip", Decimal(60), Decimal("0.012345"), Decimal(0)) == Decimal(
        "0.015431"
    )  # 0.01543125 rounded half-up
    # half the seconds are included: half the marked-up cost
    assert cost_plus.price("web", Decimal(120), Decimal("0.08"), Decimal(60)) == Decimal("0.05")


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"markup_pct": "10"}, "exactly one"),
        ({"price_per_minute": None}, "exactly one"),
        ({"price_per_minute": {"fax": "0.1"}}, "price_per_minute.fax"),
        ({"price_per_minute": {"web": "-0.1"}}, "greater than zero"),
        ({"monthly_fee": "1.0000001"}, "6 decimal places"),
        ({"spend_cap": "0"}, "greater than zero"),
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({"per_agent_concurrency_limit": 11}, "exceeds concurrency_limit"),
        ({"id": "Not A Slug"}, "id"),
    ],
)
def test_an_invalid_plan_is_refused_with_a_stable_code(bad, problem):
    with pytest.raises(InvalidPlan, match=problem) as caught:
        validated_plan(plan(**bad))
    assert caught.value.code == "invalid_plan"


def test_budget_thresholds_default_to_50_80_100_and_must_be_percents():
    assert validated_budget(None).thresholds == [50, 80, 100]
    assert validated_budget({"thresholds": [90, 25, 90]}).thresholds == [25, 90]
    with pytest.raises(InvalidBudget) as caught:
        validated_budget({"thresholds": [0, 120]})
    assert caught.value.code == "invalid_budget"


@pytest.mark.parametrize(
    "value, problem",
    [
        ("-5", "greater than zero"),
        ("0", "greater than zero"),
        ("0.0000001", "6 decimal places"),
        (0.1, "not a float"),
        ("ten", "not a decimal"),
        ("NaN", "finite"),
    ],
)
def test_an_amount_is_positive_exact_and_at_most_micro_dollars(value, problem):
    with pytest.raises(InvalidAmount, match=problem) as caught:
        amount(value)
    assert caught.value.code == "invalid_amount"


def test_amounts_keep_six_decimal_places():
    assert str(amount("12.5")) == "12.500000"
    assert str(amount(3)) == "3.000000"


# -- periods and proration -----------------------------------------------------------------
def test_periods_are_calendar_months_anchored_on_the_opening_day():
    jan31 = datetime(2026, 1, 31, tzinfo=UTC)
    feb = next_period_end(jan31, 31)
    assert feb == datetime(2026, 2, 28, tzinfo=UTC)
    assert next_period_end(feb, 31) == datetime(2026, 3, 31, tzinfo=UTC)
    assert next_period_end(datetime(2026, 12, 5, tzinfo=UTC)) == datetime(2027, 1, 5, tzinfo=UTC)


def test_a_plan_changed_at_once_prorates_the_fee_by_the_days_remaining():
    start, end = datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)  # 30 days
    at = datetime(2026, 4, 21, 12, tzinfo=UTC)  # 9.5 days left: a started day counts, 10
    assert prorated_fee_change(Decimal(30), Decimal(90), start, end, at) == Decimal("20.000000")
    assert prorated_fee_change(Decimal(90), Decimal(30), start, end, at) == Decimal("-20.000000")
    assert prorated_fee_change(Decimal(10), Decimal(20), start, end, start) == Decimal("10.000000")
    assert prorated_fee_change(Decimal(0), Decimal(10), start, end, at) == Decimal("3.333333")


def test_a_change_at_once_records_the_proration_and_applies_the_plan():
    account = opened(at=datetime(2026, 4, 1, tzinfo=UTC))
    proration = account.change_plan(
        plan(id="max", monthly_fee="90"), "now", datetime(2026, 4, 21, 12, tzinfo=UTC), "owner"
    )
    (event,) = account.collect_events()
    assert event.TOPIC == "billing.plan_changed"
    assert (event.effective, event.proration, event.previous_plan_id) == ("now", "20.000000", "pro")
    assert proration == Decimal("20") and account.plan.id == "max"


def test_a_change_at_the_boundary_is_scheduled_and_applied_when_the_period_rolls():
    account = opened()
    account.change_plan(plan(id="lite", monthly_fee="5"), "period_boundary", T0, "owner")
    (event,) = account.collect_events()
    assert (event.effective, event.proration, event.effective_at) == (
        "period_boundary", "0.000000", "2026-02-10T09:00:00.000000+00:00",
    )  # fmt: skip
    assert account.plan.id == "pro" and account.scheduled_plan.id == "lite"
    account.top_up("1", T0 + timedelta(days=40), "owner")  # in the next period
    events = account.collect_events()
    started = [e for e in events if e.TOPIC == "billing.period_started"]
    assert [e.plan["id"] for e in started] == ["lite"]  # one roll: Feb 10 - Mar 10
    assert (started[0].monthly_fee, started[0].actor) == ("5.000000", "system")
    assert account.plan.id == "lite" and account.scheduled_plan is None


def test_changing_to_the_plan_the_space_has_records_nothing():
    account = opened()
    assert account.change_plan(plan(), "now", T0, "owner") == 0
    account.change_plan(plan(id="lite"), "period_boundary", T0, "owner")
    account.change_plan(plan(id="lite"), "period_boundary", T0, "owner")
    assert topics(account) == ["billing.plan_changed"]
    account.change_plan(plan(), "now", T0, "owner")  # back to pro at once: drops the schedule
    assert topics(account) == ["billing.plan_changed"]
    assert account.plan.id == "pro" and account.scheduled_plan is None


def test_a_plan_that_forbids_mid_period_changes_refuses_one_and_nothing_changes():
    account = opened(allow_mid_period_change=False)
    with pytest.raises(PlanChangeMidPeriod) as caught:
        account.change_plan(plan(id="max"), "now", T0 + timedelta(days=3), "owner")
    assert caught.value.code == "plan_change_mid_period"
    assert topics(account) == [] and account.plan.id == "pro"
    account.change_plan(plan(id="max"), "period_boundary", T0, "owner")
    assert topics(account) == ["billing.plan_changed"]


def test_a_cancelled_subscription_takes_no_change_top_up_or_grant():
    account = opened()
    account.cancel(T0, "owner", "moving on")
    assert topics(account) == ["billing.subscription_cancelled"]
    for attempt in (
        lambda: account.change_plan(plan(id="max"), "now", T0, "owner"),
        lambda: account.top_up("10", T0, "owner"),
        lambda: account.grant("10", T0 + timedelta(days=1), T0, "owner"),
        lambda: account.cancel(T0, "owner"),
    ):
        with pytest.raises(SubscriptionCancelled) as caught:
            attempt()
        assert caught.value.code == "subscription_cancelled"
    assert topics(account) == []
    account.roll_period(T0 + timedelta(days=400))
    assert topics(account) == [], "no new period after a cancellation"


# -- the wallet -------------------------------------------------------------------------------
def test_usage_within_the_included_minutes_is_consumed_at_zero_and_counts_its_seconds():
    account = opened(included_minutes=2)
    pro = account.plan
    price = pro.price("web", Decimal(90), Decimal(0), account.included_seconds_left())
    assert price == 0
    assert account.consume("u1", price, T0, "meter", seconds=90) == {"top_ups": "0.000000"}
    assert account.included_seconds_left() == Decimal(30)
    price = pro.price("web", Decimal(90), Decimal(0), account.included_seconds_left())
    assert price == Decimal("0.050000")  # one billable minute
    with pytest.raises(InvalidAmount, match="amount or seconds"):
        account.consume("u2", "0", T0, "meter")


def test_consumption_takes_the_grant_expiring_first_then_the_next_then_top_ups():
    account = opened(spend_cap=None)
    account.top_up("10", T0, "owner")
    late = account.grant("3", T0 + timedelta(days=20), T0, "owner")
    early = account.grant("2", T0 + timedelta(days=5), T0, "owner")
    drawn = account.consume("usage-1", "4.5", T0 + timedelta(days=1), "meter", seconds=60)
    assert drawn == {early: "2.000000", late: "2.500000", "top_ups": "0.000000"}
    drawn = account.consume("usage-2", "1.25", T0 + timedelta(days=2), "meter")
    assert drawn == {late: "0.500000", "top_ups": "0.750000"}
    assert account.balance(T0 + timedelta(days=2)) == Decimal("9.250000")
    assert all(isinstance(v, Decimal) for v in (account.top_ups, account.period_spend))


def test_an_expired_grant_neither_counts_in_the_balance_nor_pays_for_usage():
    account = opened(spend_cap=None)
    account.top_up("1", T0, "owner")
    account.grant("5", T0 + timedelta(days=1), T0, "owner")
    assert account.balance(T0) == Decimal("6")
    later = T0 + timedelta(days=2)
    assert account.balance(later) == Decimal("1")
    assert account.consume("u", "1.5", later, "meter") == {"top_ups": "1.500000"}
    assert account.balance(later) == Decimal("-0.500000"), "usage that happened is recorded"


def test_the_balance_is_top_ups_plus_grants_minus_consumption_plus_refunds_exactly():
    account = opened(spend_cap=None)
    for _ in range(10):
        account.top_up("0.1", T0, "owner")  # ten times 0.1 is exactly 1 in Decimal
    account.grant("0.333333", T0 + timedelta(days=9), T0, "owner")
    account.consume("u1", "0.2", T0, "meter")
    account.consume("u2", "0.000001", T0, "meter")
    account.refund("0.1", T0, "support", source_id="u1")
    assert account.balance(T0) == Decimal("1.233332")
    with pytest.raises(RefundExceedsConsumption) as caught:
        account.refund("0.100002", T0, "support")  # 0.100001 is left to refund
    assert caught.value.code == "refund_exceeds_consumption"


def test_bad_wallet_input_is_refused_with_a_code_and_changes_nothing():
    account = opened()
    account.top_up("5", T0, "owner")
    account.collect_events()
    before = (account.version, account.balance(T0), account.period_spend)
    for attempt, code in (
        (lambda: account.top_up("-5", T0, "owner"), "invalid_amount"),
        (lambda: account.top_up("0", T0, "owner"), "invalid_amount"),
        (lambda: account.top_up("1.0000001", T0, "owner"), "invalid_amount"),
        (lambda: account.consume("u", "-1", T0, "meter"), "invalid_amount"),
        (lambda: account.consume("", "1", T0, "meter"), "invalid_amount"),
        (lambda: account.grant("1", T0, T0, "owner"), "invalid_grant"),
        (lambda: account.refund("1", T0, "owner"), "refund_exceeds_consumption"),
        (lambda: account.change_plan({"id": "x"}, "now", T0, "owner"), "invalid_plan"),
    ):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the code is what matters
            attempt()
        assert getattr(caught.value, "code", None) == code
    # a refusal long after the period ended must not roll the period either
    with pytest.raises(InvalidAmount):
        account.consume("u", "0", T0 + timedelta(days=90), "meter")
    assert topics(account) == []
    assert (account.version, account.balance(T0), account.period_spend) == before
    assert isinstance(InvalidGrant("x"), Exception)


# -- budgets ---------------------------------------------------------------------------------
def test_each_threshold_is_crossed_once_per_period_and_the_cap_once():
    account = opened()  # cap 100, thresholds 50/80/100
    account.consume("u1", "49.999999", T0, "meter")
    assert topics(account) == ["billing.credits_consumed"]
    account.consume("u2", "0.000001", T0, "meter")  # exactly 50 %
    events = account.collect_events()
    assert [(e.TOPIC, getattr(e, "threshold", None)) for e in events] == [
        ("billing.credits_consumed", None), ("billing.budget_threshold_crossed", 50),
    ]  # fmt: skip
    assert (events[1].spend, events[1].cap) == ("50.000000", "100.000000")
    account.consume("u3", "1", T0, "meter")
    assert topics(account) == ["billing.credits_consumed"], "50 % is not crossed twice"
    account.consume("u4", "60", T0, "meter")  # 111: 80 and 100 at once, and the cap
    events = account.collect_events()
    assert [e.TOPIC for e in events] == [
        "billing.credits_consumed", "billing.budget_threshold_crossed",
        "billing.budget_threshold_crossed", "billing.cap_reached",
    ]  # fmt: skip
    assert [events[1].threshold, events[2].threshold] == [80, 100]
    assert (events[3].policy, events[3].spend) == ("refuse_new", "111.000000")
    account.consume("u5", "10", T0, "meter")
    assert account.evaluate_budget(T0) == []
    assert topics(account) == ["billing.credits_consumed"], "the cap is reached once"


def test_a_new_period_crosses_its_thresholds_again():
    account = opened()
    account.consume("u1", "55", T0, "meter")
    account.collect_events()
    next_month = T0 + timedelta(days=32)
    account.consume("u2", "55", next_month, "meter")
    assert topics(account) == [
        "billing.period_started", "billing.credits_consumed", "billing.budget_threshold_crossed",
    ]  # fmt: skip
    assert account.period_spend == Decimal("55")


def test_a_refund_lowers_the_period_spend_without_crossing_a_threshold_again():
    account = opened()
    account.consume("u1", "85", T0, "meter")
    account.refund("40", T0, "support", source_id="u1")
    account.consume("u2", "10", T0, "meter")
    crossings = [e.threshold for e in account.collect_events() if hasattr(e, "threshold")]
    assert crossings == [50, 80]


def test_lowering_the_cap_at_once_emits_the_crossings_it_implies():
    account = opened()
    account.consume("u1", "30", T0, "meter")
    account.collect_events()
    account.change_plan(plan(spend_cap="40"), "now", T0, "owner")
    assert topics(account) == [
        "billing.plan_changed", "billing.budget_threshold_crossed",
    ]  # fmt: skip


def test_end_calls_policy_is_carried_by_the_cap_event():
    account = BillingAccount.open(
        "space-1", plan(spend_cap="1"), T0, "owner", {"cap_policy": "end_calls"}
    )
    account.consume("u1", "1", T0, "meter")
    (cap,) = [e for e in account.collect_events() if e.TOPIC == "billing.cap_reached"]
    assert cap.policy == "end_calls"


def test_no_cap_means_no_budget_events():
    account = opened(spend_cap=None)
    account.consume("u1", "1000", T0, "meter")
    assert topics(account) == ["billing.credits_consumed"]


# -- identity, replay, envelopes --------------------------------------------------------------
def test_the_account_of_a_space_has_an_id_derived_from_the_space():
    account = BillingAccount.open("space-7", PER_MINUTE, T0, "owner")
    assert account.id == billing_account_id("space-7") != billing_account_id("space-8")
    assert topics(account) == ["billing.account_opened", "billing.period_started"]


def test_replaying_the_events_rebuilds_the_same_wallet_and_budget_state():
    account = BillingAccount.open("space-1", PER_MINUTE, T0, "owner")
    account.top_up("20", T0, "owner")
    account.grant("5", T0 + timedelta(days=3), T0, "owner")
    account.consume("u1", "60", T0 + timedelta(days=1), "meter", seconds=120)
    account.refund("2", T0 + timedelta(days=1), "support")
    account.change_plan(plan(id="lite"), "period_boundary", T0, "owner")
    account.consume("u2", "1", T0 + timedelta(days=35), "meter")
    copy = replayed(account, account.collect_events())
    for name in ("top_ups", "grants", "period_spend", "period_seconds", "crossed", "plan",
                 "period_start", "period_end", "consumed", "refunded", "version"):  # fmt: skip
        assert getattr(copy, name) == getattr(account, name), name


def test_billing_events_go_to_the_billing_topic_with_money_as_strings():
    account = BillingAccount.open("space-1", PER_MINUTE, T0, "owner")
    account.top_up("12.5", T0, "owner")
    env = envelope(account.collect_events()[-1], position=3)
    assert env["type"] == "billing.credits_topped_up"
    assert topic_for(env["type"]) == "voxagent.billing.v1"
    assert env["data"]["amount"] == "12.500000"
    assert env["space_id"] == "space-1"


def test_billing_events_can_be_subscribed_to_by_webhooks():
    from domain.catalogue import check_event_pattern

    assert check_event_pattern("billing.*") == "billing.*"
    assert check_event_pattern("billing.cap_reached") == "billing.cap_reached"
    with pytest.raises(ValueError, match="billing has"):
        check_event_pattern("billing.paid")
