"""The Faust app that drives the agents and calls projectors from Kafka (DESIGN §5).

Two agents read ``<prefix>.agents.v1``: ``postgres`` applies batches to the read model with the
tracking record ``(topic#partition, offset)``; ``clickhouse`` inserts larger batches into the
analytics tables; two more read ``<prefix>.calls.v1`` the same way (``projections.faust_calls``).
Bodies stay thin: decode, call plain functions in a thread, and never raise — Faust
acknowledges a message even when a body fails, so a failing batch is retried a bounded number
of times, then message by message, and what still fails goes to ``<topic>.dlq`` with
headers naming the error. A message that is not a usable envelope goes there at once.
Built by a factory: nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from projections import clickhouse_rows as ch_rows
from projections.agents import MalformedEnvelope, agent_row, is_agent_event
from projections.faust_runtime import new_faust_app, run_faust_worker
from projections.postgres_view import apply_agent_rows

log = logging.getLogger(__name__)
PG_BATCH, PG_WITHIN = 500, 0.05
ATTEMPTS, BACKOFF = 5, 0.2  # 0.2 + 0.4 + 0.8 + 1.6 s of backoff before message by message


@dataclass
class Item:
    """One Kafka message and what its projector made of it (``rows``) or why it failed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes | None
    envelope: dict[str, Any] | None = None
    rows: Any = None


def clickhouse_insert(
    client: Any, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """One INSERT with an explicit column list through the container's ClickHouse client (the
    same statement ``adapters.clickhouse.writer.insert_rows`` sends; projections do not import
    adapters)."""
    if rows:
        values = [tuple(row[c] for c in columns) for row in rows]
        client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", values)


def decode(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise MalformedEnvelope("empty message")
    try:
        env = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEnvelope(f"not JSON: {exc}") from exc
    if not isinstance(env, dict) or "type" not in env:
        raise MalformedEnvelope("not an event envelope (a JSON object with a type)")
    return env


def pg_rows(env: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for the PostgreSQL view (none for other event types or a dead-lettered message)."""
    return [agent_row(env)] if env is not None and is_agent_event(env) else []


def ch_batch_rows(
    env: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(events rows, agents rows)`` for ClickHouse (none for a dead-lettered message)."""
    if env is None:
        return [], []
    agents = [ch_rows.clickhouse_agent_row(env)] if is_agent_event(env) else []
    return [ch_rows.clickhouse_event_row(env)], agents


class Projector:
    """Shared batch handling of both agents: decode, apply with retries, dead-letter."""

    def __init__(
        self,
        app: Any,
        name: str,
        dlq_topic: str,
        project: Callable[[dict[str, Any] | None], Any],
        attempts: int = ATTEMPTS,
    ) -> None:
        self.app, self.name, self.dlq_topic = app, name, dlq_topic
        self.project, self.attempts = project, attempts

    async def items(self, events: Any) -> list[Item]:
        """Decode and project every message; unusable ones go to the DLQ at once.

        They stay in the batch with no rows, so their offsets are still tracked.
        """
        items: list[Item] = []
        for event in events:
            m = event.message
            item = Item(m.topic, m.partition, m.offset, m.key, m.value)
            try:
                item.envelope = decode(item.raw)
                item.rows = self.project(item.envelope)
            except Exception as exc:  # noqa: BLE001 - projection is pure: the message is unusable
                await self.dead_letter(item, exc)
                item.rows = self.project(None)
            items.append(item)
        return items

    async def retrying(self, fn: Callable[[], Any], attempts: int) -> BaseException | None:
        """Run ``fn`` in a thread up to ``attempts`` times; the last error, or None."""
        error: BaseException | None = None
        for attempt in range(attempts):
            try:
                await asyncio.to_thread(fn)
                return None
            except Exception as exc:  # noqa: BLE001 - anything may be transient
                error = exc
                log.warning("%s projector: attempt %d failed: %r", self.name, attempt + 1, exc)
                if attempt + 1 < attempts:
                    await asyncio.sleep(BACKOFF * 2**attempt)
        return error

    async def run(self, items: list[Item], apply: Callable[[list[Item]], Any]) -> None:
        """Apply ``items`` as one batch; on lasting failure one by one, then dead-letter."""
        if not items:
            return
        if await self.retrying(functools.partial(apply, items), self.attempts) is None:
            return
        for item in items:
            error = await self.retrying(functools.partial(apply, [item]), 1)
            if error is not None:
                await self.dead_letter(item, error)
                item.rows = self.project(None)  # handled: still move the tracking past it
                await self.retrying(functools.partial(apply, [item]), 1)

    async def dead_letter(self, item: Item, error: BaseException) -> None:
        log.error(
            "%s projector: %s#%d@%d -> %s: %r",
            self.name,
            item.topic,
            item.partition,
            item.offset,
            self.dlq_topic,
            error,
        )
        headers = [
            ("dlq.error", type(error).__name__.encode()),
            ("dlq.message", str(error)[:2000].encode("utf-8", "replace")),
            ("dlq.projector", self.name.encode()),
            ("dlq.source", f"{item.topic}#{item.partition}@{item.offset}".encode()),
        ]
        try:
            await self.app.producer.send_and_wait(
                self.dlq_topic, item.key, item.raw, None, None, headers
            )
        except Exception:
            log.exception("%s projector: could not dead-letter %s", self.name, item)


def partition_slices(items: list[Item]) -> list[tuple[str, int, list[Item]]]:
    """The batch cut per Kafka partition: ``(source, last offset, items)`` — what a view's
    tracking record needs (Kafka orders only within a partition)."""
    by_partition: dict[tuple[str, int], list[Item]] = defaultdict(list)
    for item in items:
        by_partition[(item.topic, item.partition)].append(item)
    return [
        (f"{topic}#{partition}", max(item.offset for item in part), part)
        for (topic, partition), part in sorted(by_partition.items())
    ]


class ClickHouseLink:
    """One ClickHouse client per agent, connected on first use and dropped after an error so
    that the next attempt reconnects."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.client: Any = None

    def run(self, work: Callable[[Any], None]) -> None:
        if self.client is None:
            self.client = self.container.clickhouse()
        try:
            work(self.client)
        except Exception:
            self.client.disconnect()
            self.client = None
            raise


def build_faust_app(container: Any, *, app_id: str | None = None) -> Any:
    """A fresh Faust app with the agents projectors, wired to ``container``."""
    settings = container.settings
    name = app_id or f"{settings.topic_prefix}-projectors"
    app = new_faust_app(settings, name)
    topic_name = container.topic("agents")
    topic = app.topic(topic_name, value_type=bytes, key_type=bytes)
    dlq = f"{topic_name}.dlq"
    pg = Projector(app, "postgres", dlq, pg_rows)
    ch = Projector(app, "clickhouse", dlq, ch_batch_rows)
    link = ClickHouseLink(container)

    def apply_postgres(items: list[Item]) -> None:
        with container.pool.connection() as conn:
            for source, position, part in partition_slices(items):
                rows = [row for item in part for row in item.rows]
                apply_agent_rows(conn, rows, "agents", source, position)

    def apply_clickhouse(items: list[Item]) -> None:
        def insert(client: Any) -> None:
            events = [r for i in items for r in i.rows[0]]
            clickhouse_insert(client, "events", ch_rows.EVENT_COLUMNS, events)
            agents = [r for i in items for r in i.rows[1]]
            clickhouse_insert(client, "agents", ch_rows.AGENT_COLUMNS, agents)

        link.run(insert)

    @app.agent(topic, name=f"{name}.postgres")
    async def postgres(stream: Any) -> None:
        async for events in stream.take_events(PG_BATCH, within=PG_WITHIN):
            await pg.run(await pg.items(events), apply_postgres)

    @app.agent(topic, name=f"{name}.clickhouse")
    async def clickhouse(stream: Any) -> None:
        conf = settings.clickhouse
        async for events in stream.take_events(conf.batch_size, within=conf.batch_seconds):
            await ch.run(await ch.items(events), apply_clickhouse)

    from projections.faust_calls import add_calls_agents  # it imports this module

    add_calls_agents(app, container, name)
    return app


def run_projectors(container: Any, *, loglevel: str | None = None) -> None:
    """Run the projectors' Faust worker in this process until it is stopped (SIGINT/SIGTERM)."""
    run_faust_worker(container, build_faust_app, loglevel=loglevel)
