"""HTTP schemas of sessions (calls), costs and usage."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.numbers import Millis, Quantity
from domain.text import Storable

Status = Literal["initiated", "in_progress", "transferring", "ended"]


class SessionCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    agent_id: UUID
    direction: Literal["inbound", "outbound", "web"] = "web"
    channel: Literal["web", "twilio_sip", "twilio_media_streams", "voximplant", "sip"] = "web"
    room_name: str | None = Field(None, min_length=1, max_length=256)
    from_number: str | None = Field(None, max_length=64)
    to_number: str | None = Field(None, max_length=64)


class SessionUpdate(Storable):
    """Move a session along: ``in_progress`` (answered) or ``ended`` (with a reason)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["in_progress", "ended"]
    end_reason: str | None = Field(None, min_length=1, max_length=256)
    duration_ms: Millis | None = None


class SessionEnd(Storable):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("completed", min_length=1, max_length=256)
    duration_ms: Millis | None = None


class TranscriptCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    speaker: Literal["user", "agent"]
    text: str = Field(max_length=20_000)
    start_ms: Millis = 0
    end_ms: Millis = 0
    turn_id: str | None = Field(None, min_length=1, max_length=256)


class TransferCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["warm", "cold"] = "cold"
    target: str = Field(
        min_length=1, max_length=256,
        description="An E.164 number (`+15551234567`), a SIP URI (`sip:desk@pbx.example.com`) "
        "or the name of one of the agent's transfer targets.",
    )  # fmt: skip
    briefing: str | None = Field(
        None, max_length=2000,
        description="Warm transfers: what the agent says before handing over.",
    )  # fmt: skip


class UsageEventCreate(Storable):
    model_config = ConfigDict(extra="forbid")

    session_id: UUID
    provider: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    kind: Literal[
        "stt_seconds", "llm_input_tokens", "llm_output_tokens", "tts_characters",
        "telephony_seconds",
    ]  # fmt: skip
    quantity: Quantity


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
    transfer_outcome: str | None = Field(
        None, description="How the last transfer ended: completed, failed, no-answer or busy."
    )
    transfer_reason: str | None = None
    provider: str | None = Field(None, description="The phone leg's provider (twilio, ...).")
    provider_call_id: str | None = Field(None, description="The provider's id of the call.")
    provider_status: str | None = Field(
        None, description="The provider's last status of the phone leg (queued ... completed)."
    )
    answered_by: str | None = Field(
        None, description="Answering-machine detection: human, machine, fax or unknown."
    )
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
    interrupted: bool = False  # an agent reply the caller cut off: text is what they heard


class Analysis(BaseModel):
    session_id: UUID
    status: Literal["pending", "ready"]
    analysis: dict[str, Any] | None = None


class Accepted(BaseModel):
    session_id: UUID
    version: int
    status: str


# -- costs: amounts in USD (numbers, micro-dollar precision) ----------------------------------
class CategoryCost(BaseModel):
    quantity: float = Field(description="In the category's display unit.")
    unit: str = Field(description="`minutes`, `tokens` or `characters`.")
    cost_usd: float


class CostLine(BaseModel):
    provider: str
    model: str
    kind: str
    category: str
    quantity: float
    unit: str
    unit_price: float
    cost_usd: float
    price_entry: str = Field(description="The catalog entry that priced it, or `unpriced`.")
    usage_count: int


class CostBreakdown(BaseModel):
    call_id: UUID
    total_usd: float | None
    categories: dict[str, CategoryCost] = Field(description="Every category, zeros included.")
    lines: list[CostLine]


class ProviderCost(BaseModel):
    provider: str
    cost_usd: float
    usage_count: int


class CostSummary(BaseModel):
    total_usd: float
    call_count: int = Field(description="Calls initiated in the period.")
    usage_count: int
    by_provider: list[ProviderCost] = Field(description="Most expensive first.")
    by_category: dict[str, CategoryCost]


class CostPeriod(BaseModel):
    period: date = Field(description="The period's first day (weeks start on Monday).")
    cost_usd: float
    usage_count: int
    by_category: dict[str, float] = Field(description="Cost per category.")


class CostTimeline(BaseModel):
    granularity: Literal["daily", "weekly", "monthly"]
    points: list[CostPeriod] = Field(description="Oldest first; periods with usage only.")


class AgentCost(BaseModel):
    agent_id: str
    agent_name: str | None = Field(description="None when the agent is unknown.")
    cost_usd: float
    usage_count: int
    call_count: int
    by_category: dict[str, float]


class CostByAgent(BaseModel):
    agents: list[AgentCost] = Field(description="Most expensive first.")
