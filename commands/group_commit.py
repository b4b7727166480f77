"""Group commit: concurrent commands share one event-store transaction (DESIGN §8).

eventsourcing's PostgreSQL recorder locks the events table from insert to commit, so one
application commits one transaction at a time and each commit waits for its WAL flush. Saving
every pending command of that moment in a single transaction turns N flushes into one.

Leader/follower, no extra thread: the first caller that finds no batch in flight becomes the
leader and saves everything queued, in batches, until the queue is empty; the others wait for
their own outcome. When a batch fails on a conflict (an optimistic-concurrency clash or a
replayed idempotency key), the leader saves its commands one by one so that each caller gets
its own answer and nobody pays for another's conflict: whatever one of those saves raises (a
conflict, or the database failing) is that command's answer alone, and the next command is still
saved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError

SaveFn = Callable[..., list[Any]]  # Application.save(*events, records=[...]) -> recordings


@dataclass
class _Pending:
    events: Sequence[Any]
    records: list[Any]  # side records saved in the same transaction (idempotency keys...)
    done: threading.Event = field(default_factory=threading.Event)
    position: int | None = None
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, save: SaveFn, max_batch: int = 500) -> None:
        self._save = save
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False

    def commit(self, events: Sequence[Any], records: Sequence[Any] = ()) -> int | None:
        """Save ``events`` (one command's) with its side ``records`` (an idempotency key, a
        webhook secret...) and return the position of the last event."""
        pending = _Pending(events, list(records))
        with self._lock:
            self._queue.append(pending)
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.position

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                if not batch:
                    self._leading = False
                    return
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                self._commit_one(batch[0])
                return
            events = [e for p in batch for e in p.events]
            records = [r for p in batch for r in p.records]
            try:
                recordings = self._save(*events, records=records)
            except IntegrityError:
                for pending in batch:
                    self._commit_one(pending)
                return
            self._settle(batch, recordings)
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            for pending in batch:
                if not pending.done.is_set():
                    pending.error = exc
                    pending.done.set()

    def _commit_one(self, pending: _Pending) -> None:
        """Save one command alone; any error is its own answer (a conflict, or an
        infrastructure error that says nothing about the commands saved after it)."""
        try:
            recordings = self._save(*pending.events, records=pending.records)
        except Exception as exc:  # noqa: BLE001 - handed to this command's caller
            pending.error = exc
            pending.done.set()
            return
        self._settle([pending], recordings)

    @staticmethod
    def _settle(batch: list[_Pending], recordings: list[Any]) -> None:
        position_of = {id(r.domain_event): r.notification.id for r in recordings}
        for pending in batch:
            pending.position = max(
                (position_of[id(e)] for e in pending.events if id(e) in position_of),
                default=None,
            )
            pending.done.set()
