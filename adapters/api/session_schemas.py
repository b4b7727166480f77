"""HTTP schemas of sessions (calls), costs and usage."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.text import Storable

Status = Literal["initiated", "in_progress", "transferring", "ended"]


class SessionCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    direction: Literal["inbound", "outbound", "web"] = "web"
    channel: Literal["web", "twilio_sip", "twilio_media_streams", "voximplant"] = "web"
    room_name: str | None = Field(None, min_length=1, max_length=256)
    from_number: str | None = Field(None, max_length=64)
    to_number: str | None = Field(None, max_length=64)


class SessionUpdate(Storable):
    """Move a session along: ``in_progress`` (answered) or ``ended`` (with a reason)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["in_progress", "ended"]
    end_reason: str | None = Field(None, min_length=1, max_length=256)
    duration_ms: int | None = Field(None, ge=0)


class SessionEnd(Storable):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("completed", min_length=1, max_length=256)
    duration_ms: int | None = Field(None, ge=0)


class TranscriptCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    speaker: Literal["user", "agent"]
    text: str = Field(max_length=20_000)
    start_ms: int = Field(0, ge=0)
    end_ms: int = Field(0, ge=0)
    turn_id: str | None = Field(None, min_length=1, max_length=256)


class TransferCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["warm", "cold"] = "cold"
    target: str = Field(min_length=1, max_length=256)


class UsageEventCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    session_id: UUID
    provider: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    kind: Literal[
        "stt_seconds", "llm_input_tokens", "llm_output_tokens", "tts_characters",
        "telephony_seconds",
    ]  # fmt: skip
    quantity: float = Field(ge=0, allow_inf_nan=False)


class Dtmf(BaseModel):
    """One key the caller pressed."""

    digit: str
    offset_ms: int
    at: datetime


class SessionPublic(BaseModel):
    id: UUID
    agent_id: UUID
    agent_config_version: int
    direction: str
    channel: str
    from_number: str | None = None
    to_number: str | None = None
    room_name: str
    status: Status
    initiated_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    duration_ms: int | None = None
    transfer_mode: str | None = None
    transfer_target: str | None = None
    transfer_status: str | None = None
    transcript_count: int | None = None
    tool_call_count: int | None = None
    total_cost_usd: Decimal | None = None
    dtmf: list[Dtmf] | None = None  # keys pressed, in order (one session; null in listings)
    version: int


class SessionPage(BaseModel):
    items: list[SessionPublic]
    total: int
    limit: int
    offset: int


class Transcript(BaseModel):
    turn_id: str
    speaker: str
    text: str
    start_ms: int
    end_ms: int
    at: datetime


class Analysis(BaseModel):
    session_id: UUID
    status: Literal["pending", "ready"]
    analysis: dict[str, Any] | None = None


class Accepted(BaseModel):
    session_id: UUID
    version: int
    status: str
