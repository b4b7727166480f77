"""The PostgreSQL view of calls: one transaction per batch, tracking record included (DESIGN §5).

In order, inside the transaction: the tracking row moves forward (or the batch was applied
already and nothing happens); the touched calls are read ``FOR UPDATE`` and the batch is folded
onto them (``projections.calls.project_calls``: events at or below a row's version change
nothing); the call rows are upserted, version-guarded; the event rows are inserted with
``ON CONFLICT DO NOTHING``, and the ``cost_daily`` rollup is incremented from the usage rows that
insert actually returned. A duplicate, a redelivered batch or a replay never counts twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.sql import SQL, Composed, Identifier

from projections import calls as p
from projections.pricing import Catalog
from projections.runner import InProcessRunner

TABLES: dict[str, str] = {
    "calls": "calls",
    "transcripts": "call_transcripts",
    "tool_calls": "call_tool_calls",
    "usage": "call_usage",
    "turns": "call_turns",
    "dtmf": "call_dtmf",
    "provider_statuses": "call_provider_statuses",
    "cost_daily": "cost_daily",
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "calls": p.CALL_COLUMNS,
    "transcripts": p.TRANSCRIPT_COLUMNS,
    "tool_calls": p.TOOL_CALL_COLUMNS,
    "usage": p.USAGE_COLUMNS,
    "turns": p.TURN_COLUMNS,
    "dtmf": p.DTMF_COLUMNS,
    "provider_statuses": p.PROVIDER_STATUS_COLUMNS,
}
_TYPES = {
    "id": "uuid",
    "call_id": "uuid",
    "agent_config_version": "integer",
    "total_cost_usd": "numeric",
    "cost_usd": "numeric",
    "quantity": "numeric",
    "unit_price": "numeric",
    "arguments": "jsonb",
    "result": "jsonb",
    "day": "date",
    "at": "timestamptz",
    "seq": "bigint",
    "version": "bigint",
    "position": "bigint",
    "sip_code": "integer",
    "interrupted": "boolean",
}


def table_names(suffix: str = "") -> dict[str, str]:
    """The tables of the calls read model, e.g. ``_rebuild`` ones for a replay."""
    return {k: v + suffix for k, v in TABLES.items()}


def _pg_type(column: str) -> str:
    if column in _TYPES:
        return _TYPES[column]
    if column.endswith("_at"):
        return "timestamptz"
    if column.endswith("_count"):
        return "integer"
    return "bigint" if column.endswith("_ms") else "text"


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_default, ensure_ascii=False, separators=(",", ":"))


def _recordset(columns: tuple[str, ...]) -> SQL:
    record = ", ".join(f"{c} {_pg_type(c)}" for c in columns)
    return SQL("jsonb_to_recordset(%(rows)s::jsonb) AS r(" + record + ")")


_TRACK = """
INSERT INTO projection_tracking AS pt (projection, source, position) VALUES (%s, %s, %s)
ON CONFLICT (projection, source) DO UPDATE SET position = excluded.position
WHERE pt.position < excluded.position RETURNING 1
"""


def advance_tracking(conn: Connection[Any], projection: str, source: str, position: int) -> bool:
    """Move ``(projection, source)`` to ``position``; False when it was there already."""
    return conn.execute(_TRACK, (projection, source, position)).fetchone() is not None


def _upsert_calls(table: str) -> Composed:
    cols = p.CALL_COLUMNS
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
    return SQL(
        "INSERT INTO {t} AS cur ({cols}) SELECT {cols} FROM {rs} ORDER BY id "
        "ON CONFLICT (id) DO UPDATE SET " + updates + " WHERE cur.version < excluded.version"
    ).format(t=Identifier(table), cols=SQL(", ".join(cols)), rs=_recordset(cols))


def _insert_events(table: str, kind: str) -> Composed:
    cols = COLUMNS[kind]
    return SQL(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {rs} ON CONFLICT (call_id, seq) DO NOTHING"
    ).format(t=Identifier(table), cols=SQL(", ".join(cols)), rs=_recordset(cols))


def _insert_usage_and_roll_up(usage: str, rollup: str) -> Composed:
    cols = p.USAGE_COLUMNS
    return SQL(
        "WITH inserted AS (INSERT INTO {u} ({cols}) SELECT {cols} FROM {rs} "
        "ON CONFLICT (call_id, seq) DO NOTHING "
        "RETURNING space_id, day, agent_id, provider, category, quantity, cost_usd) "
        "INSERT INTO {r} AS cd (space_id, day, agent_id, provider, category, quantity, cost_usd, "
        "usage_count) SELECT space_id, day, agent_id, provider, category, sum(quantity), "
        "sum(cost_usd), count(*) FROM inserted GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (space_id, day, agent_id, provider, category) DO UPDATE SET "
        "quantity = cd.quantity + excluded.quantity, cost_usd = cd.cost_usd + excluded.cost_usd, "
        "usage_count = cd.usage_count + excluded.usage_count"
    ).format(
        u=Identifier(usage), r=Identifier(rollup), cols=SQL(", ".join(cols)), rs=_recordset(cols)
    )


def _load_statement(table: str, *, lock: bool) -> Composed:
    query = SQL("SELECT {cols} FROM {t} WHERE id = ANY(%s::uuid[]) ORDER BY id").format(
        cols=SQL(", ".join(p.CALL_COLUMNS)), t=Identifier(table)
    )
    return query + SQL(" FOR UPDATE") if lock else query


def load_calls(
    conn: Connection[Any], ids: Iterable[str], table: str = "calls", *, lock: bool = True
) -> dict[str, dict[str, Any]]:
    """The current rows of these calls (locked until the transaction ends when ``lock``)."""
    query = _load_statement(table, lock=lock)
    with conn.cursor(row_factory=dict_row) as cur:
        found = cur.execute(query, (sorted(set(ids)),)).fetchall()
    return {str(r["id"]): {**r, "id": str(r["id"])} for r in found}


@dataclass(frozen=True)
class Slice:
    """The events of one source (a Kafka partition) in a batch, in stream order, and the
    position its tracking record moves to."""

    source: str
    position: int
    events: list[p.CallEvent]


_TRACK_MANY = """
INSERT INTO projection_tracking AS pt (projection, source, position)
SELECT %s, s.source, s.position FROM unnest(%s::text[], %s::bigint[]) AS s(source, position)
ORDER BY s.source
ON CONFLICT (projection, source) DO UPDATE SET position = excluded.position
WHERE pt.position < excluded.position RETURNING source
"""


def apply_call_events(
    conn: Connection[Any],
    events: list[p.CallEvent],
    projection: str,
    source: str,
    position: int,
    *,
    catalog: Catalog,
    tables: Mapping[str, str] = TABLES,
) -> p.CallChanges | None:
    """Apply a batch and move the tracking to ``position``, in one transaction.

    Returns what the batch changed, or None when this position was applied already."""
    return apply_call_slices(
        conn, [Slice(source, position, events)], projection, catalog=catalog, tables=tables
    )


def apply_call_slices(
    conn: Connection[Any],
    slices: Sequence[Slice],
    projection: str,
    *,
    catalog: Catalog,
    tables: Mapping[str, str] = TABLES,
) -> p.CallChanges | None:
    """Apply the slices of a batch (several sources, e.g. every Kafka partition in it) and move
    each source's tracking record, all in one transaction, in two round trips (pipeline mode).

    A slice whose source is at ``position`` already changes nothing (the calls of a source are
    its own: the relay keys every event by its call). Returns what the batch changed, or None
    when every slice was applied already. Round trip 1: the tracking records move forward and
    the batch's calls are read ``FOR UPDATE`` (speculatively: those of a slice applied already
    are locked and left alone); round trip 2: every write and the commit."""
    slices = sorted(slices, key=lambda s: s.source)  # one lock order for all writers
    ids = sorted({e.call_id for s in slices for e in s.events})
    with conn.pipeline(), conn.transaction():
        tracked = conn.execute(
            _TRACK_MANY,
            (projection, [s.source for s in slices], [s.position for s in slices]),
        )
        with conn.cursor(row_factory=dict_row) as cur:
            load = _load_statement(tables["calls"], lock=True)
            found = cur.execute(load, (ids,)) if ids else None
            advanced = {row[0] for row in tracked.fetchall()}  # the pipeline syncs here
            rows = found.fetchall() if found is not None else []
        if not advanced:
            return None
        events = [e for s in slices if s.source in advanced for e in s.events]
        if not events:
            return p.CallChanges()
        current = {str(r["id"]): {**r, "id": str(r["id"])} for r in rows}
        changes = p.project_calls(events, current, catalog)
        if changes.calls:
            calls = sorted(changes.calls.values(), key=lambda r: r["id"])
            conn.execute(_upsert_calls(tables["calls"]), {"rows": rows_json(calls)})
        for kind, kind_rows in changes.events.items():
            if not kind_rows:
                continue
            statement = (
                _insert_usage_and_roll_up(tables["usage"], tables["cost_daily"])
                if kind == "usage"
                else _insert_events(tables[kind], kind)
            )
            conn.execute(statement, {"rows": rows_json(kind_rows)})
        return changes


def apply_call_envelopes(
    conn: Connection[Any],
    envelopes: Iterable[dict[str, Any]],
    projection: str,
    source: str,
    position: int,
    *,
    catalog: Catalog,
    tables: Mapping[str, str] = TABLES,
) -> p.CallChanges | None:
    """Parse call envelopes (others are skipped, their position still counts) and apply them.
    Raises ``MalformedEnvelope`` before touching the database when one is unusable."""
    events = [p.parse_call_event(env) for env in envelopes if p.is_call_event(env)]
    return apply_call_events(
        conn, events, projection, source, position, catalog=catalog, tables=tables
    )


class CallsRunner(InProcessRunner):
    """The in-process runner (``projections.runner``) driving the calls view."""

    def __init__(
        self,
        app: Any,
        pool: Any,
        catalog: Catalog,
        projection: str = "calls",
        *,
        tables: Mapping[str, str] = TABLES,
        batch_size: int = 500,
    ) -> None:
        super().__init__(app, pool, projection, table=tables["calls"], batch_size=batch_size)
        self.catalog, self.tables = catalog, tables

    def apply(self, envelopes: list[dict[str, Any]], conn: Any = None) -> int:
        if not envelopes:
            return 0
        position = int(envelopes[-1]["position"])
        if conn is None:
            with self.pool.connection() as own:
                return self.apply(envelopes, own)
        changes = apply_call_envelopes(
            conn,
            envelopes,
            self.projection,
            self.source,
            position,
            catalog=self.catalog,
            tables=self.tables,
        )
        return 0 if changes is None else len(changes.calls)
