"""Read-model queries on voice agents for the HTTP API: plain SQL, always scoped to one space.

Rows come back as dicts of the ``agents`` columns with psycopg's types (``id`` a ``UUID``,
timestamps aware ``datetime``, ``config`` a dict).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row

from projections.agents import AGENT_COLUMNS

_COLUMNS = ", ".join(AGENT_COLUMNS)


def _uuid(value: UUID | str) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None


def get_agent(conn: Connection[Any], space_id: str, agent_id: UUID | str) -> dict[str, Any] | None:
    """The agent's row, or None when it does not exist in this space (archived ones included)."""
    ident = _uuid(agent_id)
    if ident is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM agents WHERE id = %s AND space_id = %s", (ident, space_id)
        )
        return cur.fetchone()


def agent_version(conn: Connection[Any], space_id: str, agent_id: UUID | str) -> int | None:
    """The aggregate version the read model reflects for this agent (read-your-writes waits)."""
    ident = _uuid(agent_id)
    if ident is None:
        return None
    row = conn.execute(
        "SELECT version FROM agents WHERE id = %s AND space_id = %s", (ident, space_id)
    ).fetchone()
    return None if row is None else int(row[0])


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_agents(
    conn: Connection[Any],
    space_id: str,
    *,
    limit: int,
    offset: int,
    include_archived: bool = False,
    name_contains: str | None = None,
    language: str | None = None,
    llm_provider: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a space's agents, newest first (then by id), and how many match in all."""
    where = ["space_id = %s"]
    params: list[Any] = [space_id]
    if not include_archived:
        where.append("NOT archived")
    if name_contains:
        where.append("name ILIKE %s")
        params.append(f"%{_like_escape(name_contains)}%")
    if language:
        where.append("language = %s")
        params.append(language)
    if llm_provider:
        where.append("config -> 'llm' ->> 'provider' = %s")
        params.append(llm_provider)
    condition = " AND ".join(where)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total_count FROM agents WHERE {condition} "
            "ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
            [*params, max(limit, 0), max(offset, 0)],
        )
        rows = cur.fetchall()
        if rows:
            total = int(rows[0]["total_count"])
        else:
            cur.execute(f"SELECT count(*) AS n FROM agents WHERE {condition}", params)
            found = cur.fetchone()
            total = int(found["n"]) if found else 0
    for row in rows:
        del row["total_count"]
    return rows, total
