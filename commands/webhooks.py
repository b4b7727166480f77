"""Write side of webhook endpoints: one eventsourcing Application, one method per command.

A signing secret is generated here (or supplied by the operator), stored as a side record in
the same transaction as the endpoint's event — never in the event — and returned once, in the
command's result.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from pydantic import Field, field_validator

from commands.agents import Actor, ConcurrentModification, VersionMismatch
from commands.group_commit import GroupCommit
from commands.writes import IdempotentWrites, Written
from domain.text import Storable, max_json_bytes
from domain.webhooks import EndpointSpec, WebhookEndpoint

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
MAX_OVERLAP = timedelta(days=7)


class EndpointNotFound(Exception):
    code = "webhook_endpoint_not_found"


@dataclass(frozen=True)
class SecretRecord:
    """A signing secret, saved with the event that introduced its version. Older versions of
    the endpoint's secret stop signing at ``previous_expires_at``."""

    endpoint_id: UUID
    secret_version: int
    secret: str
    previous_expires_at: datetime | None = None


def new_secret() -> str:
    """Standard Webhooks format: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError saying why (never repeating it)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"a webhook secret must be {SECRET_PREFIX!r} followed by standard base64"
        ) from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"a webhook secret must decode to {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, "
            f"not {len(key)}; omit it to have one generated"
        )
    return key


def check_secret(value: str) -> str:
    secret_key(value)
    return value


class _WithSecret(Storable):
    secret: str | None = Field(None, description="Your own secret; generated when absent.")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)


class CreateEndpoint(_WithSecret):
    spec: EndpointSpec


class UpdateEndpoint(Storable):
    endpoint_id: UUID
    patch: Annotated[dict[str, Any], max_json_bytes(64 * 1024)]
    expected_version: int | None = None


class DeleteEndpoint(Storable):
    endpoint_id: UUID
    expected_version: int | None = None


class RotateSecret(_WithSecret):
    endpoint_id: UUID
    overlap_seconds: int = Field(
        86_400, ge=0, le=int(MAX_OVERLAP.total_seconds()),
        description="How long the previous secret keeps signing next to the new one.",
    )  # fmt: skip


class DisableEndpoint(Storable):
    endpoint_id: UUID
    reason: str = Field(max_length=500)
    failing_since: datetime


@dataclass(frozen=True)
class Result:
    id: UUID
    version: int
    position: int | None
    endpoint: WebhookEndpoint | None = None
    replayed: bool = False
    secret: str | None = None  # only from create and rotate: shown once


class WebhooksApplication(Application[UUID]):
    name = "webhooks"

    def __init__(
        self, env: dict[str, str] | None = None, now: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(env)
        self._now = now or (lambda: datetime.now(UTC))
        self._writes = IdempotentWrites(self, GroupCommit(self.save), _conflict)

    def create_endpoint(
        self, actor: Actor, cmd: CreateEndpoint, idempotency_key: str | None = None
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        written = self._writes.replay(actor.space_id, idempotency_key, "create_endpoint", payload)
        if written is None:
            endpoint = WebhookEndpoint.create(actor.space_id, cmd.spec, actor.subject)
            record = SecretRecord(endpoint.id, 1, cmd.secret or new_secret())
            written = self._writes.save(
                actor.space_id, endpoint, idempotency_key, "create_endpoint", payload, [record]
            )
        return self._result(written, with_secret=True)

    def update_endpoint(
        self, actor: Actor, cmd: UpdateEndpoint, idempotency_key: str | None = None
    ) -> Result:
        def apply(endpoint: WebhookEndpoint) -> Written | None:
            if not endpoint.update(cmd.patch, actor.subject):
                return self._writes.unchanged(endpoint)
            return None

        return self._command(actor, cmd, cmd.expected_version, idempotency_key, "update", apply)

    def delete_endpoint(
        self, actor: Actor, cmd: DeleteEndpoint, idempotency_key: str | None = None
    ) -> Result:
        def apply(endpoint: WebhookEndpoint) -> None:
            endpoint.delete(actor.subject)

        return self._command(actor, cmd, cmd.expected_version, idempotency_key, "delete", apply)

    def rotate_secret(
        self, actor: Actor, cmd: RotateSecret, idempotency_key: str | None = None
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        written = self._writes.replay(actor.space_id, idempotency_key, "rotate_secret", payload)
        if written is None:
            endpoint = self._owned(actor, cmd.endpoint_id, None)
            expires = self._now() + timedelta(seconds=cmd.overlap_seconds)
            version = endpoint.rotate_secret(expires, actor.subject)
            record = SecretRecord(endpoint.id, version, cmd.secret or new_secret(), expires)
            written = self._writes.save(
                actor.space_id, endpoint, idempotency_key, "rotate_secret", payload, [record]
            )
        return self._result(written, with_secret=True)

    def disable_endpoint(self, actor: Actor, cmd: DisableEndpoint) -> Result:
        """The delivery workers' command: the endpoint kept failing (no idempotency key: a
        second disable of a disabled endpoint changes nothing)."""

        def apply(endpoint: WebhookEndpoint) -> Written | None:
            if not endpoint.disable(cmd.reason, cmd.failing_since, actor.subject):
                return self._writes.unchanged(endpoint)
            return None

        return self._command(actor, cmd, None, None, "disable", apply)

    def get_endpoint(self, actor: Actor, endpoint_id: UUID) -> WebhookEndpoint:
        try:
            endpoint: WebhookEndpoint = self.repository.get(endpoint_id)
        except AggregateNotFoundError:
            raise EndpointNotFound(f"webhook endpoint {endpoint_id} not found") from None
        if endpoint.space_id != actor.space_id or endpoint.deleted:
            raise EndpointNotFound(f"webhook endpoint {endpoint_id} not found")
        return endpoint

    # -- helpers --------------------------------------------------------------------------
    def _owned(
        self, actor: Actor, endpoint_id: UUID, expected_version: int | None
    ) -> WebhookEndpoint:
        endpoint = self.get_endpoint(actor, endpoint_id)
        if expected_version is not None and endpoint.version != expected_version:
            raise VersionMismatch(
                f"webhook endpoint {endpoint_id} is at version {endpoint.version}, not "
                f"{expected_version}; reload it and retry with the current version in If-Match"
            )
        return endpoint

    def _command(
        self, actor: Actor, cmd: Any, expected_version: int | None, key: str | None,
        command: str, apply: Callable[[WebhookEndpoint], Written | None],
    ) -> Result:  # fmt: skip
        payload = cmd.model_dump(mode="json")
        command = f"{command}_endpoint"
        written = self._writes.replay(actor.space_id, key, command, payload)
        if written is None:
            endpoint = self._owned(actor, cmd.endpoint_id, expected_version)
            written = apply(endpoint) or self._writes.save(
                actor.space_id, endpoint, key, command, payload
            )
        return self._result(written)

    def _result(self, written: Written, with_secret: bool = False) -> Result:
        endpoint: WebhookEndpoint = written.aggregate
        secret = None
        if with_secret:
            recorder: Any = self.recorder
            secret = recorder.get_secret(endpoint.id, endpoint.secret_version)
        return Result(written.id, written.version, written.position, endpoint,
                      written.replayed, secret)  # fmt: skip


def _conflict(endpoint: WebhookEndpoint) -> Exception:
    return ConcurrentModification(
        f"webhook endpoint {endpoint.id} was changed concurrently; reload it and retry"
    )
