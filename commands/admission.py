"""Call admission: one question asked before any call starts, "may this call begin now?".

A call is admitted against its space's ``Limits``: the money side (credit left, spend cap not
reached; computed by billing) and the concurrency side (calls in progress in the space, and for
the agent). An admitted call holds a ``Lease``, one per call id, until the call ends
(``release``); the worker renews it while the call lives (``renew``), so a worker that dies
without an end stops renewing and its lease expires, giving the slot back.

Concurrency must hold exactly under a burst: counting the live leases and taking one is one
atomic step of the ``AdmissionStore`` (PostgreSQL: ``adapters/postgres/admission.py``), so
fifty simultaneous starts against a limit of ten admit ten.

Admitting a call id that already holds a live lease returns that lease, unchanged: a retried
entry point (a webhook redelivered, a client retrying) never takes two slots for one call.

Refusals carry a stable ``code`` and the HTTP status an entry point answers with (``REFUSALS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

DEFAULT_LEASE_SECONDS = 120.0

# code -> (HTTP status, what the caller can do); checked in this order after an existing lease
REFUSALS: dict[str, tuple[int, str]] = {
    "spend_cap_reached": (
        402,
        "the space reached its spend cap; raise the cap or wait for the next billing period",
    ),
    "insufficient_credit": (402, "the space has no credit left; top up to start calls"),
    "concurrency_limit": (
        429,
        "the space has as many calls in progress as its plan allows; retry when one ends",
    ),
    "agent_concurrency_limit": (
        429,
        "this agent has as many calls in progress as allowed; retry when one ends",
    ),
}

Full = Literal["space", "agent"]  # which concurrency limit a store found reached


@dataclass(frozen=True)
class Limits:
    """What a space may do right now. ``None`` means no concurrency limit; 0 admits nothing."""

    space_concurrency: int | None = None
    agent_concurrency: int | None = None
    credit_ok: bool = True
    under_cap: bool = True

    def __post_init__(self) -> None:
        for name in ("space_concurrency", "agent_concurrency"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be at least 0 (or None for no limit), not {value}")


@dataclass(frozen=True)
class Lease:
    """A slot held by one admitted call until ``expires_at`` (extended by each renewal)."""

    call_id: str
    space_id: str
    agent_id: str
    granted_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Refusal:
    """Why a call may not start: a stable ``code``, the HTTP ``status``, a ``message``."""

    code: str
    status: int
    message: str

    @classmethod
    def of(cls, code: str) -> Refusal:
        status, message = REFUSALS[code]
        return cls(code, status, message)


class AdmissionStore(Protocol):
    """Where leases live. Times are the store's own clock (one clock for every process)."""

    def acquire(
        self,
        call_id: str,
        space_id: str,
        agent_id: str,
        lease_seconds: float,
        space_limit: int | None,
        agent_limit: int | None,
    ) -> Lease | Full:
        """Atomically: the live lease of ``call_id`` if it has one; else a new lease if the
        space's and the agent's live leases are under their limits; else which limit is full.
        Expired leases count for nothing (and may be removed)."""
        ...

    def lease(self, call_id: str) -> Lease | None:
        """The live lease of ``call_id``, if any."""
        ...

    def renew(self, call_id: str, lease_seconds: float) -> Lease | None:
        """Push a live lease's expiry to now + ``lease_seconds``; ``None`` if there is no live
        lease (released, or expired: its slot may be someone else's by now)."""
        ...

    def release(self, call_id: str) -> bool:
        """Remove the lease of ``call_id``; whether there was one."""
        ...


def _id(value: str | UUID) -> str:
    return str(value)


class AdmissionService:
    """Admits, renews and releases calls; one per process, shared by every entry point."""

    def __init__(self, store: AdmissionStore, lease_seconds: float = DEFAULT_LEASE_SECONDS):
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        self.store = store
        self.lease_seconds = lease_seconds

    def admit(
        self, space_id: str, agent_id: str | UUID, call_id: str | UUID, limits: Limits
    ) -> Lease | Refusal:
        """A lease for the call, or why it may not start. A call that already holds a live
        lease gets it back whatever the limits say now (it was admitted already)."""
        call, agent = _id(call_id), _id(agent_id)
        money = (
            "spend_cap_reached"
            if not limits.under_cap
            else "insufficient_credit"
            if not limits.credit_ok
            else None
        )
        if money is not None:
            held = self.store.lease(call)
            return held if held is not None else Refusal.of(money)
        got = self.store.acquire(
            call, space_id, agent, self.lease_seconds,
            limits.space_concurrency, limits.agent_concurrency,
        )  # fmt: skip
        if got == "space":
            return Refusal.of("concurrency_limit")
        if got == "agent":
            return Refusal.of("agent_concurrency_limit")
        assert isinstance(got, Lease)
        return got

    def renew(self, call_id: str | UUID) -> Lease | None:
        """Extend the call's lease by ``lease_seconds`` from now; ``None`` when the call holds
        no live lease any more (released, or expired because renewals stopped)."""
        return self.store.renew(_id(call_id), self.lease_seconds)

    def release(self, call_id: str | UUID) -> bool:
        """Give the call's slot back (the call ended); idempotent, whether it held one."""
        return self.store.release(_id(call_id))
