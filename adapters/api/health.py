"""``GET /health``: each dependency, whether it answers, how far behind the pipeline is, and
what each Kafka consumer is doing (``consumer_status``: a halted one, or one waiting for
infrastructure, makes the answer ``degraded`` and is named in ``problems``)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.services import Services

router = APIRouter(tags=["health"])


class Dependency(BaseModel):
    """One dependency's probe; figures of its own beside these (event store positions and the
    relay's lag for PostgreSQL, brokers for Kafka, the version of ClickHouse)."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    latency_ms: float | None = Field(None, description="When it answered.")
    error: str | None = Field(None, description="When it did not: what failed.")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    dependencies: dict[str, Dependency] = Field(
        description="`postgres`, `kafka`, `clickhouse`, and `consumers` (each consumer's state: "
        "`running`, `waiting` for a store, `halted` on an event it cannot apply)."
    )


HEALTH: dict[int | str, dict[str, Any]] = {
    200: {"model": Health, "description": "Every dependency answers."},
    503: {"model": Health, "description": "`degraded`: some dependency does not answer."},
}


def _probe(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = check()
    except ConsumerTrouble as exc:
        return {"ok": False, "error": str(exc), "consumers": exc.statuses}
    except Exception as exc:  # noqa: BLE001 - any failure is "down"; say which
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result: dict[str, Any] = {
        "ok": True,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if isinstance(detail, dict):
        result.update(detail)
    return result


# every application the relay publishes
APPLICATIONS = ("agents", "calls", "webhooks", "numbers", "billing")
PROBE_TIMEOUT = 3.0  # seconds a probe waits for a connection: /health answers while one is away


def _postgres(container: Services) -> dict[str, Any]:
    """Per application: the event store's head and how far the relay is behind it."""
    stores: dict[str, Any] = {}
    with container.pool.connection(timeout=PROBE_TIMEOUT) as conn:
        for app in APPLICATIONS:
            head = conn.execute(f"SELECT max(notification_id) FROM {app}_events").fetchone()
            relay = conn.execute(
                "SELECT position FROM relay_positions WHERE application = %s", (app,)
            ).fetchone()
            head_pos = (head[0] if head else None) or 0
            relay_pos = (relay[0] if relay else None) or 0
            stores[app] = {
                "event_store_position": head_pos,
                "relay_lag_events": max(head_pos - relay_pos, 0),
            }
        queue = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'pending'), "
            "count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()), "
            "EXTRACT(EPOCH FROM now() - min(enqueued_at) FILTER (WHERE status = 'pending')) "
            "FROM webhook_deliveries"
        ).fetchone()
        conn.rollback()
    pending, due, oldest = queue if queue else (0, 0, None)
    webhooks = {
        "pending": pending,
        "due": due,
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 3),
    }
    return {"applications": stores, "webhook_queue": webhooks}


WAITING_FRESH_SECONDS = 60.0  # a waiting row older than this is from a process that is gone


def _consumers(container: Services) -> dict[str, Any]:
    """Each consumer's last reported state; ``problems`` names the halted and waiting ones."""
    from adapters.postgres.consumer_status import read_statuses

    with container.pool.connection(timeout=PROBE_TIMEOUT) as conn:
        statuses = read_statuses(conn)
        (now,) = conn.execute("SELECT now()").fetchone() or (None,)
        conn.rollback()
    problems = []
    for name, status in statuses.items():
        age = (now - datetime.fromisoformat(status["updated_at"])).total_seconds()
        if status["state"] == "halted" or (
            status["state"] == "waiting" and age < WAITING_FRESH_SECONDS
        ):
            problems.append(f"{name} {status['state']} at {status['source']}: {status['error']}")
    if problems:
        raise ConsumerTrouble("; ".join(problems)[:1000], statuses)
    return {"consumers": statuses}


class ConsumerTrouble(Exception):
    def __init__(self, message: str, statuses: dict[str, Any]) -> None:
        super().__init__(message)
        self.statuses = statuses


def _kafka(container: Services) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": container.settings.kafka.bootstrap})
    meta = admin.list_topics(timeout=2)
    return {"brokers": len(meta.brokers)}


def _clickhouse(container: Services) -> dict[str, Any]:
    client = container.clickhouse()
    try:
        return {"version": client.execute("SELECT version()")[0][0]}
    finally:
        client.disconnect()


@router.get("/health", responses=HEALTH)
def health(request: Request) -> JSONResponse:
    container = request.app.state.container
    deps = {
        "postgres": _probe(lambda: _postgres(container)),
        "kafka": _probe(lambda: _kafka(container)),
        "clickhouse": _probe(lambda: _clickhouse(container)),
        "consumers": _probe(lambda: _consumers(container)),
    }
    ok = all(d["ok"] for d in deps.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "dependencies": deps},
        status_code=200 if ok else 503,
    )
