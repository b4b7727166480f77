"""The ``consumer_status`` table: each Kafka consumer's state as its runtime reports it
(``adapters.kafka.consumer.Status``), and how ``/health`` reads it."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from adapters.kafka.consumer import Status
from domain.text import scrubbed

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
TIMEOUT = 2.0  # a report waits this long for a connection at most (PostgreSQL may be away)


def write_status(pool: Any, status: Status) -> None:
    with pool.connection(timeout=TIMEOUT) as conn:
        conn.execute(
            "INSERT INTO consumer_status "
            "(consumer, state, error, source, since, counters, instance, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (consumer) DO UPDATE SET "
            "state = excluded.state, error = excluded.error, source = excluded.source, "
            "since = excluded.since, counters = excluded.counters, "
            "instance = excluded.instance, updated_at = now()",
            (
                status.consumer,
                status.state,
                scrubbed(status.error),
                status.source,
                datetime.fromtimestamp(status.since, UTC),
                json.dumps(status.counters),
                INSTANCE,
            ),
        )


def read_statuses(conn: Any) -> dict[str, dict[str, Any]]:
    """Every consumer's last reported state, by name."""
    rows = conn.execute(
        "SELECT consumer, state, error, source, since, counters, instance, updated_at "
        "FROM consumer_status ORDER BY consumer"
    ).fetchall()
    return {
        r[0]: {
            "state": r[1],
            "error": r[2] or None,
            "source": r[3] or None,
            "since": r[4].isoformat(),
            "counters": r[5],
            "instance": r[6],
            "updated_at": r[7].isoformat(),
        }
        for r in rows
    }
