"""The webhook dispatcher (``voxagent webhooks dispatch``): a Faust app that reads every domain
topic and, per batch and in one transaction, keeps the ``webhook_endpoints`` read model up to
date, fails the pending deliveries of deleted endpoints, and enqueues one delivery per
subscribed endpoint.

Idempotent without a tracking record: endpoint rows are version-guarded and deliveries are keyed
by (endpoint, event), so Kafka redelivery or a reset consumer group enqueues nothing twice. An
endpoint receives the events that occurred after it was created. Unusable messages go to
``<prefix>.webhooks.v1.dlq`` (the projectors dead-letter them on their own topics too). Failures
are handled by the consumer runtime (``adapters.kafka.consumer``): PostgreSQL away is waited out,
an event the batch cannot take halts the dispatcher (``consumer_status`` ``webhooks.dispatch``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.kafka.consumer import Item
from adapters.kafka.faust import faust_runtime, new_faust_app, run_faust_worker
from adapters.kafka.projectors import PG_BATCH, PG_WITHIN
from adapters.services import Services
from adapters.webhooks.queue import Fanout, cancel_pending, enqueue, reset_health
from projections.envelopes import decode
from projections.webhooks import (
    apply_endpoint_rows,
    endpoint_row,
    is_endpoint_event,
    subscribed_endpoints,
    targets,
)

CONTEXTS = ("agents", "calls", "webhooks", "numbers", "billing")


def project(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The endpoint row of an endpoint event (validates it), else nothing."""
    return endpoint_row(env) if env is not None and is_endpoint_event(env) else None


def re_enabled(env: dict[str, Any]) -> bool:
    data = env.get("data") or {}
    return (
        env.get("type") == "webhook.endpoint_updated"
        and "enabled" in (data.get("changed") or ())
        and bool((data.get("endpoint") or {}).get("enabled"))
    )


def apply_batch(pool: Any, items: list[Item]) -> int:
    """Endpoint rows, then the deliveries of every usable envelope; one transaction."""
    usable = [(i.raw, i.envelope) for i in items if i.envelope is not None and i.raw is not None]
    rows = [i.value for i in items if i.envelope is not None and i.value is not None]
    now = datetime.now(UTC)
    with pool.connection() as conn, conn.transaction():
        apply_endpoint_rows(conn, rows)
        cancel_pending(conn, [r["id"] for r in rows if r["deleted"]], now)
        reset_health(conn, [env["aggregate_id"] for _, env in usable if re_enabled(env)])
        spaces = {str(env["space_id"]) for _, env in usable if env.get("space_id")}
        endpoints = subscribed_endpoints(conn, spaces) if spaces else {}
        fanouts = []
        for raw, env in usable:
            ids = targets(env, endpoints)
            if ids:
                fanouts.append(Fanout(raw.decode(), env, ids))
        return enqueue(conn, fanouts, now)


def build_dispatch_app(container: Services, *, app_id: str | None = None) -> Any:
    settings = container.settings
    name = app_id or f"{settings.topic_prefix}-webhooks"
    app = new_faust_app(settings, name)
    names = [container.topic(c) for c in CONTEXTS]
    topic = app.topic(*names, value_type=bytes, key_type=bytes)
    runtime = faust_runtime(
        app, container, "webhooks.dispatch", dlq_headers=[("dlq.projector", b"webhooks")]
    )
    dlq = f"{container.topic('webhooks')}.dlq"

    def step(item: Item) -> dict[str, Any] | None:
        item.envelope = decode(item.raw)
        return project(item.envelope)

    @app.agent(topic, name=f"{name}.dispatch")
    async def dispatch(stream: Any) -> None:
        async for events in stream.take_events(PG_BATCH, within=PG_WITHIN):
            items = [Item.of(event.message) for event in events]
            await runtime.prepare(items, step, lambda _item: dlq)
            await runtime.apply(items, lambda batch: [apply_batch(container.pool, batch)],
                                lambda _item: dlq)  # fmt: skip

    return app


def run_dispatcher(container: Services, *, loglevel: str | None = None) -> None:
    """Run the dispatcher's Faust worker in this process until SIGINT/SIGTERM."""
    run_faust_worker(container, build_dispatch_app, loglevel=loglevel)
