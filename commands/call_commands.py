"""The commands of the calls context (pydantic, one per CallsApplication method) and the
result every one of them returns."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from pydantic import Field

from commands.signals import (
    AnsweredBy,
    CallVariables,
    Channel,
    Direction,
    ProviderCallStatus,
    ProviderName,
    Speaker,
    TransferMode,
    TransferOutcome,
    UsageKind,
)
from commands.writes import Written
from domain.calls import Call
from domain.numbers import Millis, Moment, Quantity
from domain.text import Storable


class CallNotFound(Exception):
    code = "call_not_found"


class CallCommand(Storable):
    call_id: UUID
    at: Moment | None = None  # when it happened; now when not given


class InitiateCall(Storable):
    agent_id: UUID
    direction: Direction
    channel: Channel
    room_name: str | None = Field(None, min_length=1, max_length=256)
    from_number: str | None = Field(None, max_length=64)
    to_number: str | None = Field(None, max_length=64)
    call_id: UUID | None = None
    at: Moment | None = None
    variables: CallVariables | None = None


class StartCall(CallCommand):
    pass


class AddTranscript(CallCommand):
    turn_id: str = Field(min_length=1, max_length=256)
    speaker: Speaker
    text: str = Field(max_length=20_000)
    start_ms: Millis
    end_ms: Millis


class RequestTransfer(CallCommand):
    mode: TransferMode
    target: str = Field(min_length=1, max_length=256)


class CompleteTransfer(CallCommand):
    outcome: TransferOutcome
    reason: str | None = Field(None, max_length=256)


class RecordProviderStatus(CallCommand):
    provider: ProviderName
    provider_call_id: str = Field(min_length=1, max_length=128)
    status: ProviderCallStatus
    answered_by: AnsweredBy | None = None
    sip_code: int | None = Field(None, ge=100, le=699)
    reason: str | None = Field(None, max_length=256)


class EndCall(CallCommand):
    reason: str = Field("completed", min_length=1, max_length=256)
    duration_ms: Millis | None = None  # from answer (or initiation) to ``at`` if None


class RecordUsage(CallCommand):
    provider: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    kind: UsageKind
    quantity: Quantity


@dataclass(frozen=True)
class Result:
    id: UUID
    version: int
    position: int | None
    call: Call | None = None
    replayed: bool = False

    @classmethod
    def of(cls, written: Written) -> Result:
        w = written
        return cls(w.id, w.version, w.position, w.aggregate, w.replayed)
