"""The calls projectors of the Faust app (``projections.faust_app``): ``<prefix>.calls.v1`` ->
the PostgreSQL calls read model and the ClickHouse call tables.

Same machinery as the agents projectors (``Projector``: decode, bounded retries, message by
message, ``<topic>.dlq``): the pure step parses each envelope into a ``CallEvent`` (an unusable
message is dead-lettered at once), the apply step runs the view in a thread.
"""

from __future__ import annotations

from typing import Any

from projections import clickhouse_rows as ch_rows
from projections.calls import CallEvent, is_call_event, parse_call_event
from projections.calls_clickhouse import apply_clickhouse_calls
from projections.calls_view import apply_call_events
from projections.faust_app import (
    PG_BATCH,
    PG_WITHIN,
    ClickHouseLink,
    Item,
    Projector,
    clickhouse_insert,
    partition_slices,
)
from projections.pricing import catalog_from_settings

PROJECTION = "calls"


def pg_events(env: dict[str, Any] | None) -> list[CallEvent]:
    return [parse_call_event(env)] if env is not None and is_call_event(env) else []


def ch_events(env: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[CallEvent]]:
    """``(events rows, call events)``: every envelope also goes to the ``events`` table."""
    if env is None:
        return [], []
    return [ch_rows.clickhouse_event_row(env)], pg_events(env)


def add_calls_agents(app: Any, container: Any, name: str) -> None:
    """Add the ``calls.postgres`` and ``calls.clickhouse`` agents to ``app``."""
    settings = container.settings
    catalog = catalog_from_settings(settings)
    topic_name = container.topic("calls")
    topic = app.topic(topic_name, value_type=bytes, key_type=bytes)
    dlq = f"{topic_name}.dlq"
    pg = Projector(app, "calls-postgres", dlq, pg_events)
    ch = Projector(app, "calls-clickhouse", dlq, ch_events)
    link = ClickHouseLink(container)

    def apply_postgres(items: list[Item]) -> None:
        with container.pool.connection() as conn:
            for source, position, part in partition_slices(items):
                events = [e for item in part for e in item.rows]
                apply_call_events(conn, events, PROJECTION, source, position, catalog=catalog)

    def apply_clickhouse(items: list[Item]) -> None:
        def insert(client: Any) -> None:
            events = [r for i in items for r in i.rows[0]]
            clickhouse_insert(client, "events", ch_rows.EVENT_COLUMNS, events)
            calls = [e for i in items for e in i.rows[1]]
            apply_clickhouse_calls(client, calls, catalog, clickhouse_insert)

        link.run(insert)

    @app.agent(topic, name=f"{name}.calls.postgres")
    async def calls_postgres(stream: Any) -> None:
        async for events in stream.take_events(PG_BATCH, within=PG_WITHIN):
            await pg.run(await pg.items(events), apply_postgres)

    @app.agent(topic, name=f"{name}.calls.clickhouse")
    async def calls_clickhouse(stream: Any) -> None:
        conf = settings.clickhouse
        async for events in stream.take_events(conf.batch_size, within=conf.batch_seconds):
            await ch.run(await ch.items(events), apply_clickhouse)
