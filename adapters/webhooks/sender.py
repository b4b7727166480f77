"""The delivery worker (``voxagent webhooks send``): claims due deliveries, POSTs them signed
(Standard Webhooks), records every attempt and schedules retries.

One asyncio loop; database work runs in a thread, in batches: one claim query per loop turn,
one transaction per batch of finished attempts. Each delivery is its own task, so a slow or dead
endpoint holds only its own slots: at most ``per_endpoint_concurrency`` deliveries per endpoint
are in flight, and a saturated endpoint is left out of the next claim. New deliveries wake the
loop through ``NOTIFY``; otherwise it looks every ``poll_seconds``. The clock is injectable so
tests can walk the retry schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from adapters.webhooks import queue
from adapters.webhooks.http import Outcome, WebhookClient
from adapters.webhooks.signing import signed_headers
from domain.delivery import RetryPolicy

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.02
PRUNE_SECONDS = 3600.0

OnFailing = Callable[[queue.Failing], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Sender:
    def __init__(
        self,
        pool: ConnectionPool,
        client: WebhookClient,
        settings: Any,  # infra.settings.WebhookSettings
        policy: RetryPolicy,
        on_failing: OnFailing | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        draw: Callable[[], float] = random.random,
        listen_conninfo: str | None = None,
    ) -> None:
        self.pool, self.client, self.settings, self.policy = pool, client, settings, policy
        self.on_failing = on_failing
        self.clock, self.draw = clock, draw
        self.listen_conninfo = listen_conninfo
        # a claimed row waits at most one round of its endpoint's slots before it is sent
        self.lease = timedelta(seconds=2 * settings.timeout_seconds + settings.lease_margin_seconds)
        self.in_flight: Counter[UUID] = Counter()
        self.slots: dict[UUID, asyncio.Semaphore] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.finished: list[queue.Finished] = []
        self.wake = asyncio.Event()
        self.sent = 0

    # -- one turn -------------------------------------------------------------------------
    async def step(self) -> int:
        """Claim what is due now and start sending it; returns how many were claimed."""
        room = self.settings.max_in_flight - sum(self.in_flight.values())
        if room <= 0:
            return 0
        per_endpoint = self.settings.per_endpoint_concurrency
        saturated = [e for e, n in self.in_flight.items() if n >= per_endpoint]
        now = self.clock()

        def claim() -> list[queue.Claimed]:
            with self.pool.connection() as conn:
                return queue.claim(
                    conn, now, self.lease, limit=min(room, self.settings.claim_batch),
                    per_endpoint=per_endpoint, saturated=saturated,
                )  # fmt: skip

        claimed = await asyncio.to_thread(claim)
        for item in claimed:
            self.in_flight[item.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(item))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(claimed)

    async def _deliver(self, item: queue.Claimed) -> None:
        slots = self.slots.setdefault(
            item.endpoint_id, asyncio.Semaphore(self.settings.per_endpoint_concurrency)
        )
        try:
            async with slots:
                started = self.clock()
                outcome = await self._post(item)
            self.finished.append(queue.Finished(item, started, outcome))
        finally:
            self.in_flight[item.endpoint_id] -= 1
            if self.in_flight[item.endpoint_id] <= 0:
                del self.in_flight[item.endpoint_id]
                self.slots.pop(item.endpoint_id, None)
            self.wake.set()

    async def _post(self, item: queue.Claimed) -> Outcome:
        """Sign and send; a problem on our side is recorded as the attempt's error too."""
        if not item.secrets:
            log.error("webhook endpoint %s has no signing secret in force", item.endpoint_id)
            return Outcome(None, 0, "no_signing_secret")
        try:
            body = item.payload.encode()
            headers = signed_headers(item.event_id, int(time.time()), body, item.secrets)
            return await self.client.post(item.url, body, headers)
        except Exception as exc:  # noqa: BLE001 - recorded and retried like any failure
            log.exception("sending webhook delivery %s failed", item.id)
            return Outcome(None, 0, f"internal_error: {type(exc).__name__}")

    async def flush(self) -> int:
        """Record the finished attempts; ask to disable endpoints that kept failing."""
        if not self.finished:
            return 0
        batch, self.finished = self.finished, []
        now = self.clock()

        def write() -> list[queue.Failing]:
            with self.pool.connection() as conn:
                return queue.record(conn, batch, self.policy, now, self.draw)

        try:
            failing = await asyncio.to_thread(write)
        except Exception:
            # the leases expire and the same deliveries are sent again (same webhook-id)
            log.exception("could not record %d webhook attempts; they will be retried", len(batch))
            return 0
        self.sent += len(batch)
        for f in failing:  # until the dispatcher projects the disable; disabling is idempotent
            if self.on_failing is not None:
                try:
                    await self.on_failing(f)
                except Exception:
                    log.exception("could not disable webhook endpoint %s", f.endpoint_id)
        return len(batch)

    async def drain(self) -> None:
        """Wait for every delivery in flight, then record them all (tests, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        await self.flush()

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop)) if self.listen_conninfo else None
        flusher = asyncio.create_task(self._flush_forever(stop))
        pruner = asyncio.create_task(self._prune_forever(stop))
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    claimed = await self.step()
                except Exception:
                    log.exception("claiming webhook deliveries failed; retrying")
                    claimed = 0
                if claimed >= self.settings.claim_batch:
                    continue  # more may be due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)
        finally:
            for task in (listener, flusher, pruner):
                if task is not None:
                    task.cancel()
            await self.drain()

    async def _flush_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def _prune_forever(self, stop: asyncio.Event) -> None:
        """Forget deliveries finished longer than ``retention_days`` ago, hourly."""
        while not stop.is_set():
            before = self.clock() - timedelta(days=self.settings.retention_days)
            try:
                while await asyncio.to_thread(self._prune, before):
                    pass
            except Exception:
                log.exception("pruning old webhook deliveries failed; next try in an hour")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PRUNE_SECONDS)

    def _prune(self, before: datetime) -> int:
        with self.pool.connection() as conn:
            return queue.prune(conn, before)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the loop on every NOTIFY of new deliveries; reconnect after an error."""
        assert self.listen_conninfo is not None
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.listen_conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {queue.CHANNEL}")
                    async for _ in conn.notifies():
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling still works meanwhile
                log.warning("webhook LISTEN connection lost (%r); reconnecting", exc)
                await asyncio.sleep(1.0)
