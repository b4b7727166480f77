"""Read-model queries on calls and costs for the HTTP API (``/api/sessions``, ``/api/costs``).

Plain SQL, always scoped to one space. Rows come back as dicts with psycopg's types (``id`` a
``UUID``, timestamps aware ``datetime``, money ``Decimal`` USD). Periods are half-open:
``since <= t < until``; ``None`` leaves a side open. Cost queries read the ``cost_daily``
rollup (UTC days), so their ``since`` / ``until`` are dates (a datetime counts as its UTC date).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row

from projections.calls import CALL_COLUMNS
from projections.pricing import CATEGORIES, CATEGORY_OF

Granularity = Literal["day", "week", "month"]
_COLUMNS = ", ".join(CALL_COLUMNS)
# one call in detail: its row and the caller's key presses (DTMF) in the order pressed
_DETAIL = _COLUMNS + (
    ", (SELECT coalesce(jsonb_agg(jsonb_build_object('digit', d.digit, 'offset_ms', d.offset_ms,"
    " 'at', d.at) ORDER BY d.offset_ms, d.seq), '[]') FROM call_dtmf d"
    " WHERE d.call_id = calls.id AND d.space_id = calls.space_id) AS dtmf"
)
_UNITS = {c: (unit, per) for c, unit, per in CATEGORY_OF.values()}


def _uuid(value: UUID | str) -> UUID | None:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        return None


def _rows(conn: Connection[Any], sql: str, params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def _day(value: date | datetime | None) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    return value


def _moment(value: date | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), UTC)


def _detail(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first row of a ``_DETAIL`` query, its key presses' ``at`` as aware datetimes."""
    if not found:
        return None
    for press in found[0]["dtmf"]:
        press["at"] = datetime.fromisoformat(press["at"])
    return found[0]


def display(category: str, quantity: Decimal) -> tuple[Decimal, str]:
    """A category's quantity in its display unit: seconds -> minutes, tokens, characters."""
    unit, per = _UNITS.get(category, ("units", 1))
    return (Decimal(quantity) / per if per != 1 else Decimal(quantity)), unit


# -- calls ------------------------------------------------------------------------------------
def get_call(conn: Connection[Any], space_id: str, call_id: UUID | str) -> dict[str, Any] | None:
    """The call's row with ``dtmf`` (its key presses ``[{digit, offset_ms, at}]`` in the order
    pressed), or None when it does not exist in this space."""
    ident = _uuid(call_id)
    if ident is None:
        return None
    return _detail(_rows(conn, f"SELECT {_DETAIL} FROM calls WHERE id = %s AND space_id = %s",
                         (ident, space_id)))  # fmt: skip


def call_version(conn: Connection[Any], space_id: str, call_id: UUID | str) -> int | None:
    """The aggregate version the read model reflects for this call (read-your-writes waits)."""
    row = get_call(conn, space_id, call_id)
    return None if row is None else int(row["version"])


def get_call_by_room(conn: Connection[Any], space_id: str, room_name: str) -> dict[str, Any] | None:
    """The call held in this LiveKit room (the latest one, should a room name be reused), as
    ``get_call`` returns it."""
    found = _rows(
        conn,
        f"SELECT {_DETAIL} FROM calls WHERE space_id = %s AND room_name = %s "
        "ORDER BY initiated_at DESC NULLS LAST, id LIMIT 1",
        (space_id, room_name),
    )
    return _detail(found)


def list_calls(
    conn: Connection[Any],
    space_id: str,
    *,
    limit: int,
    offset: int,
    agent_id: UUID | str | None = None,
    status: str | None = None,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of a space's calls, newest first (by ``initiated_at``, then id), and how many
    match in all. ``since`` / ``until`` bound ``initiated_at``. Rows without ``dtmf``."""
    where, params = ["space_id = %s"], [space_id]
    for clause, value in (
        ("agent_id = %s", None if agent_id is None else str(agent_id)),
        ("status = %s", status),
        ("initiated_at >= %s", _moment(since)),
        ("initiated_at < %s", _moment(until)),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)  # type: ignore[arg-type]
    condition = " AND ".join(where)
    rows = _rows(
        conn,
        f"SELECT {_COLUMNS}, count(*) OVER () AS total_count FROM calls WHERE {condition} "
        "ORDER BY initiated_at DESC NULLS LAST, id LIMIT %s OFFSET %s",
        [*params, max(limit, 0), max(offset, 0)],
    )
    if rows:
        total = int(rows[0]["total_count"])
    else:
        total = int(
            _rows(conn, f"SELECT count(*) AS n FROM calls WHERE {condition}", params)[0]["n"]
        )
    for row in rows:
        del row["total_count"]
    return rows, total


def _of_call(
    conn: Connection[Any], space_id: str, call_id: UUID | str, table: str, columns: str, order: str
) -> list[dict[str, Any]]:
    ident = _uuid(call_id)
    if ident is None:
        return []
    return _rows(
        conn,
        f"SELECT {columns} FROM {table} WHERE call_id = %s AND space_id = %s ORDER BY {order}",
        (ident, space_id),
    )


def transcripts(conn: Connection[Any], space_id: str, call_id: UUID | str) -> list[dict[str, Any]]:
    """The call's transcript lines in spoken order (``start_ms``, then ``seq``)."""
    columns = "seq, turn_id, speaker, text, start_ms, end_ms, at, interrupted"
    return _of_call(conn, space_id, call_id, "call_transcripts", columns, "start_ms, seq")


def tool_calls(conn: Connection[Any], space_id: str, call_id: UUID | str) -> list[dict[str, Any]]:
    """The call's tool invocations in the order they were recorded."""
    columns = "seq, turn_id, name, arguments, result, error, status, latency_ms, at"
    return _of_call(conn, space_id, call_id, "call_tool_calls", columns, "seq")


def turns(conn: Connection[Any], space_id: str, call_id: UUID | str) -> list[dict[str, Any]]:
    """The call's per-turn latency metrics in the order they were recorded."""
    columns = ("seq, turn_id, end_of_speech_to_first_audio_ms, stt_final_ms, llm_first_token_ms, "
               "tts_first_byte_ms, at")  # fmt: skip
    return _of_call(conn, space_id, call_id, "call_turns", columns, "seq")


# -- costs ------------------------------------------------------------------------------------
def _categories(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{category: {quantity, unit, cost_usd}}`` for every category (zeros included)."""
    out: dict[str, dict[str, Any]] = {}
    for name in CATEGORIES:
        quantity, unit = display(name, Decimal(0))
        out[name] = {"quantity": quantity, "unit": unit, "cost_usd": Decimal("0.000000")}
    for row in rows:
        quantity, unit = display(row["category"], row["quantity"])
        entry = out.setdefault(row["category"], {"quantity": Decimal(0), "unit": unit,
                                                 "cost_usd": Decimal(0)})  # fmt: skip
        entry["quantity"] += quantity
        entry["cost_usd"] += row["cost_usd"]
    return out


def cost_breakdown(
    conn: Connection[Any], space_id: str, call_id: UUID | str
) -> dict[str, Any] | None:
    """The call's cost: ``{call_id, total_usd, categories: {category: {quantity, unit,
    cost_usd}}, lines: [{provider, model, kind, category, quantity, unit, unit_price, cost_usd,
    price_entry, usage_count}]}``; None when the call does not exist in this space."""
    call = get_call(conn, space_id, call_id)
    if call is None:
        return None
    lines = _rows(
        conn,
        "SELECT provider, model, kind, category, sum(quantity) AS quantity, unit_price, "
        "sum(cost_usd) AS cost_usd, price_entry, count(*) AS usage_count FROM call_usage "
        "WHERE call_id = %s AND space_id = %s "
        "GROUP BY provider, model, kind, category, unit_price, price_entry "
        "ORDER BY category, provider, model, kind, price_entry",
        (call["id"], space_id),
    )
    categories = _categories(lines)
    for line in lines:
        line["quantity"], line["unit"] = display(line["category"], line["quantity"])
    return {
        "call_id": call["id"],
        "total_usd": call["total_cost_usd"],
        "categories": categories,
        "lines": lines,
    }


def _day_range(
    since: date | datetime | None, until: date | datetime | None
) -> tuple[str, list[Any]]:
    where, params = ["space_id = %s"], []
    for clause, value in (("day >= %s", _day(since)), ("day < %s", _day(until))):
        if value is not None:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params


def _call_count(
    conn: Connection[Any], space_id: str, since: Any, until: Any, by_agent: bool = False
) -> dict[str, int]:
    where, params = ["space_id = %s"], list[Any]([space_id])
    for clause, value in (("initiated_at >= %s", since), ("initiated_at < %s", until)):
        if value is not None:
            where.append(clause)
            params.append(_moment(_day(value)))
    key = "coalesce(agent_id, '')" if by_agent else "''"
    found = _rows(
        conn,
        f"SELECT {key} AS k, count(*) AS n FROM calls WHERE {' AND '.join(where)} GROUP BY 1",
        params,
    )
    return {r["k"]: int(r["n"]) for r in found}


def cost_summary(
    conn: Connection[Any],
    space_id: str,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
) -> dict[str, Any]:
    """``{total_usd, call_count, usage_count, by_provider: [{provider, cost_usd,
    usage_count}], by_category: {category: {quantity, unit, cost_usd}}}`` over the period;
    ``call_count`` counts the calls initiated in it."""
    condition, params = _day_range(since, until)
    rows = _rows(
        conn,
        "SELECT provider, category, sum(quantity) AS quantity, sum(cost_usd) AS cost_usd, "
        f"sum(usage_count) AS usage_count FROM cost_daily WHERE {condition} "
        "GROUP BY provider, category ORDER BY provider, category",
        [space_id, *params],
    )
    providers: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = providers.setdefault(
            row["provider"], {"provider": row["provider"], "cost_usd": Decimal(0), "usage_count": 0}
        )
        entry["cost_usd"] += row["cost_usd"]
        entry["usage_count"] += int(row["usage_count"])
    return {
        "total_usd": sum((r["cost_usd"] for r in rows), Decimal("0.000000")),
        "call_count": _call_count(conn, space_id, since, until).get("", 0),
        "usage_count": sum(int(r["usage_count"]) for r in rows),
        "by_provider": sorted(providers.values(), key=lambda e: (-e["cost_usd"], e["provider"])),
        "by_category": _categories(rows),
    }


def cost_timeline(
    conn: Connection[Any],
    space_id: str,
    granularity: Granularity = "day",
    since: date | datetime | None = None,
    until: date | datetime | None = None,
) -> list[dict[str, Any]]:
    """``[{period, cost_usd, usage_count, by_category: {category: cost_usd}}]`` oldest first,
    one entry per period with usage; ``period`` is the first day (weeks start on Monday)."""
    if granularity not in ("day", "week", "month"):
        raise ValueError("granularity must be day, week or month")
    condition, params = _day_range(since, until)
    rows = _rows(
        conn,
        "SELECT date_trunc(%s, day)::date AS period, category, sum(cost_usd) AS cost_usd, "
        f"sum(usage_count) AS usage_count FROM cost_daily WHERE {condition} "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        [granularity, space_id, *params],
    )
    periods: dict[date, dict[str, Any]] = {}
    for row in rows:
        entry = periods.setdefault(row["period"], {
            "period": row["period"], "cost_usd": Decimal(0), "usage_count": 0,
            "by_category": dict.fromkeys(CATEGORIES, Decimal("0.000000"))})  # fmt: skip
        entry["cost_usd"] += row["cost_usd"]
        entry["usage_count"] += int(row["usage_count"])
        entry["by_category"][row["category"]] = row["cost_usd"]
    return list(periods.values())


def cost_by_agent(
    conn: Connection[Any],
    space_id: str,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
) -> list[dict[str, Any]]:
    """``[{agent_id, agent_name, cost_usd, usage_count, call_count, by_category: {category:
    cost_usd}}]``, most expensive first; ``agent_name`` from the agents read model (None when
    unknown), ``call_count`` the agent's calls initiated in the period."""
    condition, params = _day_range(since, until)
    rows = _rows(
        conn,
        "SELECT agent_id, category, sum(cost_usd) AS cost_usd, sum(usage_count) AS usage_count "
        f"FROM cost_daily WHERE {condition} GROUP BY 1, 2 ORDER BY 1, 2",
        [space_id, *params],
    )
    calls = _call_count(conn, space_id, since, until, by_agent=True)
    agents: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = agents.setdefault(row["agent_id"], {
            "agent_id": row["agent_id"], "agent_name": None, "cost_usd": Decimal(0),
            "usage_count": 0, "call_count": calls.get(row["agent_id"], 0),
            "by_category": dict.fromkeys(CATEGORIES, Decimal("0.000000"))})  # fmt: skip
        entry["cost_usd"] += row["cost_usd"]
        entry["usage_count"] += int(row["usage_count"])
        entry["by_category"][row["category"]] = row["cost_usd"]
    ids = [i for i in agents if _uuid(i) is not None]
    if ids:
        for found in _rows(
            conn,
            "SELECT id::text AS id, name FROM agents WHERE space_id = %s AND id = ANY(%s::uuid[])",
            (space_id, ids),
        ):
            agents[found["id"]]["agent_name"] = found["name"]
    return sorted(agents.values(), key=lambda e: (-e["cost_usd"], e["agent_id"]))
