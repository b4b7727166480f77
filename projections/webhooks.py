"""Webhook endpoints' read model: the pure projector, its upsert, and the matching of events to
subscribed endpoints (DESIGN §5).

Every ``webhook.endpoint_*`` event carries the endpoint's whole public state, so one envelope is
enough for the row; the upsert is guarded by the aggregate version, so redelivery and replays
change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Connection

from domain.webhooks import subscribes
from projections.agents import MalformedEnvelope, parse_occurred_at
from projections.agents_view import rows_json

ENDPOINT_EVENT_PREFIX = "webhook.endpoint_"
ENDPOINT_COLUMNS = (
    "id", "space_id", "url", "description", "event_types", "enabled", "disabled_reason",
    "secret_version", "deleted", "created_at", "updated_at", "version", "position",
)  # fmt: skip


def is_endpoint_event(env: dict[str, Any]) -> bool:
    return str(env.get("type", "")).startswith(ENDPOINT_EVENT_PREFIX)


def endpoint_row(env: dict[str, Any]) -> dict[str, Any]:
    try:
        state = env["data"]["endpoint"]
        at = parse_occurred_at(env["occurred_at"])
        return {
            "id": str(UUID(env["aggregate_id"])),
            "space_id": env["space_id"],
            "url": state["url"],
            "description": state.get("description", ""),
            "event_types": list(state["event_types"]),
            "enabled": bool(state["enabled"]),
            "disabled_reason": state.get("disabled_reason"),
            "secret_version": int(state["secret_version"]),
            "deleted": env["type"] == "webhook.endpoint_deleted",
            "created_at": at if env["type"] == "webhook.endpoint_created" else None,
            "updated_at": at,
            "version": int(env["aggregate_version"]),
            "position": int(env["position"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEnvelope(f"unusable {env.get('type')} envelope: {exc!r}") from exc


_UPSERT = f"""
INSERT INTO webhook_endpoints AS cur ({", ".join(ENDPOINT_COLUMNS)})
SELECT r.id, r.space_id, r.url, r.description,
       ARRAY(SELECT jsonb_array_elements_text(r.event_types)), r.enabled, r.disabled_reason,
       r.secret_version, r.deleted, COALESCE(r.created_at, r.updated_at), r.updated_at,
       r.version, r.position
FROM jsonb_to_recordset(%s::jsonb) AS r(
    id uuid, space_id text, url text, description text, event_types jsonb, enabled boolean,
    disabled_reason text, secret_version integer, deleted boolean, created_at timestamptz,
    updated_at timestamptz, version bigint, position bigint)
ORDER BY r.id
ON CONFLICT (id) DO UPDATE SET
    url = excluded.url, description = excluded.description,
    event_types = excluded.event_types, enabled = excluded.enabled,
    disabled_reason = excluded.disabled_reason, secret_version = excluded.secret_version,
    deleted = excluded.deleted, updated_at = excluded.updated_at,
    version = excluded.version, position = excluded.position
WHERE cur.version < excluded.version
"""


def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = newest.get(row["id"])
        if seen is None or seen["version"] < row["version"]:
            if seen is not None and row["created_at"] is None:
                row = {**row, "created_at": seen["created_at"]}
            newest[row["id"]] = row
    return list(newest.values())


def apply_endpoint_rows(conn: Connection[Any], rows: list[dict[str, Any]]) -> None:
    """Upsert in the caller's transaction (the dispatcher commits it with the deliveries)."""
    if rows:
        conn.execute(_UPSERT, (rows_json(latest(rows)),))


Subscribers = dict[str, list[tuple[UUID, list[str], datetime]]]


def subscribed_endpoints(conn: Connection[Any], space_ids: set[str]) -> Subscribers:
    """Per space: the enabled endpoints, their patterns and when they were created."""
    found: Subscribers = {s: [] for s in space_ids}
    cur = conn.execute(
        "SELECT space_id, id, event_types, created_at FROM webhook_endpoints "
        "WHERE space_id = ANY(%s) AND enabled AND NOT deleted",
        (list(space_ids),),
    )
    for space_id, endpoint_id, patterns, created_at in cur:
        found[space_id].append((endpoint_id, patterns, created_at))
    return found


def targets(env: dict[str, Any], endpoints: Subscribers) -> list[UUID]:
    """The endpoints that receive ``env``: enabled, subscribed to its type, and created no later
    than it occurred (a consumer group reading old history does not send it to new endpoints)."""
    candidates = endpoints.get(env.get("space_id", ""), [])
    if not candidates:
        return []
    occurred = parse_occurred_at(env["occurred_at"])
    return [
        endpoint_id
        for endpoint_id, patterns, created_at in candidates
        if created_at <= occurred and subscribes(patterns, env.get("type", ""))
    ]


def get_endpoint(conn: Connection[Any], space_id: str, endpoint_id: UUID) -> dict[str, Any] | None:
    """The endpoint's row, deleted or not (the caller decides what a deleted one means)."""
    cur = conn.execute(
        f"SELECT {', '.join(ENDPOINT_COLUMNS)} FROM webhook_endpoints "
        "WHERE space_id = %s AND id = %s",
        (space_id, endpoint_id),
    )
    row = cur.fetchone()
    return None if row is None else dict(zip(ENDPOINT_COLUMNS, row, strict=True))


def list_endpoints(
    conn: Connection[Any], space_id: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    total = conn.execute(
        "SELECT count(*) FROM webhook_endpoints WHERE space_id = %s AND NOT deleted", (space_id,)
    ).fetchone()
    cur = conn.execute(
        f"SELECT {', '.join(ENDPOINT_COLUMNS)} FROM webhook_endpoints "
        "WHERE space_id = %s AND NOT deleted ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
        (space_id, limit, offset),
    )
    rows = [dict(zip(ENDPOINT_COLUMNS, row, strict=True)) for row in cur]
    return rows, int(total[0]) if total else 0
