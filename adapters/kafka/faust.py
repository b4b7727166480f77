"""How every Faust app of Voxagent is made and run (projectors, ingest, webhook dispatcher): one
place for the settings that matter — raw bytes in and out, no web server, no topic declaration
(topics are created up front), earliest offsets for new groups, offsets committed every second,
and a short session timeout so a killed worker's partitions move on within seconds; and the
consumer runtime (``adapters.kafka.consumer``) of each agent, wired to the app's producer (dead
letters), the ``consumer_status`` table (``/health``) and the ``consumers`` settings."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.kafka.consumer import ConsumerRuntime, Headers
from adapters.services import Services


def new_faust_app(settings: Any, name: str) -> Any:
    import faust

    datadir = Path(tempfile.gettempdir()) / "voxagent-faust" / name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    brokers = [f"kafka://{h.strip()}" for h in settings.kafka.bootstrap.split(",") if h.strip()]
    return faust.App(
        name,
        broker=brokers,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=False,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        datadir=str(datadir),
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        producer_acks=-1,
    )


def run_faust_worker(
    container: Services, build: Callable[[Any], Any], *, loglevel: str | None = None
) -> None:
    """Run ``build(container)``'s worker in this process until SIGINT/SIGTERM."""
    import faust

    app = build(container)
    level = (loglevel or container.settings.log_level).lower()
    worker = faust.Worker(app, loglevel=level, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        container.close()


def faust_runtime(app: Any, container: Services, name: str, **kwargs: Any) -> ConsumerRuntime:
    """The consumer runtime of one Faust agent named ``name`` (its ``consumer_status`` row)."""
    from adapters.postgres.consumer_status import write_status

    conf = container.settings.consumers

    async def send(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return await app.producer.send_and_wait(topic, key, value, None, None, headers)

    return ConsumerRuntime(
        name,
        send,
        report=lambda status: write_status(container.pool, status),
        first_backoff=conf.retry_first_seconds,
        max_backoff=conf.retry_max_seconds,
        halted_retry=conf.halted_retry_seconds,
        **kwargs,
    )
