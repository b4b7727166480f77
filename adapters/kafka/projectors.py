"""The Faust app that drives the agents, calls and numbers projectors from Kafka (DESIGN §5).

Six agents, each with its consumer runtime (``adapters.kafka.consumer``): ``<prefix>.agents.v1``,
``<prefix>.calls.v1`` and ``<prefix>.numbers.v1`` each feed a PostgreSQL read model (tracking record
``(topic#partition, offset)`` in the same transaction) and the ClickHouse tables (larger
batches). Bodies stay thin: the pure step (``projections.envelopes``) per message, then the
apply step in a thread. A message that is not a usable envelope goes to ``<topic>.dlq`` at
once; PostgreSQL or ClickHouse away is waited out; a stored event the view cannot apply halts
that projector (``consumer_status``, ``/health``). Built by a factory: nothing connects at
import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.clickhouse.writer import insert_rows
from adapters.kafka.consumer import ConsumerRuntime, Item, partition_slices
from adapters.kafka.faust import faust_runtime, new_faust_app, run_faust_worker
from adapters.services import Services
from projections import clickhouse_rows as ch_rows
from projections.agents_view import apply_agent_rows
from projections.calls_clickhouse import apply_clickhouse_calls
from projections.calls_view import Slice, apply_call_slices
from projections.envelopes import (
    ch_batch_rows,
    ch_events,
    ch_number_rows,
    decode,
    number_rows,
    pg_events,
    pg_rows,
)
from projections.numbers import CLICKHOUSE_NUMBER_COLUMNS, CLICKHOUSE_REFUSED_CALL_COLUMNS
from projections.numbers_view import apply_number_rows
from projections.pricing import catalog_from_settings

PG_BATCH, PG_WITHIN = 500, 0.05
CALLS_PROJECTION = "calls"
NUMBERS_PROJECTION = "numbers"


class ClickHouseLink:
    """One ClickHouse client per agent, connected on first use and dropped after an error so
    that the next attempt reconnects."""

    def __init__(self, container: Services) -> None:
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


class Projector:
    """One projector agent: its runtime, its pure step and its apply step."""

    def __init__(
        self,
        runtime: ConsumerRuntime,
        project: Callable[[dict[str, Any] | None], Any],
        apply: Callable[[list[Item]], None],
    ) -> None:
        self.runtime, self.project, self.apply_items = runtime, project, apply

    def step(self, item: Item) -> Any:
        item.envelope = decode(item.raw)
        return self.project(item.envelope)

    async def handle(self, messages: list[Any]) -> None:
        items = [Item.of(m) for m in messages]
        await self.runtime.prepare(items, self.step, dlq)
        for item in items:
            if item.dead:  # handled: its offset still moves the tracking past it
                item.value = self.project(None)
        await self.runtime.apply(items, self.apply_items, dlq)


def dlq(item: Item) -> str:
    return f"{item.topic}.dlq"


def build_faust_app(container: Services, *, app_id: str | None = None) -> Any:
    """A fresh Faust app with the agents and calls projectors, wired to ``container``."""
    settings = container.settings
    name = app_id or f"{settings.topic_prefix}-projectors"
    app = new_faust_app(settings, name)
    conf = settings.clickhouse
    catalog = catalog_from_settings(settings)
    agents_link, calls_link = ClickHouseLink(container), ClickHouseLink(container)
    numbers_link = ClickHouseLink(container)

    def agents_postgres(items: list[Item]) -> None:
        with container.pool.connection() as conn:
            for source, position, part in partition_slices(items):
                rows = [row for item in part for row in item.value]
                apply_agent_rows(conn, rows, "agents", source, position)

    def agents_clickhouse(items: list[Item]) -> None:
        def insert(client: Any) -> None:
            events = [r for i in items for r in i.value[0]]
            insert_rows(client, "events", events, columns=ch_rows.EVENT_COLUMNS)
            agents = [r for i in items for r in i.value[1]]
            insert_rows(client, "agents", agents, columns=ch_rows.AGENT_COLUMNS)

        agents_link.run(insert)

    def calls_postgres(items: list[Item]) -> None:
        slices = [
            Slice(source, position, [e for item in part for e in item.value])
            for source, position, part in partition_slices(items)
        ]
        with container.pool.connection() as conn:  # every partition: one transaction
            apply_call_slices(conn, slices, CALLS_PROJECTION, catalog=catalog)

    def calls_clickhouse(items: list[Item]) -> None:
        def insert(client: Any) -> None:
            events = [r for i in items for r in i.value[0]]
            insert_rows(client, "events", events, columns=ch_rows.EVENT_COLUMNS)
            calls = [e for i in items for e in i.value[1]]
            apply_clickhouse_calls(client, calls, catalog, insert_rows)

        calls_link.run(insert)

    def numbers_postgres(items: list[Item]) -> None:
        with container.pool.connection() as conn:
            for source, position, part in partition_slices(items):
                rows = [row for item in part for row in item.value]
                apply_number_rows(conn, rows, NUMBERS_PROJECTION, source, position)

    def numbers_clickhouse(items: list[Item]) -> None:
        def insert(client: Any) -> None:
            events = [r for i in items for r in i.value[0]]
            insert_rows(client, "events", events, columns=ch_rows.EVENT_COLUMNS)
            numbers = [r for i in items for r in i.value[1]]
            insert_rows(client, "numbers", numbers, columns=CLICKHOUSE_NUMBER_COLUMNS)
            refused = [r for i in items for r in i.value[2]]
            insert_rows(client, "refused_calls", refused, columns=CLICKHOUSE_REFUSED_CALL_COLUMNS)

        numbers_link.run(insert)

    # (context, agent suffix, status name, dlq.projector header, pure step, apply, batch)
    specs = [
        ("agents", "postgres", "agents.postgres", "postgres", pg_rows, agents_postgres, False),
        ("agents", "clickhouse", "agents.clickhouse", "clickhouse", ch_batch_rows,
         agents_clickhouse, True),
        ("calls", "calls.postgres", "calls.postgres", "calls-postgres", pg_events,
         calls_postgres, False),
        ("calls", "calls.clickhouse", "calls.clickhouse", "calls-clickhouse", ch_events,
         calls_clickhouse, True),
        ("numbers", "numbers.postgres", "numbers.postgres", "numbers-postgres", number_rows,
         numbers_postgres, False),
        ("numbers", "numbers.clickhouse", "numbers.clickhouse", "numbers-clickhouse",
         ch_number_rows, numbers_clickhouse, True),
    ]  # fmt: skip
    for context, suffix, status_name, header, project, apply, big in specs:
        runtime = faust_runtime(
            app, container, status_name, dlq_headers=[("dlq.projector", header.encode())]
        )
        add_agent(
            app,
            container.topic(context),
            f"{name}.{suffix}",
            Projector(runtime, project, apply),
            (conf.batch_size, conf.batch_seconds) if big else (PG_BATCH, PG_WITHIN),
        )
    return app


def add_agent(
    app: Any, topic_name: str, agent_name: str, projector: Projector, take: tuple[int, float]
) -> None:
    topic = app.topic(topic_name, value_type=bytes, key_type=bytes)

    async def body(stream: Any) -> None:
        async for events in stream.take_events(take[0], within=take[1]):
            await projector.handle([event.message for event in events])

    body.__name__ = agent_name.replace(".", "_").replace("-", "_")
    app.agent(topic, name=agent_name)(body)


def run_projectors(container: Services, *, loglevel: str | None = None) -> None:
    """Run the projectors' Faust worker in this process until it is stopped (SIGINT/SIGTERM)."""
    run_faust_worker(container, build_faust_app, loglevel=loglevel)
