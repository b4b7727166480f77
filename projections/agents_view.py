"""The PostgreSQL view of voice agents: applies projected rows and the tracking record together.

One batch is one transaction and one statement: the tracking upsert (which only moves forward)
gates the rows, and every row is written with a version guard, so a batch that was already
applied, a redelivered message or an older event changes nothing (DESIGN §5).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Composed, Identifier

from projections.agents import AGENT_COLUMNS, agent_row, is_agent_event, latest_rows

_RECORD_TYPES = {
    "id": "uuid",
    "space_id": "text",
    "name": "text",
    "description": "text",
    "language": "text",
    "config": "jsonb",
    "config_version": "integer",
    "archived": "boolean",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "archived_at": "timestamptz",
    "version": "bigint",
    "position": "bigint",
}
# created_at is left out on purpose: an existing row keeps the moment it was created
_UPDATED_ON_CONFLICT = [c for c in AGENT_COLUMNS if c not in ("id", "created_at")]

_APPLY = """
WITH tracked AS (
    INSERT INTO projection_tracking AS pt (projection, source, position)
    VALUES (%(projection)s, %(source)s, %(position)s)
    ON CONFLICT (projection, source) DO UPDATE SET position = excluded.position
    WHERE pt.position < excluded.position
    RETURNING 1
), incoming AS (
    SELECT r.* FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({record})
    WHERE EXISTS (SELECT 1 FROM tracked)
)
INSERT INTO {table} AS cur ({columns})
SELECT {select} FROM incoming
ON CONFLICT (id) DO UPDATE SET {updates}
WHERE cur.version < excluded.version
"""


def _apply_statement(table: str) -> Composed:
    record = ", ".join(f"{c} {t}" for c, t in _RECORD_TYPES.items())
    select = ", ".join(
        "COALESCE(created_at, updated_at)" if c == "created_at" else c for c in AGENT_COLUMNS
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in _UPDATED_ON_CONFLICT)
    return SQL(_APPLY).format(
        record=SQL(record),
        table=Identifier(table),
        columns=SQL(", ".join(AGENT_COLUMNS)),
        select=SQL(select),
        updates=SQL(updates),
    )


_STATEMENTS: dict[str, Composed] = {}


def _statement(table: str) -> Composed:
    if table not in _STATEMENTS:
        _STATEMENTS[table] = _apply_statement(table)
    return _STATEMENTS[table]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def apply_agent_rows(
    conn: Connection[Any],
    rows: list[dict[str, Any]],
    projection: str,
    source: str,
    position: int,
    *,
    table: str = "agents",
) -> int:
    """Apply already projected rows and move ``(projection, source)`` to ``position``.

    Returns how many rows changed (0 when this position was already applied).
    """
    batch = sorted(latest_rows(rows), key=lambda r: r["id"])  # one lock order for all writers
    params = {
        "projection": projection,
        "source": source,
        "position": position,
        "rows": rows_json(batch),
    }
    with conn.transaction():
        cur = conn.execute(_statement(table), params)
        return max(cur.rowcount, 0)


def apply_agent_envelopes(
    conn: Connection[Any],
    envelopes: Iterable[dict[str, Any]],
    projection: str,
    source: str,
    position: int,
    *,
    table: str = "agents",
) -> int:
    """Project agent envelopes and apply them with the tracking record, in one transaction.

    Envelopes of other event types are skipped (their position still counts). Raises
    ``projections.agents.MalformedEnvelope`` before touching the database when one is unusable.
    """
    rows = [agent_row(env) for env in envelopes if is_agent_event(env)]
    return apply_agent_rows(conn, rows, projection, source, position, table=table)


def tracked_position(conn: Connection[Any], projection: str, source: str) -> int | None:
    row = conn.execute(
        "SELECT position FROM projection_tracking WHERE projection = %s AND source = %s",
        (projection, source),
    ).fetchone()
    return None if row is None else int(row[0])
