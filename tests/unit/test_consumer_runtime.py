"""The Kafka consumer runtime (adapters/kafka/consumer.py) without a broker: plain callables
for the apply step, the dead-letter ``send``, the clock and ``sleep``."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import psycopg.errors
import pytest
from clickhouse_driver.errors import NetworkError, ServerException
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg_pool import PoolTimeout

from adapters.kafka.consumer import ConsumerRuntime, Item, is_infrastructure
from commands.agents import ConcurrentModification

pytestmark = pytest.mark.unit


class Rig:
    """A runtime with fakes: what it sent, slept and reported; a fake wall clock."""

    def __init__(self, *, send_fails: int = 0, report_fails: int = 0, **kwargs) -> None:
        self.sent, self.slept, self.reports = [], [], []
        self.now = 1000.0
        self.send_fails, self.report_fails = send_fails, report_fails

        async def send(topic, key, value, headers):
            if self.send_fails:
                self.send_fails -= 1
                raise ConnectionError("broker away")
            self.sent.append((topic, value, {k: v.decode() for k, v in headers}))

        async def sleep(seconds):
            self.slept.append(seconds)
            self.now += seconds
            if len(self.slept) > 200:
                raise RuntimeError("stuck")

        def report(status):
            if self.report_fails:
                self.report_fails -= 1
                raise psycopg.OperationalError("database away")
            self.reports.append((status.state, status.source, status.error.split(":")[0]))

        async def inline(fn, *args):
            return fn(*args)

        self.runtime = ConsumerRuntime(
            "test.consumer", send, report=report, sleep=sleep, clock=lambda: self.now,
            in_thread=inline, halted_retry=30.0, **kwargs,
        )  # fmt: skip


def items(*raws: bytes) -> list[Item]:
    return [Item("t", 0, n, b"k", raw) for n, raw in enumerate(raws)]


def dlq(item: Item) -> str:
    return f"{item.topic}.dlq"


def parse(item: Item) -> int:
    if not (item.raw or b"").isdigit():
        raise ValueError(f"not a number: {item.raw!r}")
    return int(item.raw or b"0")


def run(rig: Rig, batch: list[Item], apply) -> list:
    async def go():
        alive = await rig.runtime.prepare(batch, parse, dlq)
        return await rig.runtime.apply(alive, apply, dlq)

    return asyncio.run(go())


def test_a_malformed_message_is_dead_lettered_at_once_and_the_rest_applied_in_order():
    rig, applied = Rig(), []
    batch = items(b"1", b"oops", b"3")
    run(rig, batch, lambda part: applied.extend(i.value for i in part))
    assert applied == [1, 3]
    assert [(t, v, h["dlq.error"], h["dlq.source"]) for t, v, h in rig.sent] == [
        ("t.dlq", b"oops", "ValueError", "t#0@1")
    ]
    assert [i.dead for i in batch] == [False, True, False]  # it stays: its offset is handled
    assert rig.slept == [] and rig.runtime.counters["dead_lettered"] == 1


def test_infrastructure_errors_are_waited_out_with_a_capped_backoff_and_nothing_is_skipped(
    caplog,
):
    rig, applied, failures = Rig(), [], iter(range(8))

    def apply(part):
        if next(failures, None) is not None:
            raise psycopg.OperationalError("connection refused")
        applied.extend(i.value for i in part)

    with caplog.at_level(logging.WARNING, "adapters.kafka.consumer"):
        run(rig, items(b"1", b"2", b"3"), apply)
    assert applied == [1, 2, 3] and rig.sent == []
    assert rig.slept == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert [r[0] for r in rig.reports] == ["running", "waiting", "waiting", "running"]
    assert rig.reports[1][1:] == ("t#0@0", "OperationalError")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("waiting for infrastructure" in m for m in messages) == 1  # once per outage
    assert sum("is back after" in m for m in messages) == 1
    assert rig.runtime.counters["outages"] == 1 and rig.runtime.status.state == "running"


def test_after_an_outage_it_resumes_exactly_where_it_was():
    rig, store, down = Rig(), [], [True]

    def apply(part):
        if down[0] and part[0].value == 3:
            down[0] = len(rig.slept) < 3  # comes back after three waits
            raise TimeoutError("timed out")
        store.extend(i.value for i in part)

    run(rig, items(b"1", b"2"), apply)
    run(rig, items(b"3", b"4"), apply)
    run(rig, items(b"5"), apply)
    assert store == [1, 2, 3, 4, 5] and rig.sent == []


def test_an_event_the_view_cannot_apply_halts_there_and_goes_on_once_it_applies(caplog):
    rig, store, fixed = Rig(), [], [False]

    def apply(part):
        if any(i.value == 2 for i in part) and not fixed[0]:
            if len(rig.slept) == 3:
                fixed[0] = True  # e.g. an operator widened the column
            raise psycopg.errors.NumericValueOutOfRange("integer out of range")
        store.extend(i.value for i in part)

    with caplog.at_level(logging.CRITICAL, "adapters.kafka.consumer"):
        run(rig, items(b"1", b"2", b"3"), apply)
    assert store == [1, 2, 3]  # the one before landed, nothing was skipped, order kept
    assert rig.sent == []  # never dead-lettered
    assert rig.slept == [30.0] * 4  # retried every halted_retry seconds
    assert ("halted", "t#0@1", "NumericValueOutOfRange") in rig.reports
    assert rig.reports[-1][0] == "running"
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "HALTED on t#0@1" in critical[0]
    assert rig.runtime.counters["halts"] == 1


def test_while_halted_nothing_after_the_event_is_applied():
    rig, store = Rig(), []

    def apply(part):
        if any(i.value == 2 for i in part):
            raise psycopg.errors.DataError("invalid input")
        store.extend(i.value for i in part)

    with pytest.raises(RuntimeError, match="stuck"):  # the fake sleep ends the test
        run(rig, items(b"1", b"2", b"3"), apply)
    assert store == [1] and rig.sent == []
    assert rig.runtime.status.state == "halted" and rig.runtime.status.source == "t#0@1"


def test_in_dead_letter_mode_only_the_culprit_goes_to_the_dlq():
    rig, store = Rig(unapplicable="dead_letter", failed_code="ingest_failed"), []

    def apply(part):
        if any(i.value == 2 for i in part):
            raise ValueError("cannot store")
        store.extend(i.value for i in part)
        return [i.value for i in part]

    assert run(rig, items(b"1", b"2", b"3"), apply) == [1, 3]
    assert store == [1, 3]
    assert [(h["dlq.error"], h["dlq.source"]) for _, _, h in rig.sent] == [
        ("ingest_failed", "t#0@1")
    ]
    assert "cannot store" in rig.sent[0][2]["dlq.message"]


def test_a_dead_letter_is_sent_even_if_the_broker_is_away_for_a_while():
    rig = Rig(send_fails=3)
    run(rig, items(b"x"), lambda part: None)
    assert [v for _, v, _ in rig.sent] == [b"x"] and rig.slept == [0.2, 0.4, 0.8]


def test_a_failed_report_does_not_stop_the_consumer_and_is_made_later():
    rig, store = Rig(report_fails=1), []
    run(rig, items(b"1"), lambda part: store.extend(i.value for i in part))
    assert store == [1] and rig.reports == []  # failed, not retried at the very next step
    rig.now += 10.0  # REPORT_EVERY later
    run(rig, items(b"2"), lambda part: store.extend(i.value for i in part))
    assert store == [1, 2] and rig.reports == [("running", "", "")]


def test_while_postgresql_is_away_a_failed_report_is_retried_at_most_every_few_seconds():
    rig, store, attempts = Rig(), [], []

    def report(status):
        attempts.append(rig.now)
        raise psycopg.OperationalError("database away")

    rig.runtime.report = report
    for n in range(20):  # twenty batches within 5 s: one report attempt
        rig.now += 0.25
        run(rig, items(str(n).encode()), lambda part: store.extend(i.value for i in part))
    assert store == list(range(20)) and attempts == [1000.25]
    rig.now += 10.0
    run(rig, items(b"20"), lambda part: store.extend(i.value for i in part))
    assert attempts == [1000.25, 1015.0]


def test_a_report_that_hangs_does_not_hold_the_consumer_up():
    import threading

    release, store = threading.Event(), []

    def report(status):
        release.wait(10)  # e.g. a pool opening while PostgreSQL is away

    async def go():
        runtime = ConsumerRuntime("test.consumer", None, report=report, report_timeout=0.01)
        batch = items(b"1", b"2")
        alive = await runtime.prepare(batch, parse, dlq)
        await runtime.apply(alive, lambda part: store.extend(i.value for i in part), dlq)
        running = runtime._reporting is not None and not runtime._reporting.done()
        release.set()
        return running

    assert asyncio.run(go()) is True  # the batch went through while the report still hung
    assert store == [1, 2]


def test_a_dead_letter_that_can_never_be_sent_halts_with_its_error_instead_of_waiting(caplog):
    rig = Rig()

    async def too_large(topic, key, value, headers):
        raise ValueError("MessageSizeTooLargeError: the message is 2000000 bytes")

    rig.runtime.send = too_large

    async def go():
        await rig.runtime.guarded(lambda: run_async(rig, items(b"x"), lambda part: None),
                                  "batch")  # fmt: skip

    with (
        caplog.at_level(logging.CRITICAL, "adapters.kafka.consumer"),
        pytest.raises(RuntimeError, match="stuck"),
    ):
        asyncio.run(go())
    assert rig.runtime.status.state == "halted"
    assert "MessageSizeTooLargeError" in rig.runtime.status.error
    assert ("waiting", "t#0@0", "ValueError") not in rig.reports
    assert any("cannot dead-letter t#0@0" in r.getMessage() for r in caplog.records)


async def run_async(rig: Rig, batch: list[Item], apply) -> list:
    alive = await rig.runtime.prepare(batch, parse, dlq)
    return await rig.runtime.apply(alive, apply, dlq)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("connection already closed"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        PoolTimeout("couldn't get a connection after 30.00 sec"),
        StoreOperationalError("wrapped by eventsourcing"),
        NetworkError("Code: 210. Connection refused (127.0.0.1:59000)"),
        ServerException("Too many parts", code=252),
        ConcurrentModification("call 1 keeps changing concurrently; retry"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_infrastructure_errors_are_recognised(error):
    assert is_infrastructure(error)


def _wrapped() -> Exception:
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating")
        except psycopg.Error as exc:
            raise RuntimeError("eventsourcing saw it") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.DataError("invalid byte sequence"),
        psycopg.errors.NumericValueOutOfRange("integer out of range"),
        psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"),
        psycopg.errors.UniqueViolation("duplicate key"),
        ServerException("Type mismatch", code=53),
        ValueError("a bug"),
        KeyError("data"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_the_work_itself_are_not_infrastructure(error):
    assert not is_infrastructure(error)


def test_an_infrastructure_cause_counts_through_a_wrapper():
    assert is_infrastructure(_wrapped())


@pytest.mark.parametrize(
    "field",
    [
        "retry_first_seconds",
        "retry_max_seconds",
        "halted_retry_seconds",
        "park_max_age_seconds",
        "park_max_items",
        "park_retry_seconds",
    ],
)
def test_consumer_settings_refuse_zero_which_would_make_busy_loops(field):
    from pydantic import ValidationError

    from infra.settings import ConsumerSettings

    with pytest.raises(ValidationError, match=field):
        ConsumerSettings(**{field: 0})
    assert getattr(ConsumerSettings(**{field: 1}), field) == 1
