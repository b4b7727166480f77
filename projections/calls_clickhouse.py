"""Call rows for ClickHouse (``infra/sql/clickhouse/002_calls.sql``, ``003_dtmf.sql``,
``005_provider_statuses.sql``) and the
batch writing them.

Event tables (``transcripts``, ``tool_calls``, ``usage``, ``turns``, ``dtmf``,
``provider_statuses``) get one row per
event from the same pure projector as PostgreSQL. ``calls`` needs the call's state (call events are
not self-contained), and the ClickHouse projector keeps it in ClickHouse itself: a batch reads the
touched calls' latest rows (``FINAL``), folds its events onto them with
``projections.calls.project_calls`` (events at or below a row's version change nothing) and inserts
the new rows, event tables first and ``calls`` last. One Kafka partition holds a call's events and
is consumed by one projector at a time, so reads and writes of a call never interleave; a failed
batch is retried from the same state; re-inserted rows collapse in the ReplacingMergeTrees. It
depends on nothing but ClickHouse: PostgreSQL may lag or be down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from projections import calls as p
from projections.clickhouse_rows import compact_json
from projections.pricing import MICRO, Catalog


class Insert(Protocol):
    """Inserts rows into a ClickHouse table (``adapters.clickhouse.writer.insert_rows``)."""

    def __call__(
        self, client: Any, table: str, rows: list[dict[str, Any]], *, columns: Sequence[str]
    ) -> int: ...


CALL_COLUMNS = (
    "call_id", "space_id", "agent_id", "agent_config_version", "direction", "channel",
    "from_number", "to_number", "room_name", "status", "initiated_at", "initiated_at_ms",
    "started_at", "started_at_ms", "ended_at", "ended_at_ms", "end_reason", "duration_ms",
    "transfer_mode", "transfer_target", "transfer_status", "transcript_count", "tool_call_count",
    "tool_error_count", "turn_count", "usage_count", "total_cost_micros", "version",
    "updated_at", "updated_at_ms",
)  # fmt: skip
_TAIL = ("at", "at_ms", "position")
EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "transcripts": ("call_id", "seq", "space_id", "agent_id", "turn_id", "speaker", "text",
                    "start_ms", "end_ms", *_TAIL),
    "tool_calls": ("call_id", "seq", "space_id", "agent_id", "turn_id", "name", "arguments",
                   "result", "error", "status", "latency_ms", *_TAIL),
    "usage": ("call_id", "seq", "space_id", "agent_id", "provider", "model", "kind", "category",
              "quantity", "unit_price", "cost_micros", "price_entry", *_TAIL),
    "turns": ("call_id", "seq", "space_id", "agent_id", "turn_id", *p.TURN_COLUMNS[4:8], *_TAIL),
    "dtmf": ("call_id", "seq", "space_id", "agent_id", "digit", "offset_ms", *_TAIL),
    "provider_statuses": ("call_id", "seq", "space_id", "agent_id", "provider",
                          "provider_call_id", "status", "answered_by", "sip_code", "reason",
                          *_TAIL),
}  # fmt: skip
_TIMES = ("initiated_at", "started_at", "ended_at", "updated_at")
_STRINGS: tuple[str, ...] = ("agent_id", "direction", "channel", "from_number", "to_number")
_STRINGS += ("room_name", "end_reason", "transfer_mode", "transfer_target", "transfer_status")


def micros(usd: Decimal | int | str) -> int:
    return int((Decimal(usd) / MICRO).to_integral_value())


def _split(moment: datetime | None) -> tuple[datetime | None, int]:
    if moment is None:
        return None, 0
    return moment.replace(microsecond=0), moment.microsecond // 1000


def clickhouse_call_row(row: dict[str, Any]) -> dict[str, Any]:
    """The ``calls`` row of a folded call row (``projections.calls.fold_call``)."""
    out: dict[str, Any] = {c: row[c] for c in p.CALL_COLUMNS if c in CALL_COLUMNS}
    out["call_id"] = row["id"]
    for name in _TIMES:
        out[name], out[f"{name}_ms"] = _split(row[name])
    out["initiated_at"] = out["initiated_at"] or datetime.fromtimestamp(0, UTC)
    for name in _STRINGS:
        out[name] = row[name] or ""
    out["agent_config_version"] = row["agent_config_version"] or 0
    out["duration_ms"] = row["duration_ms"] or 0
    out["total_cost_micros"] = micros(row["total_cost_usd"])
    return out


def clickhouse_event_rows(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """A ``transcripts`` / ``tool_calls`` / ``usage`` / ``turns`` / ``dtmf`` row of an event
    row."""
    out = dict(row)
    out["at"], out["at_ms"] = _split(row["at"])
    if kind == "tool_calls":
        out["turn_id"] = row["turn_id"] or ""
        out["error"] = row["error"] or ""
        out["arguments"] = compact_json(row["arguments"])
        out["result"] = compact_json(row["result"])
    elif kind == "usage":
        out["unit_price"] = float(row["unit_price"])
        out["cost_micros"] = micros(row["cost_usd"])
    elif kind == "provider_statuses":
        out["answered_by"] = row["answered_by"] or ""
        out["reason"] = row["reason"] or ""
        out["sip_code"] = row["sip_code"] or 0
    return {c: out[c] for c in EVENT_COLUMNS[kind]}


def _moment(seconds: int | None, ms: int) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=ms * 1000)


_SELECT = ", ".join(
    f"toUnixTimestamp({c})" if c in _TIMES else c for c in CALL_COLUMNS
)  # times as epoch seconds: no time zone conversion on the way back


def call_state(values: tuple[Any, ...]) -> dict[str, Any]:
    """A folded call row back from a ``calls`` row selected with ``_SELECT``."""
    got = dict(zip(CALL_COLUMNS, values, strict=True))
    row: dict[str, Any] = {c: got.get(c) for c in p.CALL_COLUMNS}
    row["id"] = got["call_id"]
    for name in _TIMES:
        row[name] = _moment(got[name], got[f"{name}_ms"])
    for name in _STRINGS:
        row[name] = got[name] or None
    row["total_cost_usd"] = Decimal(got["total_cost_micros"]) * MICRO
    return row


def load_calls(client: Any, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    found = client.execute(
        f"SELECT {_SELECT} FROM calls FINAL WHERE call_id IN %(ids)s", {"ids": tuple(wanted)}
    )
    return {row["id"]: row for row in map(call_state, found)}


def changes_rows(changes: p.CallChanges) -> dict[str, list[dict[str, Any]]]:
    """Every ClickHouse row of a batch's changes, by table (``calls`` last)."""
    tables = {k: [clickhouse_event_rows(k, r) for r in rows] for k, rows in changes.events.items()}
    tables["calls"] = [clickhouse_call_row(r) for r in changes.calls.values()]
    return tables


def apply_clickhouse_calls(
    client: Any, events: list[p.CallEvent], catalog: Catalog, insert: Insert
) -> p.CallChanges:
    """Fold ``events`` onto the calls' rows in ClickHouse and insert what changed."""
    changes = p.project_calls(events, load_calls(client, (e.call_id for e in events)), catalog)
    for table, rows in changes_rows(changes).items():
        columns = CALL_COLUMNS if table == "calls" else EVENT_COLUMNS[table]
        insert(client, table, rows, columns=columns)
    return changes
