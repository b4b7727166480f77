"""Write side of billing: one eventsourcing Application, one ``BillingAccount`` per space.

Each command loads the space's account (its id is derived from the space id, so the caller's
space is the only one it can reach), calls one aggregate method and saves through the group
commit with its Idempotency-Key record in the same transaction (commands/writes.py).

- ``top_up`` requires an idempotency key: a payment retried by a client tops up once.
- ``consume`` is keyed by the id of the source event it bills (a call's usage or end event): the
  key ``consume:<source id>`` goes to the same idempotency store (the shared ``idempotency_keys``
  table, written in the transaction of the ``billing.credits_consumed`` event), so the same
  source consumed twice (a redelivered or replayed Kafka message, two meter processes racing)
  consumes once and answers the first result. Why a side store rather than a set of source ids
  on the aggregate: the set would grow with every call the space ever made, be loaded with the
  aggregate on every command and carried in its snapshots, while the key store is indexed and
  already exactly-once with the event. The same source with a different payload (amount,
  moment) is refused (``idempotency_key_reused``): a re-priced call is a new correction event
  with its own source id, never an edit. ``at`` is required for the same reason: the moment
  comes from the source event, not from the clock of the process that meters it.
- ``consume`` (and ``change_plan``) evaluate the budget in the same save: a threshold crossing
  is emitted once per period, because the crossing is aggregate state and a concurrent save of
  the same version fails (optimistic concurrency). ``evaluate_budget`` does it on its own (after
  a plan change lowered the cap, or for a period that rolled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from pydantic import Field

from commands.agents import Actor, ConcurrentModification
from commands.group_commit import GroupCommit
from commands.idempotency import Key
from commands.writes import IdempotentWrites
from domain.billing import BillingAccount, billing_account_id
from domain.billing_plans import Budget, Plan
from domain.numbers import Moment
from domain.text import Storable


class BillingAccountNotFound(Exception):
    code = "billing_account_not_found"


class BillingAccountExists(Exception):
    code = "billing_account_exists"


class IdempotencyKeyRequired(Exception):
    code = "idempotency_key_required"


Note = Field(None, max_length=512)


class OpenAccount(Storable):
    plan: Plan
    budget: Budget | None = None
    at: Moment | None = None


class ChangePlan(Storable):
    plan: Plan
    effective: Literal["now", "period_boundary"]
    at: Moment | None = None


class CancelSubscription(Storable):
    reason: str | None = Note
    at: Moment | None = None


class TopUp(Storable):
    amount: Decimal = Field(description="USD, at most 6 decimal places.")
    reference: str | None = Field(None, max_length=255, description="e.g. the payment's id.")
    at: Moment | None = None


class GrantCredits(Storable):
    amount: Decimal
    expires_at: Moment
    reason: str | None = Note
    at: Moment | None = None


class Consume(Storable):
    source_event_id: str = Field(min_length=1, max_length=200)
    amount: Decimal
    seconds: Decimal = Field(Decimal(0), ge=0, le=10_000_000)
    at: Moment = Field(description="When the usage happened (the source event's moment).")


class Refund(Storable):
    amount: Decimal
    source_id: str | None = Field(None, max_length=255)
    reason: str | None = Note
    at: Moment | None = None


class EvaluateBudget(Storable):
    at: Moment | None = None


@dataclass(frozen=True)
class Result:
    id: UUID
    version: int
    position: int | None
    aggregate: Any = None
    replayed: bool = False


def _now(at: datetime | None) -> datetime:
    return at if at is not None else datetime.now(UTC)


class BillingApplication(Application[UUID]):
    name = "billing"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._writes = IdempotentWrites(self, GroupCommit(self.save), self._conflict)

    def open_account(self, actor: Actor, cmd: OpenAccount, idempotency_key: Key = None) -> Result:
        def apply() -> BillingAccount:
            if self._find(actor.space_id) is not None:
                raise BillingAccountExists(f"space {actor.space_id} has a billing account already")
            return BillingAccount.open(
                actor.space_id, cmd.plan, _now(cmd.at), actor.subject, cmd.budget
            )

        return self._command(actor, cmd, idempotency_key, "open_account", apply)

    def change_plan(self, actor: Actor, cmd: ChangePlan, idempotency_key: Key = None) -> Result:
        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.change_plan(cmd.plan, cmd.effective, _now(cmd.at), actor.subject)
            return account

        return self._command(actor, cmd, idempotency_key, "change_plan", apply)

    def cancel_subscription(
        self, actor: Actor, cmd: CancelSubscription, idempotency_key: Key = None
    ) -> Result:
        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.cancel(_now(cmd.at), actor.subject, cmd.reason)
            return account

        return self._command(actor, cmd, idempotency_key, "cancel_subscription", apply)

    def top_up(self, actor: Actor, cmd: TopUp, idempotency_key: Key) -> Result:
        if idempotency_key is None:
            raise IdempotencyKeyRequired("a top-up needs an Idempotency-Key, so a retry pays once")

        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.top_up(cmd.amount, _now(cmd.at), actor.subject, cmd.reference)
            return account

        return self._command(actor, cmd, idempotency_key, "top_up", apply)

    def grant_credits(self, actor: Actor, cmd: GrantCredits, idempotency_key: Key = None) -> Result:
        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.grant(cmd.amount, cmd.expires_at, _now(cmd.at), actor.subject, cmd.reason)
            return account

        return self._command(actor, cmd, idempotency_key, "grant_credits", apply)

    def consume(self, actor: Actor, cmd: Consume) -> Result:
        """Consume once per ``cmd.source_event_id`` (see the module docstring)."""

        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.consume(cmd.source_event_id, cmd.amount, cmd.at, actor.subject, cmd.seconds)
            return account

        key = f"consume:{cmd.source_event_id}"
        return self._command(actor, cmd, key, "consume", apply)

    def refund(self, actor: Actor, cmd: Refund, idempotency_key: Key = None) -> Result:
        def apply() -> BillingAccount:
            account = self.get_account(actor)
            account.refund(cmd.amount, _now(cmd.at), actor.subject, cmd.source_id, cmd.reason)
            return account

        return self._command(actor, cmd, idempotency_key, "refund", apply)

    def evaluate_budget(self, actor: Actor, cmd: EvaluateBudget) -> Result:
        """Roll the period and emit the budget crossings not yet emitted (none: no write)."""

        def apply() -> BillingAccount:
            account = self.get_account(actor)
            at = _now(cmd.at)
            account.roll_period(at)
            account.evaluate_budget(at, actor.subject)
            return account

        return self._command(actor, cmd, None, "evaluate_budget", apply)

    def get_account(self, actor: Actor) -> BillingAccount:
        account = self._find(actor.space_id)
        if account is None:
            raise BillingAccountNotFound(f"space {actor.space_id} has no billing account")
        return account

    def _find(self, space_id: str) -> BillingAccount | None:
        try:
            account: BillingAccount = self.repository.get(billing_account_id(space_id))
        except AggregateNotFoundError:
            return None
        return account

    def _command(
        self, actor: Actor, cmd: Storable, key: Key, command: str,
        apply: Callable[[], BillingAccount],
    ) -> Result:  # fmt: skip
        payload = cmd.model_dump(mode="json")
        written = self._writes.replay(actor.space_id, key, command, payload)
        if written is None:
            account = apply()
            if not account.pending_events:  # the command changed nothing: no write, no key
                written = self._writes.unchanged(account)
            else:
                written = self._writes.save(actor.space_id, account, key, command, payload)
        return Result(written.id, written.version, written.position, written.aggregate,
                      written.replayed)  # fmt: skip

    def _conflict(self, aggregate: Any) -> Exception:
        if isinstance(aggregate, BillingAccount) and aggregate.version <= 2:
            return BillingAccountExists(f"space {aggregate.space_id} has a billing account already")
        return ConcurrentModification(
            f"billing account {aggregate.id} was changed concurrently; reload it and retry"
        )
