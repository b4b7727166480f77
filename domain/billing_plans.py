"""Billing value types and pure arithmetic: money, plans, budgets, periods, proration, pricing.

Money is ``Decimal`` US dollars with at most 6 decimal places (micro-dollars), never a float.
Events carry money as canonical strings (``"12.500000"``) so that their JSON, the Kafka envelope
and every read model hold exactly the same value; ``money_text`` writes them, ``parse_money``
reads them back. Arithmetic results are rounded half-up to the micro-dollar (``quantize``).

Pricing (``Plan.price``): a plan prices a call either per minute by channel (``price_per_minute``)
or as a markup over the provider cost (``markup_pct``). Included minutes waive the price of the
seconds they cover: per minute, ``rate * billable_seconds / 60``; with a markup, the marked-up
provider cost times the billable share of the call's seconds.

Periods are calendar months from the subscription's start (``next_period_end``: the same day and
time a month later, clamped to the last day of a shorter month; the day of the opening stays the
anchor, so Jan 31 -> Feb 28 -> Mar 31).

Proration (``prorated_fee_change``), for a plan changed at once mid-period: the difference of the
monthly fees times ``days_remaining / days_in_period``, where ``days_in_period`` is the period's
length in whole days and ``days_remaining`` the days from the change to the period's end, a
started day counting as a whole one (a change on the first day charges the whole difference).
Positive: owed by the customer; negative: owed to the customer. The figure is recorded on
``billing.plan_changed`` for the invoice; the wallet is not touched.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.calls import CHANNELS
from domain.errors import DomainError
from domain.text import Storable

MICRO = Decimal("0.000001")
MAX_MONEY = Decimal("1000000000")  # a billion dollars: no single amount is larger
DEFAULT_THRESHOLDS = (50, 80, 100)
CapPolicy = Literal["refuse_new", "end_calls"]
Channel = Literal["web", "twilio_sip", "twilio_media_streams", "voximplant", "sip"]
assert set(Channel.__args__) == set(CHANNELS)  # type: ignore[attr-defined]


class InvalidPlan(DomainError):
    code = "invalid_plan"


class InvalidAmount(DomainError):
    code = "invalid_amount"


class InvalidBudget(DomainError):
    code = "invalid_budget"


# -- money -----------------------------------------------------------------------------------
def quantize(value: Decimal) -> Decimal:
    return value.quantize(MICRO, rounding=ROUND_HALF_UP)


def money_text(value: Decimal) -> str:
    return str(quantize(value))


def parse_money(text: str) -> Decimal:
    return Decimal(text)


def amount(value: Decimal | str | int, what: str = "amount", zero_ok: bool = False) -> Decimal:
    """A positive amount of money (``zero_ok``: or zero), exactly as given (at most 6 decimal
    places); otherwise ``InvalidAmount`` saying what is wrong. Floats are refused: they are
    not exact."""
    if isinstance(value, (float, bool)):
        raise InvalidAmount(f"{what} must be a decimal string such as '10.50', not a float")
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f"{what} {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise InvalidAmount(f"{what} must be a finite number")
    if number < 0 or (number == 0 and not zero_ok):
        raise InvalidAmount(f"{what} must be greater than zero, not {number}")
    if number > MAX_MONEY:
        raise InvalidAmount(f"{what} {number} is larger than {MAX_MONEY}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise InvalidAmount(f"{what} {number} has more than 6 decimal places (micro-dollars)")
    return quantize(number)


def _money_field(value: Decimal | None, what: str, zero_ok: bool = True) -> Decimal | None:
    if value is None:
        return None
    if value == 0 and zero_ok:
        return quantize(value)
    try:
        return amount(value, what)
    except InvalidAmount as exc:  # pydantic reports ValueErrors as validation errors
        raise ValueError(exc.message) from None


# -- time --------------------------------------------------------------------------------------
def iso(moment: datetime) -> str:
    """UTC, microseconds: the form every billing event stores a moment in."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def next_period_end(start: datetime, anchor_day: int | None = None) -> datetime:
    """One calendar month after ``start``, on the subscription's ``anchor_day`` (the day of
    month it started) clamped to the month's length: opened Jan 31 -> Feb 28 -> Mar 31."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    day = min(anchor_day or start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def prorated_fee_change(
    old_fee: Decimal, new_fee: Decimal, start: datetime, end: datetime, at: datetime
) -> Decimal:
    """See the module docstring."""
    days_in_period = max(1, math.ceil((end - start) / timedelta(days=1)))
    remaining = max(0, min(days_in_period, math.ceil((end - at) / timedelta(days=1))))
    return quantize((new_fee - old_fee) * remaining / days_in_period)


# -- plans and budgets -------------------------------------------------------------------------
class Plan(Storable):
    """What a space pays: per minute by channel or a markup, a fee, its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(min_length=1, max_length=128)
    included_minutes: int = Field(0, ge=0, le=10_000_000)
    price_per_minute: dict[Channel, Decimal] | None = Field(
        None, description="USD per minute for each channel the plan allows."
    )
    markup_pct: Decimal | None = Field(
        None, ge=0, le=10_000, description="Percent over the provider cost."
    )
    monthly_fee: Decimal = Decimal(0)
    concurrency_limit: int = Field(ge=1, le=100_000)
    per_agent_concurrency_limit: int | None = Field(None, ge=1, le=100_000)
    spend_cap: Decimal | None = Field(None, description="USD per period; none: no cap.")
    allow_mid_period_change: bool = Field(
        True, description="False: a change at once is refused; change at the period boundary."
    )

    @field_validator("price_per_minute")
    @classmethod
    def _rates(cls, value: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("price_per_minute needs at least one channel")
        return {k: _money_field(v, f"price_per_minute.{k}") or Decimal(0) for k, v in value.items()}

    @field_validator("monthly_fee")
    @classmethod
    def _fee(cls, value: Decimal) -> Decimal:
        return _money_field(value, "monthly_fee") or quantize(Decimal(0))

    @field_validator("spend_cap")
    @classmethod
    def _cap(cls, value: Decimal | None) -> Decimal | None:
        return _money_field(value, "spend_cap", zero_ok=False)

    @model_validator(mode="after")
    def _one_pricing(self) -> Plan:
        if (self.price_per_minute is None) == (self.markup_pct is None):
            raise ValueError("a plan has either price_per_minute or markup_pct (exactly one)")
        if self.per_agent_concurrency_limit is not None and (
            self.per_agent_concurrency_limit > self.concurrency_limit
        ):
            raise ValueError("per_agent_concurrency_limit exceeds concurrency_limit")
        return self

    def as_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def price(
        self, channel: str, seconds: Decimal, provider_cost: Decimal, included_seconds_left: Decimal
    ) -> Decimal:
        """The price of a call's ``seconds`` on ``channel`` (``provider_cost``: what the
        providers charged us for it), once ``included_seconds_left`` of the period's included
        minutes are used up first (see the module docstring)."""
        if seconds < 0 or provider_cost < 0:
            raise InvalidAmount("seconds and provider cost cannot be negative")
        billable = max(Decimal(0), seconds - max(Decimal(0), included_seconds_left))
        if self.price_per_minute is not None:
            if channel not in self.price_per_minute:
                raise InvalidPlan(f"plan {self.id!r} has no price for channel {channel!r}")
            return quantize(self.price_per_minute[channel] * billable / 60)
        assert self.markup_pct is not None
        if seconds == 0:
            return quantize(Decimal(0))
        marked_up = provider_cost * (1 + self.markup_pct / 100)
        return quantize(marked_up * billable / seconds)


class Budget(Storable):
    """Thresholds (percent of the plan's spend cap) that each emit one event per period, and
    what happens at the cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS), max_length=10)
    cap_policy: CapPolicy = "refuse_new"

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        if any(not 1 <= t <= 100 for t in value):
            raise ValueError("thresholds are percents of the spend cap, 1 to 100")
        return sorted(set(value))

    def as_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validated_plan(data: dict[str, Any] | Plan) -> Plan:
    if isinstance(data, Plan):
        return data
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise InvalidPlan("invalid plan: " + _problems(exc)) from exc


def validated_budget(data: dict[str, Any] | Budget | None) -> Budget:
    if data is None:
        return Budget()
    if isinstance(data, Budget):
        return data
    try:
        return Budget.model_validate(data)
    except ValidationError as exc:
        raise InvalidBudget("invalid budget: " + _problems(exc)) from exc


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg')}")
    return "; ".join(parts)
