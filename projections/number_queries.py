"""Read-model queries on numbers, SIP trunks and provider accounts for the HTTP API: plain SQL,
always scoped to one space. Rows are dicts with psycopg's types."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from projections.numbers import TABLES


def _uuid(value: UUID | str) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _columns(table: str) -> SQL:
    return SQL(", ".join(TABLES[table]))


def _one(conn: Connection[Any], table: str, space_id: str, ident: UUID | str) -> Any:
    found = _uuid(ident)
    if found is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            SQL("SELECT {cols} FROM {table} WHERE id = %s AND space_id = %s").format(
                cols=_columns(table), table=Identifier(table)
            ),
            (found, space_id),
        )
        return cur.fetchone()


def get_number(conn: Connection[Any], space_id: str, number_id: UUID | str) -> Any:
    """The number's row (released ones included), or None outside the space."""
    return _one(conn, "numbers", space_id, number_id)


def list_numbers(
    conn: Connection[Any],
    space_id: str,
    *,
    limit: int,
    offset: int,
    include_released: bool = False,
    agent_id: UUID | None = None,
    provider: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a space's numbers, newest first (then by id), and how many match."""
    where = ["space_id = %s"]
    params: list[Any] = [space_id]
    if not include_released:
        where.append("status = 'active'")
    if agent_id is not None:
        where.append("(inbound_agent_id = %s OR outbound_agent_id = %s)")
        params += [agent_id, agent_id]
    if provider:
        where.append("provider = %s")
        params.append(provider)
    return _page(conn, "numbers", " AND ".join(where), params, limit, offset)


def number_for_e164(conn: Connection[Any], space_id: str, e164: str) -> Any:
    """The space's active number ``e164``, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            SQL(
                "SELECT {cols} FROM numbers WHERE space_id = %s AND e164 = %s "
                "AND status = 'active' ORDER BY created_at DESC LIMIT 1"
            ).format(cols=_columns("numbers")),
            (space_id, e164),
        )
        return cur.fetchone()


def list_refused_calls(
    conn: Connection[Any], space_id: str, number_id: UUID, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the calls refused at ``number_id`` (newest first), and how many there are."""
    condition = "space_id = %s AND number_id = %s"
    return _page(conn, "refused_calls", condition, [space_id, number_id], limit, offset)


def released_number_for_e164(conn: Connection[Any], e164: str) -> Any:
    """The number ``e164`` that was released last, in whichever space, or None: where a call
    to a number that is no longer anybody's is recorded (trusted entry points only; never
    answer it to a space)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            SQL(
                "SELECT {cols} FROM numbers WHERE e164 = %s AND status = 'released' "
                "ORDER BY released_at DESC NULLS LAST, updated_at DESC, id LIMIT 1"
            ).format(cols=_columns("numbers")),
            (e164,),
        )
        return cur.fetchone()


def caller_id_of(conn: Connection[Any], space_id: str, agent_id: UUID) -> Any:
    """The active number ``agent_id`` calls out from (the latest set), or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            SQL(
                "SELECT {cols} FROM numbers WHERE space_id = %s AND outbound_agent_id = %s "
                "AND status = 'active' ORDER BY updated_at DESC, id LIMIT 1"
            ).format(cols=_columns("numbers")),
            (space_id, agent_id),
        )
        return cur.fetchone()


def get_trunk(conn: Connection[Any], space_id: str, trunk_id: UUID | str) -> Any:
    return _one(conn, "sip_trunks", space_id, trunk_id)


def list_trunks(
    conn: Connection[Any], space_id: str, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    return _page(conn, "sip_trunks", "space_id = %s AND NOT deleted", [space_id], limit, offset)


def get_account(conn: Connection[Any], space_id: str, account_id: UUID) -> Any:
    return _one(conn, "provider_accounts", space_id, account_id)


def _page(
    conn: Connection[Any], table: str, condition: str, params: list[Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            SQL(
                "SELECT {cols}, count(*) OVER () AS total_count FROM {table} WHERE "
                + condition
                + " ORDER BY created_at DESC, id LIMIT %s OFFSET %s"
            ).format(cols=_columns(table), table=Identifier(table)),
            [*params, max(limit, 0), max(offset, 0)],
        )
        rows = cur.fetchall()
        if rows:
            total = int(rows[0]["total_count"])
        else:
            cur.execute(
                SQL("SELECT count(*) AS n FROM {table} WHERE " + condition).format(
                    table=Identifier(table)
                ),
                params,
            )
            found = cur.fetchone()
            total = int(found["n"]) if found else 0
    for row in rows:
        del row["total_count"]
    return rows, total
