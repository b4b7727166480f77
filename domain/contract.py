"""The public event envelope (DESIGN §3): what integrators and analysts receive for every event.

Pure: turns a domain event and its position in the event store into a JSON-able dict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

EVENT_ID_NAMESPACE = UUID("6f1c3a52-5d0e-4f57-9a53-0c8f2f1e7b11")
_STANDARD_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}

# bounded context of each aggregate topic prefix -> Kafka topic suffix
CONTEXT_OF = {
    "agent": "agents",
    "number": "numbers",
    "trunk": "numbers",
    "provider_account": "numbers",
    "call": "calls",
    "usage": "billing",
    "billing": "billing",
    "webhook": "webhooks",
}


def event_id(aggregate_id: UUID | str, version: int) -> str:
    """Stable id: the same aggregate version always gets the same id, so re-publishing dedupes."""
    return str(uuid5(EVENT_ID_NAMESPACE, f"{aggregate_id}:{version}"))


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_type(domain_event: Any) -> str:
    topic: str = type(domain_event).TOPIC
    return topic


def topic_for(event_type_name: str, prefix: str = "voxagent") -> str:
    """``agent.created`` -> ``voxagent.agents.v1``."""
    aggregate = event_type_name.split(".", 1)[0]
    return f"{prefix}.{CONTEXT_OF[aggregate]}.v1"


def envelope(domain_event: Any, position: int, trace_id: str | None = None) -> dict[str, Any]:
    data = {k: v for k, v in domain_event.__dict__.items() if k not in _STANDARD_FIELDS}
    space_id = data.pop("space_id")
    env: dict[str, Any] = {
        "event_id": event_id(domain_event.originator_id, domain_event.originator_version),
        "type": event_type(domain_event),
        "schema_version": getattr(type(domain_event), "SCHEMA_VERSION", 1),
        "space_id": space_id,
        "aggregate_id": str(domain_event.originator_id),
        "aggregate_version": domain_event.originator_version,
        "position": position,
        "occurred_at": iso_ms(domain_event.timestamp),
        "data": _jsonable(data),
    }
    if trace_id:
        env["trace_id"] = trace_id
    return env


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso_ms(value)
    return value
