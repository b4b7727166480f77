"""When a failed webhook delivery is tried again, and when an endpoint is given up on. Pure:
the caller passes the clock and the random draw."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (27 h 35 min in all)
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.1  # each delay is stretched or shrunk by up to this fraction
    disable_after: timedelta = timedelta(days=5)

    def __post_init__(self) -> None:
        if any(s <= 0 for s in self.schedule):
            raise ValueError("every retry delay must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    @property
    def attempts(self) -> int:
        """Attempts of one delivery in all: the first plus one per scheduled retry."""
        return 1 + len(self.schedule)

    def retry_delay(self, failed_attempts: int, draw: float) -> float | None:
        """Seconds until the next attempt after ``failed_attempts`` failures (counted since the
        schedule (re)started), or None when the delivery has failed for good. ``draw`` is
        uniform in [0, 1)."""
        if failed_attempts < 1 or failed_attempts > len(self.schedule):
            return None
        base = self.schedule[failed_attempts - 1]
        return base * (1 + self.jitter * (2 * draw - 1))

    def should_disable(self, failing_since: datetime | None, now: datetime) -> bool:
        """An endpoint that has failed every attempt since ``failing_since`` is disabled once
        that lasted ``disable_after``."""
        return failing_since is not None and now - failing_since >= self.disable_after
