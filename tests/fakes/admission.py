"""An in-memory ``AdmissionStore`` (``commands.admission``) for unit tests, on a clock the test
moves (``FakeClock.advance``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from commands.admission import AdmissionStore, Full, Lease


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class MemoryAdmissionStore(AdmissionStore):
    """Leases in a dict, one lock around each step (atomic like the PostgreSQL store)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def _live(self, call_id: str) -> Lease | None:
        held = self.leases.get(call_id)
        if held is not None and held.expires_at <= self.clock():
            del self.leases[call_id]
            return None
        return held

    def acquire(
        self,
        call_id: str,
        space_id: str,
        agent_id: str,
        lease_seconds: float,
        space_limit: int | None,
        agent_limit: int | None,
    ) -> Lease | Full:
        with self._lock:
            held = self._live(call_id)
            if held is not None:
                return held
            now = self.clock()
            live = [
                lease
                for lease in self.leases.values()
                if lease.space_id == space_id and lease.expires_at > now
            ]
            if space_limit is not None and len(live) >= space_limit:
                return "space"
            if (
                agent_limit is not None
                and sum(lease.agent_id == agent_id for lease in live) >= agent_limit
            ):
                return "agent"
            lease = Lease(call_id, space_id, agent_id, now, now + timedelta(seconds=lease_seconds))
            self.leases[call_id] = lease
            return lease

    def lease(self, call_id: str) -> Lease | None:
        with self._lock:
            return self._live(call_id)

    def renew(self, call_id: str, lease_seconds: float) -> Lease | None:
        with self._lock:
            held = self._live(call_id)
            if held is None:
                return None
            renewed = Lease(
                held.call_id, held.space_id, held.agent_id, held.granted_at,
                self.clock() + timedelta(seconds=lease_seconds),
            )  # fmt: skip
            self.leases[call_id] = renewed
            return renewed

    def release(self, call_id: str) -> bool:
        with self._lock:
            return self.leases.pop(call_id, None) is not None
