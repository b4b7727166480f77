"""The BillingAccount aggregate: one per space (its id is ``billing_account_id(space_id)``, so it
is found without a lookup). It holds the space's plan and subscription, its billing periods, a
prepaid credit wallet and its budget.

- **Subscription.** Opened on a plan (``billing.account_opened``, then
  ``billing.period_started``). A plan change is either at once (``effective: "now"``, the fee
  difference prorated, see ``domain.billing_plans``; refused with ``plan_change_mid_period`` when
  the current plan says ``allow_mid_period_change: false``) or at the next period boundary
  (``effective: "period_boundary"``: recorded as scheduled, applied by the
  ``billing.period_started`` that rolls the period); a change at once drops a scheduled one,
  and changing to the plan the space has (or will have) records nothing. Cancelled at once
  (``billing.subscription_cancelled``): no plan change, top-up, grant or new period after that;
  usage already under way is still consumed and refunds still apply.
- **Periods.** Calendar months from the opening. Every command that says when it happens
  (``at``) first rolls the periods that ended before it (``roll_period``), so state is never
  stale; a period's spend, included seconds and budget crossings start at zero.
- **Wallet.** Balance = top-ups + unexpired grants - consumption + refunds. Consumption draws
  from the grants that expire first (earliest ``expires_at``, then grant id), then from
  top-ups; when credit runs out, top-ups go negative (usage that happened is always recorded;
  admission refuses new calls). Refunds go to the top-up credit. A grant expires silently: the
  balance at a moment ignores grants expired by then. The event records exactly what each
  consumption drew from where, so a replay never recomputes it.
- **Budget.** Thresholds are percents of the plan's ``spend_cap`` (default 50/80/100);
  ``billing.budget_threshold_crossed`` is emitted once per threshold per period, and
  ``billing.cap_reached`` (with the policy: ``refuse_new`` or ``end_calls``) once per period
  when the period's spend reaches the cap. No cap: no budget events.

Money in events is a string with 6 decimal places; moments are ISO 8601 UTC strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.billing_plans import (
    Budget,
    InvalidAmount,
    InvalidPlan,
    Plan,
    amount,
    iso,
    moment,
    money_text,
    next_period_end,
    parse_money,
    prorated_fee_change,
    quantize,
    validated_budget,
    validated_plan,
)
from domain.errors import DomainError

_NAMESPACE = UUID("0b7f6f0e-3c2a-5d43-9e55-6a1e2f4c9d10")
ZERO = quantize(Decimal(0))
MAX_ROLLED_PERIODS = 120  # ten years of idleness caught up in one command, at most
Effective = Literal["now", "period_boundary"]


class SubscriptionCancelled(DomainError):
    code = "subscription_cancelled"


class PlanChangeMidPeriod(DomainError):
    code = "plan_change_mid_period"


class InvalidGrant(DomainError):
    code = "invalid_grant"


class RefundExceedsConsumption(DomainError):
    code = "refund_exceeds_consumption"


def billing_account_id(space_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"billing\x1f{space_id}")


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class BillingEvent(Aggregate.Event):
    space_id: str
    actor: str


class BillingAccount(Aggregate):
    TOPIC = "voxagent.BillingAccount"

    class Created(Aggregate.Created):
        TOPIC = "billing.account_opened"
        SCHEMA_VERSION = 1
        space_id: str
        plan: dict[str, Any]
        budget: dict[str, Any]
        at: str
        actor: str

        def apply(self, aggregate: Any) -> None:
            aggregate.opened(self)

    class PlanChanged(BillingEvent):
        TOPIC = "billing.plan_changed"
        SCHEMA_VERSION = 1
        plan: dict[str, Any]
        previous_plan_id: str
        effective: str
        effective_at: str
        proration: str
        at: str

        def apply(self, aggregate: Any) -> None:
            plan = Plan.model_validate(self.plan)
            if self.effective == "now":
                aggregate.plan, aggregate.scheduled_plan = plan, None
            else:
                aggregate.scheduled_plan = plan

    class SubscriptionCancelled(BillingEvent):
        TOPIC = "billing.subscription_cancelled"
        SCHEMA_VERSION = 1
        reason: str | None
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status, aggregate.scheduled_plan = "cancelled", None

    class PeriodStarted(BillingEvent):
        TOPIC = "billing.period_started"
        SCHEMA_VERSION = 1
        period_start: str
        period_end: str
        plan: dict[str, Any]
        monthly_fee: str

        def apply(self, aggregate: Any) -> None:
            aggregate.period_start = moment(self.period_start)
            aggregate.period_end = moment(self.period_end)
            aggregate.plan, aggregate.scheduled_plan = Plan.model_validate(self.plan), None
            aggregate.period_spend = ZERO
            aggregate.period_seconds = Decimal(0)
            aggregate.crossed, aggregate.cap_reached = set(), False

    class CreditsToppedUp(BillingEvent):
        TOPIC = "billing.credits_topped_up"
        SCHEMA_VERSION = 1
        amount: str
        reference: str | None
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.top_ups += parse_money(self.amount)

    class CreditsGranted(BillingEvent):
        TOPIC = "billing.credits_granted"
        SCHEMA_VERSION = 1
        grant_id: str
        amount: str
        expires_at: str
        reason: str | None
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.grants[self.grant_id] = [parse_money(self.amount), moment(self.expires_at)]

    class CreditsConsumed(BillingEvent):
        TOPIC = "billing.credits_consumed"
        SCHEMA_VERSION = 1
        source_id: str
        amount: str
        seconds: str
        from_grants: dict[str, str]
        from_top_ups: str
        at: str

        def apply(self, aggregate: Any) -> None:
            for grant_id, drawn in self.from_grants.items():
                aggregate.grants[grant_id][0] -= parse_money(drawn)
            aggregate.top_ups -= parse_money(self.from_top_ups)
            aggregate.period_spend += parse_money(self.amount)
            aggregate.period_seconds += Decimal(self.seconds)
            aggregate.consumed += parse_money(self.amount)

    class CreditsRefunded(BillingEvent):
        TOPIC = "billing.credits_refunded"
        SCHEMA_VERSION = 1
        amount: str
        source_id: str | None
        reason: str | None
        at: str

        def apply(self, aggregate: Any) -> None:
            refunded = parse_money(self.amount)
            aggregate.top_ups += refunded
            aggregate.refunded += refunded
            aggregate.period_spend = max(ZERO, aggregate.period_spend - refunded)

    class BudgetThresholdCrossed(BillingEvent):
        TOPIC = "billing.budget_threshold_crossed"
        SCHEMA_VERSION = 1
        threshold: int
        spend: str
        cap: str
        period_start: str
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.crossed.add(self.threshold)

    class CapReached(BillingEvent):
        TOPIC = "billing.cap_reached"
        SCHEMA_VERSION = 1
        policy: str
        spend: str
        cap: str
        period_start: str
        at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.cap_reached = True

    # -- state -------------------------------------------------------------------------------
    def opened(self, event: BillingAccount.Created) -> None:
        self.space_id = event.space_id
        self.plan: Plan = Plan.model_validate(event.plan)
        self.budget: Budget = Budget.model_validate(event.budget)
        self.status = "active"
        self.scheduled_plan: Plan | None = None
        self.period_start = self.period_end = moment(event.at)
        self.anchor_day = self.period_start.day
        self.period_spend = ZERO
        self.period_seconds = Decimal(0)
        self.crossed: set[int] = set()
        self.cap_reached = False
        self.top_ups = ZERO
        self.grants: dict[str, list[Any]] = {}  # grant id -> [remaining, expires_at]
        self.consumed = ZERO
        self.refunded = ZERO

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def balance(self, at: datetime) -> Decimal:
        """Top-up credit plus what is left of the grants unexpired at ``at``."""
        at = _utc(at)
        return self.top_ups + sum(
            (left for left, expires in self.grants.values() if expires > at), ZERO
        )

    def included_seconds_left(self) -> Decimal:
        return max(Decimal(0), Decimal(self.plan.included_minutes * 60) - self.period_seconds)

    # -- commands ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls, space_id: str, plan: Plan | dict[str, Any], at: datetime, actor: str,
        budget: Budget | dict[str, Any] | None = None,
    ) -> BillingAccount:  # fmt: skip
        chosen, limits, start = validated_plan(plan), validated_budget(budget), _utc(at)
        account = cls._create(
            cls.Created, id=billing_account_id(space_id), space_id=space_id,
            plan=chosen.as_data(), budget=limits.as_data(), at=iso(start), actor=actor,
        )  # fmt: skip
        account._start_period(start, chosen, actor)
        return account

    def roll_period(self, at: datetime, actor: str = "system") -> int:
        """Start the periods that began by ``at`` (applying a scheduled plan); how many. A roll
        is the calendar's doing, whichever command noticed it: its actor is ``system``."""
        at, rolled = _utc(at), 0
        while not self.cancelled and at >= self.period_end and rolled < MAX_ROLLED_PERIODS:
            self._start_period(self.period_end, self.scheduled_plan or self.plan, actor)
            rolled += 1
        return rolled

    def change_plan(
        self, plan: Plan | dict[str, Any], effective: Effective, at: datetime, actor: str
    ) -> Decimal:
        """Change the plan at once or at the period boundary; the prorated fee difference
        (zero at the boundary)."""
        chosen, at = validated_plan(plan), _utc(at)
        self._ensure_active()
        if effective not in ("now", "period_boundary"):
            raise InvalidPlan(f"effective must be 'now' or 'period_boundary', not {effective!r}")
        if effective == "now" and not self.plan.allow_mid_period_change:
            raise PlanChangeMidPeriod(
                f"plan {self.plan.id!r} cannot be changed mid-period; change it at the period "
                f"boundary ({iso(self.period_end)})"
            )
        self.roll_period(at)
        if chosen == (self.scheduled_plan or self.plan):
            return ZERO  # that plan is what the space has (or will have) already: no event
        proration = ZERO
        if effective == "now":
            proration = prorated_fee_change(
                self.plan.monthly_fee, chosen.monthly_fee, self.period_start, self.period_end, at
            )
        self.trigger_event(
            self.PlanChanged, space_id=self.space_id, plan=chosen.as_data(),
            previous_plan_id=self.plan.id, effective=effective,
            effective_at=iso(at if effective == "now" else self.period_end),
            proration=money_text(proration), at=iso(at), actor=actor,
        )  # fmt: skip
        if effective == "now":
            self.evaluate_budget(at, actor)
        return proration

    def cancel(self, at: datetime, actor: str, reason: str | None = None) -> None:
        at = _utc(at)
        self._ensure_active()
        self.roll_period(at)
        self.trigger_event(
            self.SubscriptionCancelled, space_id=self.space_id, reason=reason, at=iso(at),
            actor=actor,
        )  # fmt: skip

    def top_up(
        self, value: Decimal | str, at: datetime, actor: str, reference: str | None = None
    ) -> None:
        money, at = amount(value, "top-up amount"), _utc(at)
        self._ensure_active()
        self.roll_period(at)
        self.trigger_event(
            self.CreditsToppedUp, space_id=self.space_id, amount=money_text(money),
            reference=reference, at=iso(at), actor=actor,
        )  # fmt: skip

    def grant(
        self, value: Decimal | str, expires_at: datetime, at: datetime, actor: str,
        reason: str | None = None,
    ) -> str:  # fmt: skip
        """Grant credits that expire at ``expires_at``; the grant's id."""
        money, at, expires = amount(value, "grant amount"), _utc(at), _utc(expires_at)
        if expires <= at:
            raise InvalidGrant(
                f"a grant must expire after it is made ({iso(at)}), not {iso(expires)}"
            )
        self._ensure_active()
        self.roll_period(at)
        grant_id = str(uuid5(self.id, f"grant\x1f{self.version + 1}"))
        self.trigger_event(
            self.CreditsGranted, space_id=self.space_id, grant_id=grant_id,
            amount=money_text(money), expires_at=iso(expires), reason=reason, at=iso(at),
            actor=actor,
        )  # fmt: skip
        return grant_id

    def consume(
        self, source_id: str, value: Decimal | str, at: datetime, actor: str,
        seconds: Decimal | int = 0,
    ) -> dict[str, str]:  # fmt: skip
        """Draw ``value`` for usage ``source_id``: from the grants that expire first, then
        top-ups. What came from where (``{grant id or "top_ups": amount}``). ``seconds`` count
        against the included minutes: usage they cover entirely is consumed at zero. That a
        source is consumed once is the command side's rule (its key)."""
        money, at = amount(value, "consumed amount", zero_ok=True), _utc(at)
        if money == 0 and Decimal(seconds) <= 0:
            raise InvalidAmount("a consumption needs an amount or seconds greater than zero")
        if not source_id or len(source_id) > 255:
            raise InvalidAmount("a consumption needs the id of its source event (1-255 characters)")
        if Decimal(seconds) < 0:
            raise InvalidAmount("seconds cannot be negative")
        self.roll_period(at)
        left, drawn = money, {}
        live = sorted(
            (expires, grant_id, remaining)
            for grant_id, (remaining, expires) in self.grants.items()
            if expires > at and remaining > 0
        )
        for _expires, grant_id, remaining in live:
            if left == 0:
                break
            take = min(left, remaining)
            drawn[grant_id], left = money_text(take), left - take
        self.trigger_event(
            self.CreditsConsumed, space_id=self.space_id, source_id=source_id,
            amount=money_text(money), seconds=str(Decimal(seconds)), from_grants=drawn,
            from_top_ups=money_text(left), at=iso(at), actor=actor,
        )  # fmt: skip
        self.evaluate_budget(at, actor)
        return {**drawn, "top_ups": money_text(left)}

    def refund(
        self, value: Decimal | str, at: datetime, actor: str, source_id: str | None = None,
        reason: str | None = None,
    ) -> None:  # fmt: skip
        money, at = amount(value, "refund amount"), _utc(at)
        if money > self.consumed - self.refunded:
            raise RefundExceedsConsumption(
                f"a refund of {money} exceeds what was consumed and not refunded "
                f"({money_text(self.consumed - self.refunded)})"
            )
        self.roll_period(at)
        self.trigger_event(
            self.CreditsRefunded, space_id=self.space_id, amount=money_text(money),
            source_id=source_id, reason=reason, at=iso(at), actor=actor,
        )  # fmt: skip

    def evaluate_budget(self, at: datetime, actor: str = "system") -> list[int]:
        """Emit the crossings (and the cap) the period's spend has reached and that this period
        has not yet emitted; the thresholds crossed now."""
        at = _utc(at)
        cap = self.plan.spend_cap
        if cap is None:
            return []
        crossed = []
        for threshold in self.budget.thresholds:
            if threshold not in self.crossed and self.period_spend * 100 >= cap * threshold:
                self.trigger_event(
                    self.BudgetThresholdCrossed, space_id=self.space_id, threshold=threshold,
                    spend=money_text(self.period_spend), cap=money_text(cap),
                    period_start=iso(self.period_start), at=iso(at), actor=actor,
                )  # fmt: skip
                crossed.append(threshold)
        if not self.cap_reached and self.period_spend >= cap:
            self.trigger_event(
                self.CapReached, space_id=self.space_id, policy=self.budget.cap_policy,
                spend=money_text(self.period_spend), cap=money_text(cap),
                period_start=iso(self.period_start), at=iso(at), actor=actor,
            )  # fmt: skip
        return crossed

    def _start_period(self, start: datetime, plan: Plan, actor: str) -> None:
        self.trigger_event(
            self.PeriodStarted, space_id=self.space_id, period_start=iso(start),
            period_end=iso(next_period_end(start, self.anchor_day)), plan=plan.as_data(),
            monthly_fee=money_text(plan.monthly_fee), actor=actor,
        )  # fmt: skip

    def _ensure_active(self) -> None:
        if self.cancelled:
            raise SubscriptionCancelled(
                f"the subscription of space {self.space_id} was cancelled; its plan and "
                "credits cannot change any more"
            )


__all__ = [
    "BillingAccount",
    "InvalidGrant",
    "PlanChangeMidPeriod",
    "RefundExceedsConsumption",
    "SubscriptionCancelled",
    "billing_account_id",
]
