"""Kafka topics of the domain (DESIGN §3): names, and creating the missing ones.

``ensure_topics`` is idempotent: topics that exist already are left alone (their partition count
is not changed), missing ones are created with ``settings.kafka.partitions`` partitions and
replication factor 1 (the local stack has one broker), and the call returns only once the broker
reports every topic with a leader for each partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from domain.contract import topic_for
from infra.settings import Settings

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


INGRESS = ("worker", "provider")


def ingress_topics(settings: Settings) -> list[str]:
    """Where signals arrive (docs/signals.md): ``<prefix>.ingress.worker.v1`` and
    ``<prefix>.ingress.provider.v1``."""
    return [f"{settings.topic_prefix}.ingress.{source}.v1" for source in INGRESS]


def domain_topics(settings: Settings, aggregates: Iterable[str] | None = None) -> list[str]:
    """Each topic with its dead-letter topic right after it.

    By default: every bounded context's topic (``agents``, ``calls``, ``webhooks``,
    ``numbers``, ``billing``) and the ingress topics:
    ``domain_topics(settings)`` -> ``["voxagent.agents.v1", "voxagent.agents.v1.dlq",
    "voxagent.calls.v1", ..., "voxagent.ingress.provider.v1.dlq"]``. With ``aggregates``,
    only those aggregates' context topics (``domain_topics(settings, ["agent"])``).
    """
    topics = [topic_for(f"{a}.created", settings.topic_prefix) for a in aggregates or ()]
    if aggregates is None:
        contexts = ("agent", "call", "webhook", "number", "billing")
        topics = [topic_for(f"{a}.created", settings.topic_prefix) for a in contexts]
        topics += ingress_topics(settings)
    names: list[str] = []
    for topic in topics:
        for name in (topic, topic + DLQ_SUFFIX):
            if name not in names:
                names.append(name)
    return names


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka.bootstrap,
        "socket.timeout.ms": 10000,
        "logger": logging.getLogger("librdkafka.admin"),  # not raw stderr
    }
    return AdminClient(config)


def ensure_topics(settings: Settings, names: list[str], timeout: float = 30.0) -> list[str]:
    """Create the topics of ``names`` that do not exist yet; return the names created.

    Raises ``KafkaException`` when the broker cannot be reached or refuses a creation for a
    reason other than "already exists", and ``TimeoutError`` when a topic does not become
    available within ``timeout`` seconds.
    """
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [n for n in names if n not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(n, num_partitions=settings.kafka.partitions, replication_factor=1)
                for n in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise
        if created:
            log.info("created Kafka topics %s (%d partitions)", created, settings.kafka.partitions)
    _wait_until_available(admin, names, timeout)
    return created


def _wait_until_available(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        pending = []
        for name in names:
            topic = metadata.topics.get(name)
            if (
                topic is None
                or topic.error is not None
                or not topic.partitions
                or any(p.leader < 0 for p in topic.partitions.values())
            ):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Kafka topics {pending} not available after {timeout:.0f}s")
        time.sleep(0.2)


def ensure_topics_when_ready(settings: Settings, names: list[str], stop: threading.Event) -> bool:
    """``ensure_topics``, retried with backoff (0.5 s doubling to 30 s) while Kafka is not up.
    Returns False when ``stop`` was set first."""
    backoff = 0.5
    while not stop.is_set():
        try:
            ensure_topics(settings, names)
            return True
        except Exception as exc:  # noqa: BLE001 - Kafka not up yet: wait for it
            log.warning(
                "cannot create Kafka topics yet (%s: %s); retrying in %.1fs",
                type(exc).__name__,
                exc,
                backoff,
            )
            stop.wait(backoff)
            backoff = min(30.0, backoff * 2)
    return False
