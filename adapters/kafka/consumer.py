"""The one Kafka consumer runtime (DESIGN §5): what every consumer does with a batch of messages
and with the ways handling one can fail — free of Faust, so it is unit-tested with plain callables.

Used by the agents and calls projectors (PostgreSQL and ClickHouse,
``adapters.kafka.projectors``), by ingest (``adapters.kafka.ingest``) and by the webhook
dispatcher (``adapters.webhooks.dispatch``).
A consumer hands it the batch as ``Item``s and three things: a pure ``prepare`` step per message,
an ``apply`` step for a list of items (run in a thread: it does the I/O), and ``send`` for the
dead-letter topic. Failures fall in three classes:

- **infrastructure** (``is_infrastructure``: PostgreSQL, ClickHouse or Kafka away, pool
  timeouts, socket errors, and a write that raced a concurrent one, ``ConcurrentModification``):
  the consumer stops and waits, retrying the same work forever with a capped backoff; nothing is
  dead-lettered, nothing is skipped, so it resumes exactly where it was. State ``waiting``;
  logged once when it starts and once when it recovers.
- **a malformed message** (``prepare`` raised: not JSON, not an envelope, not a valid signal):
  dead-lettered at once to ``<topic>.dlq`` with headers naming the error; the batch goes on.
- **a well-formed message ``apply`` cannot take** (anything else, e.g. a ``DataError``): the
  batch is applied message by message, in order, so everything before the culprit lands; then
  the consumer either **halts** on it (``unapplicable="halt"``, projectors and dispatcher: our
  own stored events are never dead-lettered for their content) — state ``halted``, a CRITICAL
  log naming the event, retried every ``halted_retry`` seconds so that a fix (or a transient
  cause) lets it go on — or dead-letters it (``unapplicable="dead_letter"``, ingest: a signal
  from outside that cannot be stored is a bad input).

While ``handle``/``apply`` do not return, Faust acknowledges nothing of the batch, so no offset
moves past a message that was not handled. Every change of state goes to ``report`` (the
``consumer_status`` table read by ``/health``), best effort: while PostgreSQL is away the report
is retried later, at most every ``REPORT_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self, TypeVar

log = logging.getLogger(__name__)

State = Literal["running", "waiting", "halted"]
Headers = list[tuple[str, bytes]]
Send = Callable[[str, bytes | None, bytes | None, Headers], Awaitable[Any]]
T = TypeVar("T")
R = TypeVar("R")

FIRST_BACKOFF, MAX_BACKOFF, HALTED_RETRY, REPORT_EVERY = 0.2, 5.0, 30.0, 10.0
REPORT_TIMEOUT = 3.0  # the consumer waits this long for a report at most


@dataclass
class Item:
    """One Kafka message; ``value`` is what the consumer's pure step made of it. ``dead`` once
    it went to the dead-letter topic (it stays in the batch: its offset is still handled)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    envelope: dict[str, Any] | None = None
    value: Any = None
    dead: bool = False

    @property
    def source(self) -> str:
        return f"{self.topic}#{self.partition}@{self.offset}"

    @classmethod
    def of(cls, message: Any) -> Self:
        """From a Faust/aiokafka message (or anything with these attributes)."""
        m = message
        return cls(m.topic, m.partition, m.offset, m.key, m.value)


@dataclass(frozen=True)
class Status:
    """What a consumer is doing, as ``/health`` shows it."""

    consumer: str
    state: State
    since: float  # wall clock (epoch seconds)
    error: str = ""
    source: str = ""  # the message it waits or halted on: topic#partition@offset
    counters: dict[str, int] = field(default_factory=dict)


# -- failure classes --------------------------------------------------------------------------
_INFRA_NAMES = {
    # psycopg / psycopg_pool / eventsourcing.persistence
    "OperationalError", "InterfaceError", "PoolTimeout", "TooManyRequests",
    "ConnectionUnavailableError", "ConnectionNotFromPoolError",
    # clickhouse-driver
    "NetworkError", "SocketTimeoutError", "UnexpectedPacketFromServerError",
    # aiokafka / confluent-kafka
    "KafkaTimeoutError", "KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError",
    "NotLeaderForPartitionError", "LeaderNotAvailableError", "KafkaException",
    # commands.*: a write raced ours (e.g. an API command on the same call); the work is sound
    # and goes through when tried again
    "ConcurrentModification",
}  # fmt: skip
# ClickHouse server errors that mean "not now": timeouts, memory, too many parts or queries,
# read-only replica, network
_CLICKHOUSE_TRANSIENT = {159, 164, 202, 209, 210, 241, 242, 252, 425, 999}
# PostgreSQL class 54 (program limit exceeded: e.g. an index row too large) is an
# OperationalError in psycopg, but caused by the data: retrying cannot help
_NOT_TRANSIENT_SQLSTATE = ("54",)


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_infrastructure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) means a service is away or overloaded, or that a
    concurrent write got there first, so the same work will succeed later; False when the work
    itself is at fault."""
    for e in _chain(exc):
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_NOT_TRANSIENT_SQLSTATE):
            return False
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError | socket.error | EOFError):
            return True
        names = {t.__name__ for t in type(e).__mro__}
        if names & _INFRA_NAMES:
            return True
        if "ServerException" in names and getattr(e, "code", None) in _CLICKHOUSE_TRANSIENT:
            return True
    return False


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


# -- the runtime ------------------------------------------------------------------------------
class ConsumerRuntime:
    """Batch handling shared by every Kafka consumer: see the module docstring."""

    def __init__(
        self,
        name: str,
        send: Send,
        *,
        report: Callable[[Status], None] | None = None,
        unapplicable: Literal["halt", "dead_letter"] = "halt",
        failed_code: str = "apply_failed",
        dlq_headers: Sequence[tuple[str, bytes]] = (),
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        halted_retry: float = HALTED_RETRY,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        in_thread: Callable[..., Awaitable[Any]] = asyncio.to_thread,
        report_timeout: float = REPORT_TIMEOUT,
    ) -> None:
        self.name, self.send, self.report = name, send, report
        self.unapplicable, self.failed_code = unapplicable, failed_code
        self.dlq_headers = list(dlq_headers)
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.halted_retry = halted_retry
        self.sleep, self.clock, self.in_thread = sleep, clock, in_thread
        self.counters: Counter[str] = Counter()
        self.status = Status(name, "running", clock())
        self._reported: Status | None = None
        self._reported_at = float("-inf")
        self.report_timeout = report_timeout
        self._reporting: asyncio.Future[Any] | None = None

    # -- the three steps ------------------------------------------------------------------
    async def prepare(
        self, items: Sequence[Item], step: Callable[[Item], Any], dlq: Callable[[Item], str]
    ) -> list[Item]:
        """Run the pure ``step`` on every item (``item.value = step(item)``); an item it
        refuses is dead-lettered at once with the error's ``code`` (or class name). Returns
        the items that are still alive; ``items`` keeps them all."""
        await self._ensure_reported()
        alive: list[Item] = []
        for item in items:
            try:
                item.value = step(item)
            except Exception as exc:  # noqa: BLE001 - the step is pure: the message is unusable
                item.envelope, item.value = None, None
                code = getattr(exc, "code", None) or type(exc).__name__
                message = getattr(exc, "message", None) or str(exc)
                await self.dead_letter(item, dlq(item), str(code), str(message))
                continue
            alive.append(item)
        return alive

    async def apply(
        self,
        items: Sequence[Item],
        step: Callable[[list[Item]], Sequence[R] | None],
        dlq: Callable[[Item], str],
    ) -> list[R]:
        """Apply ``items`` with ``step`` (in a thread), as one batch; waits out infrastructure
        errors. If the batch fails otherwise, item by item in order: the item that fails is
        halted on or dead-lettered (see ``unapplicable``). Returns the concatenated results."""
        if not items:
            return []

        def run(part: list[Item]) -> list[R]:
            return list(step(part) or [])

        try:
            return await self.call(functools.partial(run, list(items)), source=items[0].source)
        except Exception as exc:  # noqa: BLE001 - find the culprit, one message at a time
            log.warning("%s: a batch of %d failed (%s); one by one", self.name, len(items),
                        error_text(exc))  # fmt: skip
        results: list[R] = []
        for item in items:
            single = functools.partial(run, [item])
            try:
                results.extend(await self.call(single, source=item.source))
            except Exception as exc:  # noqa: BLE001 - this message cannot be applied
                results.extend(await self._unapplicable(item, exc, single, dlq))
        return results

    async def call(self, fn: Callable[[], T], *, source: str = "") -> T:
        """``fn()`` in a thread until it does not fail for lack of infrastructure: such errors
        are waited out (state ``waiting``, capped backoff, forever); others are raised."""
        delay = self.first_backoff
        while True:
            try:
                result: T = await self.in_thread(fn)
            except Exception as exc:
                if not is_infrastructure(exc):
                    raise
                await self._wait(exc, source, delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if self.status.state == "waiting":
                await self._recovered()
            await self._ensure_reported()
            return result

    async def dead_letter(
        self,
        item: Item,
        dlq: str,
        code: str,
        message: str,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send ``item`` to ``dlq`` with headers naming why; a failing send (Kafka away) is
        waited out like any infrastructure error: a message is never dropped unsent. A send
        that can never succeed (e.g. the message is too large, the topic does not exist) is
        raised: ``guarded`` halts the consumer on it, naming the error."""
        item.dead = True
        self.counters["dead_lettered"] += 1
        log.error("%s: %s -> %s: %s: %s", self.name, item.source, dlq, code, message[:500])
        all_headers = [
            ("dlq.error", code.encode()),
            ("dlq.message", message[:2000].encode("utf-8", "replace")),
            ("dlq.source", item.source.encode()),
            *self.dlq_headers,
            *headers,
        ]
        delay = self.first_backoff
        while True:
            try:
                await self.send(dlq, item.key, item.raw, all_headers)
            except Exception as exc:
                if not is_infrastructure(exc):
                    log.critical("%s: cannot dead-letter %s to %s: %s", self.name, item.source,
                                 dlq, error_text(exc))  # fmt: skip
                    raise
                await self._wait(exc, item.source, delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if self.status.state == "waiting":
                await self._recovered()
            return

    async def guarded(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``work`` until it returns: an unexpected error (a bug: the steps above handle
        every failure they expect) halts the consumer here and retries ``work`` every
        ``halted_retry`` seconds — never out of a Faust agent, which would acknowledge."""
        while True:
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - see above
                self.counters["halts"] += 1
                log.critical("%s HALTED in %s: %s", self.name, what, error_text(exc),
                             exc_info=True)  # fmt: skip
                await self._set("halted", error_text(exc), what)
                await self.sleep(self.halted_retry)
                continue
            if self.status.state == "halted":
                await self._set("running")
            return

    # -- states ---------------------------------------------------------------------------
    async def _unapplicable(
        self,
        item: Item,
        exc: BaseException,
        retry: Callable[[], list[R]],
        dlq: Callable[[Item], str],
    ) -> list[R]:
        if self.unapplicable == "dead_letter":
            await self.dead_letter(item, dlq(item), self.failed_code, error_text(exc))
            return []
        self.counters["halts"] += 1
        what = self._describe(item)
        log.critical(
            "%s HALTED on %s (%s): %s — it is not skipped; it is retried every %g s until "
            "it applies (fix the cause; see docs/operations.md)",
            self.name, item.source, what, error_text(exc), self.halted_retry,
        )  # fmt: skip
        await self._set("halted", error_text(exc), item.source)
        while True:
            await self.sleep(self.halted_retry)
            try:
                result = await self.call(retry, source=item.source)
            except Exception as again:  # noqa: BLE001 - still cannot apply it
                if self.status.state != "halted" or self._due():
                    await self._set("halted", error_text(again), item.source)
                continue
            log.warning("%s: %s applied after all; running again", self.name, item.source)
            await self._set("running")
            return result

    async def _wait(self, exc: BaseException, source: str, delay: float) -> None:
        if self.status.state != "waiting":
            self.counters["outages"] += 1
            log.warning(
                "%s: waiting for infrastructure at %s (%s); retrying, nothing is skipped",
                self.name, source or "-", error_text(exc),
            )  # fmt: skip
            await self._set("waiting", error_text(exc), source)
        elif self._due():
            self.status = replace(self.status, error=error_text(exc))
            await self._report()
        await self.sleep(delay)

    async def _recovered(self) -> None:
        log.warning("%s: infrastructure is back after %.1f s; running", self.name,
                    self.clock() - self.status.since)  # fmt: skip
        await self._set("running")

    async def _set(self, state: State, error: str = "", source: str = "") -> None:
        self.status = Status(self.name, state, self.clock(), error, source)
        await self._report()

    def _due(self) -> bool:
        return self.clock() - self._reported_at >= REPORT_EVERY

    async def _ensure_reported(self) -> None:
        """Report a status not reported yet; a failed report is retried at most every
        ``REPORT_EVERY`` seconds (each attempt may wait for PostgreSQL: not on every step)."""
        if self._reported != self.status and self._due():
            await self._report()

    async def _report(self) -> None:
        """Best effort: a failed report (PostgreSQL away) is tried again later. The consumer
        waits ``report_timeout`` seconds for it at most (the report goes on in its thread; no
        other starts until it ends)."""
        self._reported_at = self.clock()
        if self.report is None:
            self._reported = self.status
            return
        if self._reporting is not None and not self._reporting.done():
            return  # the last one still waits for PostgreSQL
        status = replace(self.status, counters=dict(self.counters))
        reporting = asyncio.ensure_future(self.in_thread(self.report, status))
        reporting.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        self._reporting = reporting
        try:
            await asyncio.wait_for(asyncio.shield(reporting), self.report_timeout)
        except Exception as exc:  # noqa: BLE001 - reporting must never stop the consumer
            log.debug("%s: could not report %s: %r", self.name, status.state, exc)
            return
        self._reported = self.status

    @staticmethod
    def _describe(item: Item) -> str:
        env = item.envelope or {}
        if env:
            return (
                f"{env.get('type')} of {env.get('aggregate_id')} "
                f"v{env.get('aggregate_version')}, event {env.get('event_id')}"
            )
        return f"key {item.key!r}"


def partition_slices(items: list[Item]) -> list[tuple[str, int, list[Item]]]:
    """The batch cut per Kafka partition: ``(topic#partition, last offset, items)`` — what a
    view's tracking record needs (Kafka orders only within a partition)."""
    by_partition: dict[tuple[str, int], list[Item]] = defaultdict(list)
    for item in items:
        by_partition[(item.topic, item.partition)].append(item)
    return [
        (f"{topic}#{partition}", max(item.offset for item in part), part)
        for (topic, partition), part in sorted(by_partition.items())
    ]
