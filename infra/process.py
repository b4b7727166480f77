"""What every ``voxagent`` command shares: its settings as one named process, logging, the stop
signal, and how a command that finds a service away says so in one sentence, not a traceback.

:class:`VoxagentGroup` is the click group class of the command line: an exception that means
"PostgreSQL / Kafka / ClickHouse does not answer" leaves it as a :class:`ServiceUnavailable`
(``Error: PostgreSQL at 127.0.0.1:55432 is not answering ... run `voxagent stack up` ...``,
exit status 1). One-shot commands call :func:`require` first, so they fail at once instead of
after a pool's wait.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from infra.settings import Settings

PROBE_SECONDS = 5.0
FULL = ("too many clients", "remaining connection slots")  # PostgreSQL's max_connections
STACK_HINT = "is the local stack up? Start it with `voxagent stack up` (`make up` does it too)"


class ServiceUnavailable(click.ClickException):
    """A service a command needs does not answer; the message names it and what to do."""

    def __init__(self, service: str, address: str, cause: BaseException, setting: str) -> None:
        detail = " ".join(str(cause).split())[:300] or type(cause).__name__
        if any(sign in detail for sign in FULL):
            message = (
                f"{service} at {address} refuses new connections: all its connection slots "
                f"are taken ({detail}). Try again when fewer processes hold connections; "
                "docs/operations.md has each process's connection budget."
            )
        else:
            message = (
                f"{service} at {address} is not answering ({detail}); {STACK_HINT}, "
                f"or point {setting} at a running one."
            )
        super().__init__(message)
        self.service = service


def settings_for(ctx: click.Context, process: str) -> Settings:
    """The command line's settings as the process ``process`` uses them (its PostgreSQL
    connections say ``<application_name>-<process>`` in ``pg_stat_activity``)."""
    settings = ctx.find_object(Settings) or ctx.ensure_object(Settings)
    return settings.for_process(process)


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def stop_event() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# -- services away --------------------------------------------------------------------------


def _postgres(exc: BaseException) -> bool:
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError

    # psycopg_pool's PoolTimeout is an OperationalError; eventsourcing wraps psycopg's errors
    return isinstance(exc, psycopg.OperationalError | OperationalError | InterfaceError)


def _kafka(exc: BaseException) -> bool:
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    return isinstance(error, KafkaError) and error.code() in (
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
    )


def _clickhouse(exc: BaseException) -> bool:
    from clickhouse_driver import errors

    return isinstance(exc, errors.NetworkError | errors.SocketTimeoutError)


def _checks(settings: Settings) -> list[tuple[Callable[[BaseException], bool], str, str, str]]:
    pg, ch = settings.postgres, settings.clickhouse
    return [
        (_postgres, "PostgreSQL", f"{pg.host}:{pg.port}", "VOXAGENT_POSTGRES__HOST/PORT"),
        (_kafka, "Kafka", settings.kafka.bootstrap, "VOXAGENT_KAFKA__BOOTSTRAP"),
        (_clickhouse, "ClickHouse", f"{ch.host}:{ch.port}", "VOXAGENT_CLICKHOUSE__HOST/PORT"),
    ]


def service_unavailable(exc: BaseException, settings: Settings) -> ServiceUnavailable | None:
    """``exc`` (or one of its causes) as the service that is away, or None when it is not a
    connection failure of PostgreSQL, Kafka or ClickHouse."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for matches, service, address, setting in _checks(settings):
            if matches(current):
                return ServiceUnavailable(service, address, current, setting)
        current = current.__cause__ or current.__context__
    return None


def require(settings: Settings, *services: str) -> None:
    """Fail now, with the service's own error, when one of ``services`` (``postgres``,
    ``kafka``, ``clickhouse``) does not answer: one short attempt each, where a pool would wait
    ``pool_timeout_seconds`` for it."""
    for service in services:
        _PROBES[service](settings)


def _probe_postgres(settings: Settings) -> None:
    import psycopg

    psycopg.connect(settings.postgres.conninfo(), autocommit=True).close()


def _probe_kafka(settings: Settings) -> None:
    from adapters.kafka.topics import admin_client

    admin_client(settings).list_topics(timeout=PROBE_SECONDS)


def _probe_clickhouse(settings: Settings) -> None:
    from adapters.clickhouse.client import connect

    client = connect(settings.clickhouse, database="default")
    driver_log = logging.getLogger("clickhouse_driver.connection")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)  # it logs each failed attempt with a traceback
    try:
        client.execute("SELECT 1")
    finally:
        driver_log.setLevel(level)
        client.disconnect()


_PROBES: dict[str, Callable[[Settings], None]] = {
    "postgres": _probe_postgres,
    "kafka": _probe_kafka,
    "clickhouse": _probe_clickhouse,
}


class VoxagentGroup(click.Group):
    """A click group whose commands report an unavailable service in one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            settings = ctx.find_object(Settings)
            failure = None if settings is None else service_unavailable(exc, settings)
            if failure is None:
                raise
            raise failure from exc
