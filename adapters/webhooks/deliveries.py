"""What the API shows and does with queued deliveries: list, inspect (with every attempt),
replay, and the queue's figures. Every query is scoped to the caller's space and endpoint."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.rows import dict_row

DELIVERY_COLUMNS = (
    "id", "endpoint_id", "event_id", "event_type", "status", "attempts", "next_attempt_at",
    "occurred_at", "enqueued_at", "last_attempt_at", "completed_at", "last_status_code",
    "last_error",
)  # fmt: skip
_SELECT = ", ".join(DELIVERY_COLUMNS)


def list_deliveries(
    conn: Connection[Any], space_id: str, endpoint_id: UUID, *, status: str | None,
    event_type: str | None, limit: int, offset: int,
) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    where = "space_id = %(space)s AND endpoint_id = %(endpoint)s"
    if status:
        where += " AND status = %(status)s"
    if event_type:
        where += " AND event_type = %(type)s"
    params = {"space": space_id, "endpoint": endpoint_id, "status": status, "type": event_type,
              "limit": limit, "offset": offset}  # fmt: skip
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(
            f"SELECT count(*) AS n FROM webhook_deliveries WHERE {where}", params
        ).fetchone()
        rows = cur.execute(
            f"SELECT {_SELECT} FROM webhook_deliveries WHERE {where} "
            "ORDER BY enqueued_at DESC, id LIMIT %(limit)s OFFSET %(offset)s",
            params,
        ).fetchall()
    return rows, int(total["n"]) if total else 0


def get_delivery(
    conn: Connection[Any], space_id: str, endpoint_id: UUID, delivery_id: UUID
) -> dict[str, Any] | None:
    """The delivery with its payload and every attempt, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_SELECT}, COALESCE(payload, (SELECT p.payload FROM webhook_payloads p "
            "WHERE p.event_id = webhook_deliveries.event_id)) AS payload "
            "FROM webhook_deliveries WHERE space_id = %s AND endpoint_id = %s AND id = %s",
            (space_id, endpoint_id, delivery_id),
        ).fetchone()
        if row is None:
            return None
        row["attempt_log"] = cur.execute(
            "SELECT attempt, started_at, status_code, latency_ms, error, response_body "
            "FROM webhook_attempts WHERE delivery_id = %s ORDER BY attempt",
            (delivery_id,),
        ).fetchall()
    return row


_REPLAY = """
UPDATE webhook_deliveries SET status = 'pending', schedule_step = 0, next_attempt_at = %(now)s,
    completed_at = NULL
WHERE space_id = %(space)s AND endpoint_id = %(endpoint)s AND {which}
"""


def replay_delivery(
    conn: Connection[Any], space_id: str, endpoint_id: UUID, delivery_id: UUID, now: datetime
) -> bool:
    """Send a finished delivery again, with a fresh retry schedule and the same webhook-id.
    False when there is no such delivery or it is still pending."""
    with conn.transaction():
        cur = conn.execute(
            _REPLAY.format(which="id = %(id)s AND status <> 'pending'"),
            {"now": now, "space": space_id, "endpoint": endpoint_id, "id": delivery_id},
        )
        if cur.rowcount <= 0:
            return False
        conn.execute("NOTIFY webhook_deliveries")
        return True


def replay_failed(
    conn: Connection[Any], space_id: str, endpoint_id: UUID, since: datetime, now: datetime
) -> int:
    """Send again every delivery that failed for good and was enqueued at or after ``since``."""
    with conn.transaction():
        cur = conn.execute(
            _REPLAY.format(which="status = 'failed' AND enqueued_at >= %(since)s"),
            {"now": now, "space": space_id, "endpoint": endpoint_id, "since": since},
        )
        replayed = max(cur.rowcount, 0)
        if replayed:
            conn.execute("NOTIFY webhook_deliveries")
    return replayed


def queue_stats(
    conn: Connection[Any], space_id: str, now: datetime, endpoint_id: UUID | None = None
) -> dict[str, Any]:
    """Queue depth and delivery lag (event occurred -> delivered) over the last hour."""
    scope = "space_id = %(space)s" + (" AND endpoint_id = %(endpoint)s" if endpoint_id else "")
    params = {"space": space_id, "endpoint": endpoint_id, "now": now}
    with conn.cursor(row_factory=dict_row) as cur:
        depth = cur.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, "
            "count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= %(now)s) AS due, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "EXTRACT(EPOCH FROM %(now)s - min(enqueued_at) FILTER (WHERE status = 'pending')) "
            f"AS oldest_pending_seconds FROM webhook_deliveries WHERE {scope}",
            params,
        ).fetchone()
        lag = cur.execute(
            "SELECT count(*) AS delivered, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM ("
            "SELECT EXTRACT(EPOCH FROM completed_at - occurred_at) * 1000 AS ms "
            f"FROM webhook_deliveries WHERE {scope} AND status = 'succeeded' "
            "AND completed_at > %(now)s - interval '1 hour') s",
            params,
        ).fetchone()
    assert depth is not None and lag is not None
    oldest = depth["oldest_pending_seconds"]
    return {
        "pending": depth["pending"],
        "due": depth["due"],
        "failed": depth["failed"],
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 3),
        "delivered_last_hour": lag["delivered"],
        "lag_p50_ms": None if lag["p50"] is None else round(float(lag["p50"]), 1),
        "lag_p99_ms": None if lag["p99"] is None else round(float(lag["p99"]), 1),
    }
