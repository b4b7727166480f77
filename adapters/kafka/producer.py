"""The Kafka producer every Voxagent publisher uses: idempotent, ``acks=all``, batching.

Idempotence keeps each partition in produce order and free of duplicates across the client's
internal retries; ``acks=all`` means an acknowledged message is on every in-sync replica.
Batching comes from ``linger.ms`` and compression (DESIGN §8).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Producer

from infra.settings import Settings


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration from settings; ``extra`` keys (librdkafka names) win."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap,
        "client.id": f"voxagent-{settings.environment}",
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": kafka.linger_ms,
        "compression.type": kafka.compression,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
        # A message not acknowledged within this time is reported as failed to its delivery
        # callback, instead of being retried forever inside the client.
        "message.timeout.ms": 60_000,
    }
    config.update(extra)
    return config


def build_producer(settings: Settings, **extra: Any) -> Producer:
    """A new idempotent producer. Extra librdkafka options override the defaults, e.g.
    ``build_producer(settings, **{"message.timeout.ms": 5000})``."""
    config = producer_config(settings, **extra)
    config.setdefault("logger", logging.getLogger("librdkafka.producer"))  # not raw stderr
    return Producer(config)
