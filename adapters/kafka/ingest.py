"""Ingest (DESIGN §4): signals on the ingress topics become commands on the Call aggregate.

One Faust agent reads ``<prefix>.ingress.worker.v1`` and ``<prefix>.ingress.provider.v1`` in
batches (``take_events``) through the consumer runtime (``adapters.kafka.consumer``): it decodes
and validates every message (``commands.signals``; a malformed one is dead-lettered at once to
``<ingress topic>.dlq`` with headers ``dlq.error`` (the code), ``dlq.message``, ``dlq.source``
(``topic#partition@offset``) and ``dlq.signal_id``), hands the valid signals to
``CallsApplication.apply_signals`` in a thread (one event-store transaction per batch, DESIGN §8)
and dead-letters what the aggregate rejected, with its code. PostgreSQL away, or a write
racing ingest's (``ConcurrentModification``), is waited out (retried forever, nothing
dead-lettered, nothing skipped); a signal that fails otherwise, alone,
is dead-lettered as ``ingest_failed``.

Signals of a call that does not exist yet (``unknown_call``: worker and provider signals come on
two topics, so the worker's may overtake the provider's ``call.initiated``) are not dead-lettered
at once: they wait in ``Parking`` (in memory, per call, in order) mirrored to the
``ingest_parking`` table (``ParkingJournal``) before the batch is acknowledged, so a crash loses
none: a restarted ingest takes them back. They are retried with the next batch that touches
their call, and every ``consumers.park_retry_seconds`` (a timer), ahead of that call's newer
signals; ``call.initiated`` goes first in a batch. What waited ``consumers.park_max_age_seconds``
in vain, or is pushed out by ``consumers.park_max_items`` newer ones, is dead-lettered as
``unknown_call``: checked after a batch was applied, sparing the calls it brought signals for.
Time spent waiting on infrastructure, or while ingest was down, does not count: ages restart
when an outage ends and when a restarted ingest takes its parked signals back. Built by a
factory: nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from adapters.kafka.consumer import ConsumerRuntime, Item
from adapters.kafka.faust import faust_runtime, new_faust_app, run_faust_worker
from adapters.kafka.parked import IngestItem, ParkingJournal
from adapters.kafka.topics import DLQ_SUFFIX, ingress_topics
from adapters.services import Services
from commands.call_ingest import Parking, SignalOutcome
from commands.signals import CallInitiatedSignal, Signal, parse_signal

log = logging.getLogger(__name__)
BATCH, WITHIN = 500, 0.05

Apply = Callable[[list[Signal]], list[SignalOutcome]]


def dlq(item: Item) -> str:
    return item.topic + DLQ_SUFFIX


class Ingest:
    """The batch handling of the agent, free of Faust: ``apply`` saves, the runtime waits out
    outages and dead-letters, ``journal`` keeps what is parked."""

    def __init__(
        self,
        apply: Apply,
        runtime: ConsumerRuntime,
        *,
        journal: ParkingJournal,
        parking: Parking[IngestItem] | None = None,
    ) -> None:
        self.apply, self.runtime = apply, runtime
        self.parking: Parking[IngestItem] = parking if parking is not None else Parking(
            max_age=30.0, max_items=10_000, retry_every=0.5, clock=time.time
        )  # fmt: skip
        self.journal = journal
        self.applied = self.duplicates = 0
        self._restored = False
        self._lock = asyncio.Lock()  # the agent and the retry timer take turns

    @property
    def rejected(self) -> int:
        return self.runtime.counters["dead_lettered"]

    async def handle(self, messages: Iterable[Any]) -> None:
        """Handle one batch of messages (objects with topic, partition, offset, key, value)."""
        batch = [IngestItem.of(m) for m in messages]
        async with self._lock:
            await self.runtime.guarded(lambda: self._handle(batch), "ingest batch")

    async def retry_parked(self) -> None:
        """Retry the parked calls that are due, dead-letter what expired (the timer's job)."""
        if len(self.parking) or not self._restored:
            await self.handle([])

    async def _restore(self) -> None:
        """Take back what an earlier run of ingest parked (once, before anything else)."""
        loaded = await self.runtime.call(self.journal.load)
        gone: list[IngestItem] = []
        for item in await self.runtime.prepare(list(loaded), _parse, dlq):
            assert isinstance(item, IngestItem) and item.signal is not None
            # the time ingest was down was not spent waiting for the call: ages count from now
            item.parked_since = self.parking.clock()
            for evicted in self.parking.park(item.signal.call_id, item, item.parked_since):
                await self._unknown(evicted, f"too many signals waiting ({len(self.parking)})")
                gone.append(evicted)
        gone += [i for i in loaded if i.dead]
        if gone:
            await self.runtime.call(lambda: self.journal.write([], gone))
        if loaded:
            log.info("ingest: %d parked signals taken back", len(loaded) - len(gone))
        self._restored = True

    async def _handle(self, batch: list[IngestItem]) -> None:
        outages = self.runtime.counters["outages"]
        if not self._restored:
            await self._restore()
        alive = await self.runtime.prepare(list(batch), _parse, dlq)
        added: list[IngestItem] = []
        removed: list[IngestItem] = []
        fresh = [i for i in alive if isinstance(i, IngestItem)]
        touched = [i.signal.call_id for i in fresh if i.signal is not None]
        parked = [p.item for p in self.parking.take(touched)]
        # a call's parked signals go before its new ones; its call.initiated before all
        items = sorted(parked + fresh, key=lambda i: not isinstance(i.signal, CallInitiatedSignal))
        pairs = await self.runtime.apply(items, self._apply, dlq)
        for item, outcome in pairs:
            if outcome.status in ("applied", "duplicate"):
                self.applied += outcome.status == "applied"
                self.duplicates += outcome.status == "duplicate"
                if item.parked_since is not None:
                    removed.append(item)
            elif outcome.code == "unknown_call" and item.signal is not None:
                if item.parked_since is None:
                    item.parked_since = self.parking.clock()
                    added.append(item)
                for evicted in self.parking.park(item.signal.call_id, item, item.parked_since):
                    await self._unknown(evicted, f"too many signals waiting ({len(self.parking)})")
                    removed.append(evicted)
            else:
                code, message = outcome.code or "rejected", outcome.message or ""
                await self.runtime.dead_letter(item, dlq(item), code, message, self._headers(item))
                if item.parked_since is not None:
                    removed.append(item)
        removed += [i for i in parked if i.dead]  # dead-lettered as ingest_failed
        if self.runtime.counters["outages"] != outages:
            # the time spent waiting on infrastructure was not spent waiting for the call
            for item in self.parking.rebase():
                item.parked_since = self.parking.clock()
        # only once the batch was applied, and not the calls it brought new signals for
        for item in self.parking.expire(spare=touched):
            await self._unknown(item, f"no call.initiated within {self.parking.max_age:g} s")
            removed.append(item)
        gone, new = {i.source for i in removed}, {i.source for i in added}
        add = [i for i in added if i.source not in gone]
        remove = [i for i in removed if i.source not in new]
        if add or remove:
            await self.runtime.call(lambda: self.journal.write(add, remove))

    def _apply(self, items: list[Item]) -> list[tuple[IngestItem, SignalOutcome]]:
        batch = [i for i in items if isinstance(i, IngestItem) and i.signal is not None]
        outcomes = self.apply([i.signal for i in batch if i.signal is not None])
        return list(zip(batch, outcomes, strict=True))

    async def _unknown(self, item: IngestItem, why: str) -> None:
        call = item.signal.call_id if item.signal is not None else "?"
        message = f"call {call} is unknown: {why}"
        await self.runtime.dead_letter(
            item, dlq(item), "unknown_call", message, self._headers(item)
        )

    @staticmethod
    def _headers(item: IngestItem) -> list[tuple[str, bytes]]:
        signal = item.signal
        return [("dlq.signal_id", signal.signal_id.encode())] if signal is not None else []


def _parse(item: Item) -> Signal:
    """The pure step: a valid signal, or ``SignalRejected`` (its code goes to the DLQ)."""
    return parse_signal(item.raw)


def build_ingest_app(container: Services, *, app_id: str | None = None) -> Any:
    """A fresh Faust app whose agent ingests both ingress topics into ``container.calls``."""
    from adapters.postgres.parking import PostgresParkingJournal

    settings = container.settings
    conf = settings.consumers
    name = app_id or f"{settings.topic_prefix}-ingest"
    app = new_faust_app(settings, name)
    topic = app.topic(*ingress_topics(settings), value_type=bytes, key_type=bytes)
    runtime = faust_runtime(
        app, container, "ingest", unapplicable="dead_letter", failed_code="ingest_failed"
    )
    parking: Parking[IngestItem] = Parking(
        max_age=conf.park_max_age_seconds,
        max_items=conf.park_max_items,
        retry_every=conf.park_retry_seconds,
        clock=time.time,
    )
    ingest = Ingest(
        lambda signals: container.calls.apply_signals(signals),
        runtime,
        journal=PostgresParkingJournal(lambda: container.pool),
        parking=parking,
    )

    @app.agent(topic, name=f"{name}.signals")
    async def signals(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN):
            await ingest.handle([event.message for event in events])

    @app.timer(interval=conf.park_retry_seconds, name=f"{name}.parked")
    async def parked() -> None:
        await ingest.retry_parked()

    return app


def run_ingest(container: Services, *, loglevel: str | None = None) -> None:
    """Run the ingest Faust worker in this process until it is stopped (SIGINT/SIGTERM)."""
    run_faust_worker(container, build_ingest_app, loglevel=loglevel)
