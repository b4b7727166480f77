"""The WebhookEndpoint aggregate: where an integrator receives a space's events.

An endpoint has a URL, a description, the event types it subscribes to (exact types or
wildcards: ``call.*``, ``*``), an enabled flag and the version of its signing secret. The secret
itself never enters an event (events reach Kafka and analytics); the command side stores it
apart, in the same transaction. Every event carries the endpoint's whole public state
(``endpoint``), so consumers never need earlier events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event
from pydantic import ConfigDict, Field, ValidationError, field_validator

from domain.agent_config import check_http_url
from domain.catalogue import check_event_pattern
from domain.errors import DomainError, InvalidConfig
from domain.text import Storable

MAX_PATTERNS = 64


class EndpointDeleted(DomainError):
    code = "webhook_endpoint_deleted"


class EndpointSpec(Storable):
    """What an operator configures; validated before any event is recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Where events are POSTed (https in production).")
    description: str = Field("", max_length=1024)
    event_types: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=MAX_PATTERNS,
        description="Event types or wildcards (`call.*`, `*`).",
    )
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        checked = check_http_url(value)
        assert checked is not None
        return checked

    @field_validator("event_types")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_event_pattern(pattern)
        return sorted(set(value))

    def as_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validated_spec(data: dict[str, Any]) -> EndpointSpec:
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "endpoint"
            parts.append(f"{where}: {err.get('msg')}")
        raise InvalidConfig("invalid webhook endpoint: " + "; ".join(parts)) from exc


def subscribes(patterns: list[str], event_type: str) -> bool:
    """Whether an endpoint with ``patterns`` receives ``event_type``."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class WebhookEndpoint(Aggregate):
    TOPIC = "voxagent.WebhookEndpoint"

    class Created(Aggregate.Created):
        TOPIC = "webhook.endpoint_created"
        SCHEMA_VERSION = 1
        space_id: str
        endpoint: dict[str, Any]
        actor: str

    class Updated(Aggregate.Event):
        TOPIC = "webhook.endpoint_updated"
        SCHEMA_VERSION = 1
        space_id: str
        endpoint: dict[str, Any]
        changed: list[str]
        actor: str

    class SecretRotated(Aggregate.Event):
        TOPIC = "webhook.endpoint_secret_rotated"
        SCHEMA_VERSION = 1
        space_id: str
        endpoint: dict[str, Any]
        previous_secret_expires_at: datetime
        actor: str

    class Disabled(Aggregate.Event):
        TOPIC = "webhook.endpoint_disabled"
        SCHEMA_VERSION = 1
        space_id: str
        endpoint: dict[str, Any]
        reason: str
        failing_since: datetime
        actor: str

    class Deleted(Aggregate.Event):
        TOPIC = "webhook.endpoint_deleted"
        SCHEMA_VERSION = 1
        space_id: str
        endpoint: dict[str, Any]
        actor: str

    @event(Created)
    def __init__(self, space_id: str, endpoint: dict[str, Any], actor: str) -> None:
        self.space_id = space_id
        self._set(endpoint)
        self.deleted = False

    def _set(self, endpoint: dict[str, Any]) -> None:
        self.spec = EndpointSpec.model_validate(
            {k: endpoint[k] for k in ("url", "description", "event_types", "enabled")}
        )
        self.secret_version: int = endpoint["secret_version"]
        self.disabled_reason: str | None = endpoint.get("disabled_reason")

    @classmethod
    def create(cls, space_id: str, spec: EndpointSpec, actor: str) -> WebhookEndpoint:
        state = {**spec.as_data(), "secret_version": 1, "disabled_reason": None}
        return cls(space_id=space_id, endpoint=state, actor=actor)

    @property
    def state(self) -> dict[str, Any]:
        return {
            **self.spec.as_data(),
            "secret_version": self.secret_version,
            "disabled_reason": self.disabled_reason,
        }

    def update(self, patch: dict[str, Any], actor: str) -> bool:
        """Apply a partial change; returns False when nothing changed."""
        self._ensure_exists()
        unknown = set(patch) - set(EndpointSpec.model_fields)
        if unknown:
            raise InvalidConfig(f"invalid webhook endpoint: unknown fields {sorted(unknown)}")
        new = validated_spec({**self.spec.as_data(), **patch}).as_data()
        old = self.spec.as_data()
        changed = sorted(k for k, v in new.items() if old.get(k) != v)
        if not changed:
            return False
        reason = self.disabled_reason if not new["enabled"] else None
        if "enabled" in changed and not new["enabled"]:
            reason = "disabled by an operator"
        state = {**new, "secret_version": self.secret_version, "disabled_reason": reason}
        self._updated(space_id=self.space_id, endpoint=state, changed=changed, actor=actor)
        return True

    @event(Updated)
    def _updated(
        self, space_id: str, endpoint: dict[str, Any], changed: list[str], actor: str
    ) -> None:
        self._set(endpoint)

    def rotate_secret(self, previous_expires_at: datetime, actor: str) -> int:
        """A new secret version; the previous one keeps signing until ``previous_expires_at``."""
        self._ensure_exists()
        state = {**self.state, "secret_version": self.secret_version + 1}
        self._secret_rotated(
            space_id=self.space_id,
            endpoint=state,
            previous_secret_expires_at=previous_expires_at,
            actor=actor,
        )
        return self.secret_version

    @event(SecretRotated)
    def _secret_rotated(
        self,
        space_id: str,
        endpoint: dict[str, Any],
        previous_secret_expires_at: datetime,
        actor: str,
    ) -> None:
        self._set(endpoint)

    def disable(self, reason: str, failing_since: datetime, actor: str) -> bool:
        """Stop deliveries (the endpoint kept failing). False when it is already disabled."""
        self._ensure_exists()
        if not self.spec.enabled:
            return False
        state = {**self.state, "enabled": False, "disabled_reason": reason}
        self._disabled(
            space_id=self.space_id,
            endpoint=state,
            reason=reason,
            failing_since=failing_since,
            actor=actor,
        )
        return True

    @event(Disabled)
    def _disabled(
        self,
        space_id: str,
        endpoint: dict[str, Any],
        reason: str,
        failing_since: datetime,
        actor: str,
    ) -> None:
        self._set(endpoint)

    def delete(self, actor: str) -> None:
        self._ensure_exists()
        self._deleted(space_id=self.space_id, endpoint=self.state, actor=actor)

    @event(Deleted)
    def _deleted(self, space_id: str, endpoint: dict[str, Any], actor: str) -> None:
        self.deleted = True

    def _ensure_exists(self) -> None:
        if self.deleted:
            raise EndpointDeleted(f"webhook endpoint {self.id} was deleted")


__all__ = ["EndpointSpec", "WebhookEndpoint", "subscribes", "validated_spec"]
