"""HTTP schemas of ``/api/webhooks``: Create, Patch and Public kept apart (STYLE)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from commands.webhooks import check_secret
from domain.text import Storable
from domain.webhooks import MAX_PATTERNS, EndpointSpec


def _checked_secret(value: str | None) -> str | None:
    return None if value is None else check_secret(value)


class EndpointCreate(EndpointSpec):
    secret: str | None = Field(
        None, max_length=256,
        description="Your own signing secret (`whsec_` + base64 of 24-64 bytes); "
        "generated when absent."
    )  # fmt: skip

    _secret = field_validator("secret")(_checked_secret)


class EndpointPatch(Storable):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2048)
    description: str | None = Field(None, max_length=1024)
    event_types: list[Annotated[str, Field(max_length=128)]] | None = Field(
        None, max_length=MAX_PATTERNS
    )
    enabled: bool | None = None


class EndpointPublic(BaseModel):
    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = None
    secret_version: int = Field(description="Bumped by every secret rotation.")
    version: int = Field(description="Aggregate version: send it back in If-Match.")
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointPublic):
    secret: str = Field(description="The signing secret. Shown only now: store it.")


class EndpointPage(BaseModel):
    items: list[EndpointPublic]
    total: int
    limit: int
    offset: int


class RotateBody(Storable):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int = Field(
        86_400, ge=0, le=604_800,
        description="How long the previous secret keeps signing next to the new one.",
    )  # fmt: skip
    secret: str | None = Field(
        None, max_length=256, description="Your own new secret; generated when absent."
    )

    _secret = field_validator("secret")(_checked_secret)


class SecretRotated(BaseModel):
    id: UUID
    secret: str = Field(description="The new signing secret. Shown only now: store it.")
    secret_version: int
    previous_secret_expires_at: datetime
    version: int


DeliveryStatus = Literal["pending", "succeeded", "failed"]


class Attempt(BaseModel):
    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str = Field(description="The first bytes of the response (truncated).")


class DeliveryPublic(BaseModel):
    id: UUID
    endpoint_id: UUID
    event_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When pending: the next attempt.")
    occurred_at: datetime
    enqueued_at: datetime
    last_attempt_at: datetime | None
    completed_at: datetime | None
    last_status_code: int | None
    last_error: str | None


class DeliveryDetail(DeliveryPublic):
    payload: dict[str, Any] = Field(description="The exact JSON body sent.")
    attempt_log: list[Attempt]


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    total: int
    limit: int
    offset: int


class TestBody(Storable):
    model_config = ConfigDict(extra="forbid")

    message: str = Field("Test event from Voxagent", max_length=500)


class DeliveryQueued(BaseModel):
    delivery_id: UUID
    event_id: str
    status: DeliveryStatus = "pending"


class ReplayBody(Storable):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(
        description="Replay deliveries enqueued at or after this moment (with a time zone)."
    )


class ReplayResult(BaseModel):
    replayed: int


class QueueStats(BaseModel):
    pending: int
    due: int = Field(description="Pending deliveries whose next attempt is due now.")
    failed: int
    oldest_pending_seconds: float | None
    delivered_last_hour: int
    lag_p50_ms: float | None = Field(description="Event occurred -> delivered, last hour.")
    lag_p99_ms: float | None
