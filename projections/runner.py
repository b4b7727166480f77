"""The in-process runner: follows an application's notification log into the agents read model.

It tracks ``(projection, application name) -> notification id`` in ``projection_tracking`` and
drives the same projector and view as the Faust app, so tests, replays and the embedded mode
exercise the production code path (DESIGN §5).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self

from psycopg_pool import ConnectionPool

from domain.contract import envelope
from projections.agents import is_agent_event
from projections.agents_view import apply_agent_envelopes, tracked_position

log = logging.getLogger(__name__)


class InProcessRunner:
    """Reads ``app``'s notification log after the tracked position and applies it in batches."""

    def __init__(
        self,
        app: Any,
        pool: ConnectionPool,
        projection: str = "agents",
        *,
        table: str = "agents",
        batch_size: int = 500,
        poll_seconds: float = 0.05,
    ) -> None:
        self.app = app
        self.pool = pool
        self.projection = projection
        self.table = table
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.source: str = app.name
        self.on_batch: Callable[[int, int], None] | None = None  # (events, position)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- one step ------------------------------------------------------------------------
    def position(self) -> int:
        """The last notification id applied (0 before the first)."""
        with self.pool.connection() as conn:
            return self.position_in(conn)

    def position_in(self, conn: Any) -> int:
        return tracked_position(conn, self.projection, self.source) or 0

    def envelopes(self, after: int, stop: int | None = None) -> list[dict[str, Any]]:
        """The next batch of envelopes after notification id ``after`` (up to ``stop``)."""
        notifications: Sequence[Any] = self.app.recorder.select_notifications(
            after, self.batch_size, stop, inclusive_of_start=False
        )
        mapper = self.app.mapper
        return [envelope(mapper.to_domain_event(n), n.id) for n in notifications]

    def apply(self, envelopes: list[dict[str, Any]], conn: Any = None) -> int:
        """Apply one batch (its last position is tracked). Returns how many rows changed."""
        if not envelopes:
            return 0
        position = int(envelopes[-1]["position"])
        agent_events = [e for e in envelopes if is_agent_event(e)]
        if conn is not None:
            return apply_agent_envelopes(
                conn, agent_events, self.projection, self.source, position, table=self.table
            )
        with self.pool.connection() as own:
            return apply_agent_envelopes(
                own, agent_events, self.projection, self.source, position, table=self.table
            )

    def run_once(self, stop: int | None = None) -> int:
        """Apply the next batch. Returns how many events were read (0 when caught up)."""
        batch = self.envelopes(self.position(), stop)
        self.apply(batch)
        if batch and self.on_batch is not None:
            self.on_batch(len(batch), int(batch[-1]["position"]))
        return len(batch)

    def run_until_caught_up(self, stop: int | None = None) -> int:
        """Apply batches until the log is exhausted (or ``stop`` reached). Returns events read."""
        total = 0
        while True:
            read = self.run_once(stop)
            total += read
            if read < self.batch_size:
                return total

    # -- thread loop ---------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"projector-{self.projection}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                read = self.run_once()
                failures = 0
            except Exception as exc:
                failures += 1
                self.error = exc
                log.exception("projector %s failed (attempt %d)", self.projection, failures)
                self._stop.wait(min(0.1 * 2**failures, 5.0))
                continue
            if read < self.batch_size:
                self._stop.wait(self.poll_seconds)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
