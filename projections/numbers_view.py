"""The PostgreSQL view of the numbers context: ``numbers``, ``sip_trunks``, ``provider_accounts``.

One batch is one transaction: the tracking upsert (which only moves forward) gates the rows, and
every row is written with a version guard, so a batch applied already, a redelivered message or
an older event changes nothing (DESIGN §5). ``tables`` maps each read model to the table written
(the replay writes into fresh twins).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.sql import SQL, Composed, Identifier

from projections.numbers import TABLES, is_numbers_event, latest_rows, number_row

LIVE: dict[str, str] = {name: name for name in TABLES}

_TRACK = (
    "INSERT INTO projection_tracking AS pt (projection, source, position) "
    "VALUES (%s, %s, %s) ON CONFLICT (projection, source) DO UPDATE "
    "SET position = excluded.position WHERE pt.position < excluded.position RETURNING 1"
)
_UPSERT = """
INSERT INTO {table} AS cur ({columns})
SELECT {select} FROM jsonb_to_recordset(%s::jsonb) AS r({record})
ON CONFLICT (id) DO UPDATE SET {updates}
WHERE cur.version < excluded.version
"""


def _upsert(logical: str, table: str) -> Composed:
    types = TABLES[logical]
    columns = list(types)
    return SQL(_UPSERT).format(
        table=Identifier(table),
        columns=SQL(", ").join(Identifier(c) for c in columns),
        select=SQL(", ").join(
            SQL("COALESCE(created_at, updated_at)") if c == "created_at" else Identifier(c)
            for c in columns
        ),
        record=SQL(", ".join(f"{c} {t}" for c, t in types.items())),
        updates=SQL(", ").join(
            SQL("{c} = excluded.{c}").format(c=Identifier(c))
            for c in columns
            if c not in ("id", "created_at")
        ),
    )


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def apply_number_rows(
    conn: Connection[Any],
    rows: list[tuple[str, dict[str, Any]]],
    projection: str,
    source: str,
    position: int,
    *,
    tables: Mapping[str, str] = LIVE,
) -> int:
    """Apply projected ``(table, row)`` pairs and move ``(projection, source)`` to
    ``position``, in one transaction. Returns how many rows changed (0 when this position was
    applied already)."""
    changed = 0
    with conn.transaction():
        if conn.execute(_TRACK, (projection, source, position)).fetchone() is None:
            return 0
        for logical, batch in latest_rows(rows).items():
            body = json.dumps(batch, default=_json_default, ensure_ascii=False)
            cur = conn.execute(_upsert(logical, tables[logical]), (body,))
            changed += max(cur.rowcount, 0)
    return changed


def apply_number_envelopes(
    conn: Connection[Any],
    envelopes: Iterable[dict[str, Any]],
    projection: str,
    source: str,
    position: int,
    *,
    tables: Mapping[str, str] = LIVE,
) -> int:
    """Project envelopes (other contexts' are skipped; their position still counts) and apply
    them. ``MalformedEnvelope`` before touching the database when one is unusable."""
    rows = [number_row(env) for env in envelopes if is_numbers_event(env)]
    return apply_number_rows(conn, rows, projection, source, position, tables=tables)
