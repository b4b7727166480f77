"""Ingest (DESIGN §4): signals on the ingress topics become commands on the Call aggregate.

One Faust agent reads ``<prefix>.ingress.worker.v1`` and ``<prefix>.ingress.provider.v1`` in
batches (``take_events``): it decodes and validates every message (``commands.signals``), hands
the valid signals to ``CallsApplication.apply_signals`` in a thread (one event-store transaction
per batch, DESIGN §8), and dead-letters what was rejected to ``<ingress topic>.dlq`` with headers
``dlq.error`` (the code), ``dlq.message`` and ``dlq.source`` (``topic#partition@offset``). The
body never raises (Faust would acknowledge the batch anyway): infrastructure errors are retried
with backoff, then signal by signal, and what still fails is dead-lettered as ``ingest_failed``.

Signals of a call that does not exist yet (``unknown_call``: worker and provider signals come on
two topics, so the worker's may overtake the provider's ``call.initiated``) are not dead-lettered
at once: they wait in a bounded in-memory ``Parking`` and are retried in order with the next
batch that touches their call, and every ``RETRY_EVERY`` seconds (a timer), ahead of that
call's newer signals; ``call.initiated`` goes first in a batch. What waited ``PARK_SECONDS`` in
vain, or is pushed out by ``PARK_MAX`` newer ones, or is still parked when the worker stops, is
dead-lettered as ``unknown_call``. Built by a factory: nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from adapters.kafka.topics import DLQ_SUFFIX, ingress_topics
from commands.call_ingest import Parking, SignalOutcome
from commands.signals import CallInitiatedSignal, Signal, SignalRejected, parse_signal
from projections.faust_runtime import new_faust_app, run_faust_worker

log = logging.getLogger(__name__)
BATCH, WITHIN = 500, 0.05
ATTEMPTS, BACKOFF = 5, 0.2  # 0.2 + 0.4 + 0.8 + 1.6 s of backoff before signal by signal
PARK_SECONDS, PARK_MAX, RETRY_EVERY = 30.0, 10_000, 0.5  # signals of calls not known yet

Apply = Callable[[list[Signal]], list[SignalOutcome]]
Send = Callable[[str, bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[Any]]


@dataclass
class Item:
    """One Kafka message and the signal it holds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    signal: Signal | None = None
    parked_since: float | None = None  # when it was first parked (unknown call)

    @property
    def source(self) -> str:
        return f"{self.topic}#{self.partition}@{self.offset}"


class Ingest:
    """The batch handling of the agent, free of Faust: ``apply`` saves, ``send`` dead-letters."""

    def __init__(
        self,
        apply: Apply,
        send: Send,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        parking: Parking[Item] | None = None,
    ) -> None:
        self.apply, self.send = apply, send
        self.attempts, self.backoff = attempts, backoff
        self.parking: Parking[Item] = (
            parking
            if parking is not None
            else Parking(max_age=PARK_SECONDS, max_items=PARK_MAX, retry_every=RETRY_EVERY)
        )
        self.applied = self.duplicates = self.rejected = 0
        self._last_error = ""
        self._lock = asyncio.Lock()  # the agent and the retry timer take turns

    async def handle(self, messages: Iterable[Any]) -> None:
        """Handle one batch of messages (objects with topic, partition, offset, key, value)."""
        try:
            async with self._lock:
                await self._handle(messages)
        except Exception:  # noqa: BLE001 - never out of the agent: Faust would ack and go on
            log.exception("ingest: a batch failed unexpectedly")

    async def retry_parked(self) -> None:
        """Retry the parked calls that are due, dead-letter what expired (the timer's job)."""
        if len(self.parking):
            await self.handle([])

    async def release(self) -> None:
        """Dead-letter everything still parked (the worker stops: memory is not kept)."""
        async with self._lock:
            for parked in self.parking.take(everything=True):
                await self._unknown(parked.item, "ingest stopped while it waited for the call")

    async def _handle(self, messages: Iterable[Any]) -> None:
        items: list[Item] = []
        for m in messages:
            item = Item(m.topic, m.partition, m.offset, m.key, m.value)
            try:
                item.signal = parse_signal(item.raw)
            except SignalRejected as exc:
                await self.dead_letter(item, exc.code, exc.message)
                continue
            items.append(item)
        for item in self.parking.expire():
            await self._unknown(item, f"no call.initiated within {self.parking.max_age:g} s")
        touched = [i.signal.call_id for i in items if i.signal is not None]
        parked = []
        for p in self.parking.take(touched):
            p.item.parked_since = p.since
            parked.append(p.item)
        # a call's parked signals go before its new ones; its call.initiated before all
        items = sorted(parked + items, key=lambda i: not isinstance(i.signal, CallInitiatedSignal))
        if not items:
            return
        outcomes = await self._apply([i for i in items if i.signal is not None])
        if outcomes is None:  # lasting failure: signal by signal, so only the culprits fail
            for item in items:
                one = await self._apply([item], attempts=1)
                if one is None:
                    await self.dead_letter(item, "ingest_failed", self._last_error)
                else:
                    await self._settle([item], one)
            return
        await self._settle(items, outcomes)

    async def _settle(self, items: list[Item], outcomes: list[SignalOutcome]) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.status == "applied":
                self.applied += 1
            elif outcome.status == "duplicate":
                self.duplicates += 1
            elif outcome.code == "unknown_call" and item.signal is not None:
                for evicted in self.parking.park(item.signal.call_id, item, item.parked_since):
                    await self._unknown(evicted, f"too many signals waiting ({len(self.parking)})")
            else:
                await self.dead_letter(item, outcome.code or "rejected", outcome.message or "")

    async def _apply(
        self, items: list[Item], attempts: int | None = None
    ) -> list[SignalOutcome] | None:
        signals = [i.signal for i in items if i.signal is not None]
        attempts = attempts or self.attempts
        for attempt in range(attempts):
            try:
                return await asyncio.to_thread(self.apply, signals)
            except Exception as exc:  # noqa: BLE001 - database trouble may be transient
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("ingest: attempt %d of %d signals failed: %r", attempt + 1,
                            len(signals), exc)  # fmt: skip
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.backoff * 2**attempt)
        return None

    async def _unknown(self, item: Item, why: str) -> None:
        call = item.signal.call_id if item.signal is not None else "?"
        await self.dead_letter(item, "unknown_call", f"call {call} is unknown: {why}")

    async def dead_letter(self, item: Item, code: str, message: str) -> None:
        self.rejected += 1
        dlq = item.topic + DLQ_SUFFIX
        log.info("ingest: %s -> %s: %s: %s", item.source, dlq, code, message)
        headers = [
            ("dlq.error", code.encode()),
            ("dlq.message", message[:2000].encode("utf-8", "replace")),
            ("dlq.source", item.source.encode()),
        ]
        if item.signal is not None:
            headers.append(("dlq.signal_id", item.signal.signal_id.encode()))
        try:
            await self.send(dlq, item.key, item.raw, headers)
        except Exception:  # noqa: BLE001 - logged with the message's coordinates
            log.exception("ingest: could not dead-letter %s", item.source)


def build_ingest_app(container: Any, *, app_id: str | None = None) -> Any:
    """A fresh Faust app whose agent ingests both ingress topics into ``container.calls``."""
    settings = container.settings
    name = app_id or f"{settings.topic_prefix}-ingest"
    app = new_faust_app(settings, name)
    topic = app.topic(*ingress_topics(settings), value_type=bytes, key_type=bytes)

    async def send(dlq: str, key: bytes | None, value: bytes | None, headers: Any) -> Any:
        return await app.producer.send_and_wait(dlq, key, value, None, None, headers)

    ingest = Ingest(lambda signals: container.calls.apply_signals(signals), send)

    @app.agent(topic, name=f"{name}.signals")
    async def signals(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN):
            await ingest.handle([event.message for event in events])

    @app.timer(interval=RETRY_EVERY, name=f"{name}.parked")
    async def parked() -> None:
        await ingest.retry_parked()

    @app.on_before_shutdown.connect
    async def release(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        await ingest.release()

    return app


def run_ingest(container: Any, *, loglevel: str | None = None) -> None:
    """Run the ingest Faust worker in this process until it is stopped (SIGINT/SIGTERM)."""
    run_faust_worker(container, build_ingest_app, loglevel=loglevel)
