"""The durable delivery queue in PostgreSQL: enqueue, claim, record (DESIGN §4 webhooks).

- The dispatcher enqueues one row per (endpoint, event); the row id is derived from both, so a
  redelivered Kafka message adds nothing.
- A sender claims due rows with ``FOR UPDATE SKIP LOCKED`` and moves their ``next_attempt_at``
  past a lease: a sender killed mid-attempt leaves rows that fall due again after the lease, and
  the retry carries the same ``webhook-id``.
- Recording an attempt, the delivery's new state and the endpoint's health is one transaction
  per batch of finished attempts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from psycopg import Connection

from adapters.webhooks.http import Outcome
from domain.delivery import RetryPolicy

NAMESPACE = UUID("2f0f6d1e-7c55-4b8e-9d8e-5b7f0e1c9a40")
CHANNEL = "webhook_deliveries"  # NOTIFY channel that wakes the senders


def delivery_id(endpoint_id: UUID, event_id: str) -> UUID:
    return uuid5(NAMESPACE, f"{endpoint_id}:{event_id}")


@dataclass(frozen=True)
class Fanout:
    """One event (its exact JSON body) and the endpoints that receive it."""

    payload: str
    envelope: dict[str, Any]
    endpoint_ids: list[UUID]


def enqueue(conn: Connection[Any], fanouts: Iterable[Fanout], now: datetime) -> int:
    """Insert the deliveries (in the caller's transaction) and wake the senders on commit.

    Each event's body is stored once (``webhook_payloads``), whatever the number of endpoints;
    the arrays go over the wire in binary (``%b``), so nothing is escaped."""
    ids, spaces, endpoints, events, types, occurred = [], [], [], [], [], []
    bodies: dict[str, str] = {}
    for f in fanouts:
        event = f.envelope["event_id"]
        bodies[event] = f.payload
        for endpoint_id in f.endpoint_ids:
            ids.append(delivery_id(endpoint_id, event))
            spaces.append(f.envelope["space_id"])
            endpoints.append(endpoint_id)
            events.append(event)
            types.append(f.envelope["type"])
            occurred.append(parse_occurred(f.envelope["occurred_at"]))
    if not ids:
        return 0
    conn.execute(
        "INSERT INTO webhook_payloads (event_id, payload, created_at) "
        "SELECT e, p, %(now)b FROM unnest(%(events)b::text[], %(payloads)b::text[]) AS u(e, p) "
        "ORDER BY e ON CONFLICT (event_id) DO NOTHING",
        {"events": list(bodies), "payloads": list(bodies.values()), "now": now},
    )
    cur = conn.execute(
        "INSERT INTO webhook_deliveries (id, space_id, endpoint_id, event_id, event_type, "
        "next_attempt_at, occurred_at, enqueued_at) "
        "SELECT u.id, u.space_id, u.endpoint_id, u.event_id, u.event_type, %(now)b, "
        "u.occurred_at, %(now)b "
        "FROM unnest(%(ids)b::uuid[], %(spaces)b::text[], %(endpoints)b::uuid[], "
        "%(events)b::text[], %(types)b::text[], %(occurred)b::timestamptz[]) "
        "AS u(id, space_id, endpoint_id, event_id, event_type, occurred_at) "
        "ORDER BY u.id ON CONFLICT (id) DO NOTHING",
        {"ids": ids, "spaces": spaces, "endpoints": endpoints, "events": events,
         "types": types, "occurred": occurred, "now": now},
    )  # fmt: skip
    inserted = max(cur.rowcount, 0)
    if inserted:
        conn.execute(f"NOTIFY {CHANNEL}")
    return inserted


def parse_occurred(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def reset_health(conn: Connection[Any], endpoint_ids: list[UUID]) -> None:
    """Re-enabled endpoints start a fresh failure window (in the caller's transaction)."""
    if endpoint_ids:
        conn.execute(
            "UPDATE webhook_endpoint_health SET failing_since = NULL WHERE endpoint_id = ANY(%s)",
            (endpoint_ids,),
        )


def prune(conn: Connection[Any], before: datetime, limit: int = 10_000) -> int:
    """Forget finished deliveries (and their attempts) completed before ``before``; commits."""
    with conn.transaction():
        cur = conn.execute(
            "WITH old AS (SELECT id FROM webhook_deliveries WHERE status <> 'pending' "
            "AND completed_at < %s LIMIT %s), "
            "attempts AS (DELETE FROM webhook_attempts a USING old WHERE a.delivery_id = old.id) "
            "DELETE FROM webhook_deliveries d USING old WHERE d.id = old.id",
            (before, limit),
        )
        pruned = max(cur.rowcount, 0)
        conn.execute(
            "DELETE FROM webhook_payloads p WHERE p.created_at < %s AND NOT EXISTS "
            "(SELECT 1 FROM webhook_deliveries d WHERE d.event_id = p.event_id)",
            (before,),
        )
        return pruned


def cancel_pending(conn: Connection[Any], endpoint_ids: list[UUID], now: datetime) -> int:
    """The pending deliveries of deleted endpoints fail for good (in the caller's transaction)."""
    if not endpoint_ids:
        return 0
    cur = conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', completed_at = %s, "
        "last_error = 'endpoint_deleted' WHERE endpoint_id = ANY(%s) AND status = 'pending'",
        (now, endpoint_ids),
    )
    return max(cur.rowcount, 0)


@dataclass(frozen=True)
class Claimed:
    id: UUID
    space_id: str
    endpoint_id: UUID
    event_id: str
    payload: str
    attempts: int
    schedule_step: int
    url: str
    secrets: list[str]  # every secret that signs now, newest first


_CLAIM = """
WITH picked AS (
    SELECT d.id FROM webhook_endpoints e
    CROSS JOIN LATERAL (
        SELECT q.id, q.next_attempt_at FROM webhook_deliveries q
        WHERE q.endpoint_id = e.id AND q.status = 'pending' AND q.next_attempt_at <= %(now)s
        ORDER BY q.next_attempt_at
        LIMIT %(per_endpoint)s
        FOR UPDATE SKIP LOCKED
    ) d
    WHERE e.enabled AND NOT e.deleted AND NOT (e.id = ANY(%(saturated)s::uuid[]))
    ORDER BY d.next_attempt_at  -- the longest waiting first, whichever endpoint they are for
    LIMIT %(limit)s
), leased AS (
    UPDATE webhook_deliveries q SET next_attempt_at = %(lease_until)s
    FROM picked WHERE q.id = picked.id
    RETURNING q.id, q.space_id, q.endpoint_id, q.event_id, q.payload, q.attempts,
              q.schedule_step
)
SELECT l.id, l.space_id, l.endpoint_id, l.event_id,
       COALESCE(l.payload, (SELECT p.payload FROM webhook_payloads p
                            WHERE p.event_id = l.event_id)) AS payload,
       l.attempts, l.schedule_step, e.url, ARRAY(
    SELECT s.secret FROM webhook_secrets s
    WHERE s.endpoint_id = l.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
    ORDER BY s.secret_version DESC) AS secrets
FROM leased l JOIN webhook_endpoints e ON e.id = l.endpoint_id
"""


def claim(
    conn: Connection[Any], now: datetime, lease: timedelta, *, limit: int, per_endpoint: int,
    saturated: Iterable[UUID] = (),
) -> list[Claimed]:  # fmt: skip
    """Lease up to ``limit`` due deliveries, at most ``per_endpoint`` per endpoint, none of the
    ``saturated`` endpoints; commits."""
    params = {
        "now": now, "lease_until": now + lease, "limit": limit, "per_endpoint": per_endpoint,
        "saturated": list(saturated),
    }  # fmt: skip
    with conn.transaction():
        rows = conn.execute(_CLAIM, params).fetchall()
    return [Claimed(*row) for row in rows]


_INSERT_ATTEMPTS = """
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error,
                              response_body)
SELECT * FROM unnest(%(c0)s::uuid[], %(c1)s::int[], %(c2)s::timestamptz[], %(c3)s::int[],
                     %(c4)s::int[], %(c5)s::text[], %(c6)s::text[])
ON CONFLICT DO NOTHING
"""
_UPDATE_DELIVERIES = """
UPDATE webhook_deliveries d SET
    status = u.status, attempts = d.attempts + 1, schedule_step = d.schedule_step + u.step,
    next_attempt_at = COALESCE(u.due, d.next_attempt_at), completed_at = u.completed,
    last_attempt_at = u.started, last_status_code = u.code, last_error = u.error
FROM unnest(%(ids)s::uuid[], %(seen)s::int[], %(status)s::text[], %(due)s::timestamptz[],
            %(completed)s::timestamptz[], %(steps)s::int[], %(started)s::timestamptz[],
            %(codes)s::int[], %(errors)s::text[])
    AS u(id, seen, status, due, completed, step, started, code, error)
WHERE d.id = u.id AND d.status = 'pending' AND d.attempts = u.seen
"""


@dataclass(frozen=True)
class Finished:
    claimed: Claimed
    started_at: datetime
    outcome: Outcome


@dataclass(frozen=True)
class Failing:
    """An endpoint that has failed every attempt since ``failing_since``."""

    endpoint_id: UUID
    space_id: str
    failing_since: datetime


def record(
    conn: Connection[Any], finished: list[Finished], policy: RetryPolicy, now: datetime,
    draw: Callable[[], float],
) -> list[Failing]:  # fmt: skip
    """Record the attempts and each delivery's next state; returns the endpoints that have now
    been failing for ``policy.disable_after``. A delivery whose lease another sender took over
    (its ``attempts`` moved on) keeps the other sender's state."""
    attempts: dict[str, list[Any]] = {f"c{i}": [] for i in range(7)}
    updates: dict[str, list[Any]] = {
        k: []
        for k in (
            "ids",
            "seen",
            "status",
            "due",
            "completed",
            "steps",
            "started",
            "codes",
            "errors",
        )
    }
    healthy: dict[UUID, str] = {}
    failing: dict[UUID, str] = {}
    for f in finished:
        c, o = f.claimed, f.outcome
        row = (c.id, c.attempts + 1, f.started_at, o.status_code, o.latency_ms, o.error,
               o.response_body)  # fmt: skip
        for i, value in enumerate(row):
            attempts[f"c{i}"].append(value)
        if o.ok:
            status, due, completed, step = "succeeded", None, now, 0
            healthy[c.endpoint_id] = c.space_id
        else:
            failing[c.endpoint_id] = c.space_id
            delay = policy.retry_delay(c.schedule_step + 1, draw())
            if delay is None:
                status, due, completed, step = "failed", None, now, 1
            else:
                status, due, completed, step = "pending", now + timedelta(seconds=delay), None, 1
        change = (c.id, c.attempts, status, due, completed, step, f.started_at, o.status_code,
                  o.error)  # fmt: skip
        for key, value in zip(updates, change, strict=True):
            updates[key].append(value)
    with conn.transaction(), conn.cursor() as cur:
        # one statement each, joined on the primary key: a per-row UPDATE could be planned
        # over the partial "due" index and read every pending row, once per row
        cur.execute(_INSERT_ATTEMPTS, attempts)
        cur.execute(_UPDATE_DELIVERIES, updates)
        for endpoint_id in sorted(healthy):
            failing.pop(endpoint_id, None)
            cur.execute(
                "INSERT INTO webhook_endpoint_health (endpoint_id, last_success_at) "
                "VALUES (%s, %s) ON CONFLICT (endpoint_id) DO UPDATE "
                "SET failing_since = NULL, last_success_at = excluded.last_success_at",
                (endpoint_id, now),
            )
        gave_up: list[Failing] = []
        for endpoint_id in sorted(failing):
            cur.execute(
                "INSERT INTO webhook_endpoint_health AS h (endpoint_id, failing_since, "
                "last_failure_at) VALUES (%s, %s, %s) ON CONFLICT (endpoint_id) DO UPDATE "
                "SET failing_since = COALESCE(h.failing_since, excluded.failing_since), "
                "last_failure_at = excluded.last_failure_at RETURNING failing_since",
                (endpoint_id, now, now),
            )
            health = cur.fetchone()
            since = health[0] if health else None
            if since is not None and policy.should_disable(since, now):
                gave_up.append(Failing(endpoint_id, failing[endpoint_id], since))
    return gave_up


def enqueue_one(
    conn: Connection[Any], endpoint_id: UUID, body: dict[str, Any], now: datetime
) -> UUID:
    """One delivery of ``body`` (an envelope, e.g. ``webhook.test``) to one endpoint, sent like
    any other; commits."""
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    fanout = Fanout(payload, body, [endpoint_id])
    with conn.transaction():
        enqueue(conn, [fanout], now)
    return delivery_id(endpoint_id, body["event_id"])
