"""Provider reports (call statuses, transfer outcomes) onto the ingress topic, as ingest takes
them: the one produce path of the Twilio, VoxImplant and SIP webhooks."""

from __future__ import annotations

import json
from typing import Any

from adapters.api.errors import ApiError
from adapters.services import Services


def produce_signal(
    container: Services, signal: dict[str, Any], retry: str = "report it again"
) -> None:
    """Produce ``signal`` keyed by its call (ordered per call) and wait for Kafka's ack; 503
    ``ingress_unavailable`` when Kafka does not take it (``retry`` says who tries again)."""
    topic = f"{container.settings.topic_prefix}.ingress.provider.v1"
    value = json.dumps(signal, separators=(",", ":")).encode()
    container.producer.produce(topic, value, signal["call_id"].encode())
    if container.producer.flush(10):
        raise ApiError(503, "ingress_unavailable", f"Kafka did not take the status; {retry}.")
