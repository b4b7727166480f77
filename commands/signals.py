"""Call-lifecycle signals: what the agent worker and the provider webhooks report about a call.

A signal is a JSON object on an ingress topic (``docs/signals.md``). Every signal carries the
common envelope (``signal_id``: the dedupe key, ``type``, ``space_id``, ``call_id``, ``at``,
``source``, ``schema_version``) and the fields of its kind; ``type`` selects the kind. Unknown
extra fields are ignored so that producers may add optional fields without breaking ingest.
``parse_signal`` turns raw bytes into a model or raises ``SignalRejected`` with a stable code.
No Kafka types here: ingest hands bytes in, the Calls application takes models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from domain.numbers import ConfigVersion, Millis, Quantity, check_moment
from domain.text import JSON_TOO_DEEP, JSON_TOO_LARGE, UNSTORABLE_TEXT, Storable, max_json_bytes

SCHEMA_VERSION: Literal[1] = 1
Direction = Literal["inbound", "outbound", "web"]
# `twilio_sip` is kept for calls recorded before our own SIP endpoint (`sip`) existed
Channel = Literal["web", "twilio_sip", "twilio_media_streams", "voximplant", "sip"]
Speaker = Literal["user", "agent"]
ToolStatus = Literal["ok", "error", "timeout", "refused"]
TransferMode = Literal["warm", "cold"]
TransferOutcome = Literal["completed", "failed", "no-answer", "busy"]
ProviderName = Literal["twilio", "voximplant", "sip"]
# the provider's view of a call (commands/telephony.py has the same two; a test keeps them equal)
ProviderCallStatus = Literal[
    "queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"
]
AnsweredBy = Literal["human", "machine", "fax", "unknown"]
DtmfDigit = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#", "A", "B", "C", "D"]
UsageKind = Literal[
    "stt_seconds", "llm_input_tokens", "llm_output_tokens", "tts_characters", "telephony_seconds"
]
Name = Annotated[str, Field(min_length=1, max_length=256)]
# what a tool was called with and answered (third-party JSON, reported by the worker)
ToolJson = Annotated[Any, max_json_bytes(256 * 1024)]
# a call's dynamic variables (outbound API, pre-call hook): the pre-call hook's bounds
MAX_CALL_VARIABLES = 100
VariableName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
CallVariables = Annotated[
    dict[VariableName, Annotated[str, Field(max_length=4096)]],
    Field(max_length=MAX_CALL_VARIABLES),
]


class SignalRejected(Exception):
    """A message that is not a valid signal: ``code`` is stable, ``message`` says what is wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Signal(Storable):
    model_config = ConfigDict(extra="ignore", frozen=True)

    signal_id: str = Field(min_length=1, max_length=200)
    space_id: str = Field(min_length=1, max_length=128)
    call_id: UUID
    at: str
    source: Literal["worker", "provider", "simulator"]
    schema_version: Literal[1] = SCHEMA_VERSION

    @field_validator("at", mode="before")
    @classmethod
    def _utc_ms(cls, value: Any) -> str:
        """Any ISO 8601 moment with a UTC offset, normalised to ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
        else:
            raise ValueError("must be an ISO 8601 date-time string")
        if moment.tzinfo is None:
            raise ValueError("needs a UTC offset (e.g. 2026-01-31T12:00:00.000Z)")
        return iso_ms(check_moment(moment))


class CallInitiatedSignal(_Signal):
    type: Literal["call.initiated"] = "call.initiated"
    agent_id: UUID
    agent_config_version: ConfigVersion
    direction: Direction
    channel: Channel
    from_number: str | None = Field(None, max_length=64)
    to_number: str | None = Field(None, max_length=64)
    room_name: Name
    variables: CallVariables | None = None


class CallStartedSignal(_Signal):
    type: Literal["call.started"] = "call.started"


class TranscriptSignal(_Signal):
    type: Literal["call.transcript"] = "call.transcript"
    turn_id: Name
    speaker: Speaker
    text: str = Field(max_length=20_000)
    start_ms: Millis
    end_ms: Millis
    interrupted: bool = False  # an agent reply the caller cut off: ``text`` is what they heard


class ToolInvokedSignal(_Signal):
    type: Literal["call.tool_invoked"] = "call.tool_invoked"
    turn_id: str | None = Field(None, max_length=256)
    name: Name
    arguments: Annotated[dict[str, Any], max_json_bytes(256 * 1024)] = Field(default_factory=dict)
    result: ToolJson = None
    error: str | None = Field(None, max_length=4000)
    status: ToolStatus
    latency_ms: Millis


class DtmfSignal(_Signal):
    type: Literal["call.dtmf"] = "call.dtmf"
    digit: DtmfDigit
    offset_ms: Millis


class TransferRequestedSignal(_Signal):
    type: Literal["call.transfer_requested"] = "call.transfer_requested"
    mode: TransferMode
    target: Name


class TransferCompletedSignal(_Signal):
    """``outcome`` says how the transfer ended; ``succeeded`` (the original field) is
    ``outcome == "completed"``. Either may be given alone, the other is derived."""

    type: Literal["call.transfer_completed"] = "call.transfer_completed"
    succeeded: bool
    outcome: TransferOutcome
    reason: str | None = Field(None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _outcome_or_succeeded(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        succeeded, outcome = data.get("succeeded"), data.get("outcome")
        if succeeded is None and outcome is None:
            raise ValueError("needs `outcome` (completed|failed|no-answer|busy) or `succeeded`")
        if outcome is None and isinstance(succeeded, bool):
            return {**data, "outcome": "completed" if succeeded else "failed"}
        if succeeded is None and isinstance(outcome, str):
            return {**data, "succeeded": outcome == "completed"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TransferCompletedSignal:
        if self.succeeded != (self.outcome == "completed"):
            raise ValueError("`succeeded` must be true exactly when `outcome` is completed")
        return self


class ProviderStatusSignal(_Signal):
    """A telephony provider's status callback for the call (Twilio's CallStatus, VoxImplant's
    scenario events, our SIP endpoint's responses). ``signal_id`` is
    ``f"{provider}:{provider_call_id}:{status}"`` so a repeated callback is a duplicate."""

    type: Literal["call.provider_status"] = "call.provider_status"
    provider: ProviderName
    provider_call_id: str = Field(min_length=1, max_length=128)
    status: ProviderCallStatus
    answered_by: AnsweredBy | None = None
    sip_code: int | None = Field(None, ge=100, le=699)
    reason: str | None = Field(None, max_length=256)


class UsageSignal(_Signal):
    type: Literal["call.usage"] = "call.usage"
    provider: Name
    model: Name
    kind: UsageKind
    quantity: Quantity


class TurnMetricsSignal(_Signal):
    type: Literal["call.turn_metrics"] = "call.turn_metrics"
    turn_id: Name
    end_of_speech_to_first_audio_ms: Millis | None = None
    stt_final_ms: Millis | None = None
    llm_first_token_ms: Millis | None = None
    tts_first_byte_ms: Millis | None = None


class CallEndedSignal(_Signal):
    type: Literal["call.ended"] = "call.ended"
    reason: Name
    duration_ms: Millis


Signal = Annotated[
    CallInitiatedSignal
    | CallStartedSignal
    | TranscriptSignal
    | ToolInvokedSignal
    | DtmfSignal
    | TransferRequestedSignal
    | TransferCompletedSignal
    | ProviderStatusSignal
    | UsageSignal
    | TurnMetricsSignal
    | CallEndedSignal,
    Field(discriminator="type"),
]
SIGNAL_TYPES = (
    "call.initiated",
    "call.started",
    "call.transcript",
    "call.tool_invoked",
    "call.dtmf",
    "call.transfer_requested",
    "call.transfer_completed",
    "call.provider_status",
    "call.usage",
    "call.turn_metrics",
    "call.ended",
)


@cache
def _adapter() -> TypeAdapter[Signal]:
    return TypeAdapter(Signal)


def parse_signal(raw: bytes | str | None) -> Signal:
    """The signal in ``raw`` (UTF-8 JSON), or ``SignalRejected`` with code ``malformed_json``,
    ``unknown_signal_type``, ``unstorable_text`` (text or numbers our stores cannot hold,
    e.g. a NUL character: domain/text.py) or ``invalid_signal``."""
    if raw is None or raw in (b"", ""):
        raise SignalRejected("malformed_json", "empty message")
    try:
        return _adapter().validate_json(raw)
    except ValidationError as exc:
        raise _rejected(exc) from None


def validate_signal(data: dict[str, Any]) -> Signal:
    """Like ``parse_signal`` for an already decoded object."""
    try:
        return _adapter().validate_python(data)
    except ValidationError as exc:
        raise _rejected(exc) from None


def encode_signal(signal: _Signal) -> bytes:
    """The wire form of a signal: compact UTF-8 JSON."""
    return signal.model_dump_json().encode()


def _rejected(exc: ValidationError) -> SignalRejected:
    errors = exc.errors(include_url=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds:
        return SignalRejected("malformed_json", f"not JSON: {errors[0]['msg']}")
    if "dict_type" in kinds and any(not e.get("loc") for e in errors):
        return SignalRejected("malformed_json", "a signal is a JSON object")
    if "union_tag_not_found" in kinds:
        return SignalRejected("invalid_signal", "type: required (e.g. 'call.started')")
    if "union_tag_invalid" in kinds:
        return SignalRejected(
            "unknown_signal_type", f"type must be one of {', '.join(SIGNAL_TYPES)}"
        )
    parts = []
    unstorable = {UNSTORABLE_TEXT, JSON_TOO_DEEP, JSON_TOO_LARGE}
    if kinds & unstorable:
        errors = [e for e in errors if e["type"] in unstorable]
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = ".".join(loc[1:] if loc and loc[0] in SIGNAL_TYPES else loc) or "signal"
        parts.append(f"{where}: {err['msg']}")
    code = "unstorable_text" if kinds & unstorable else "invalid_signal"
    return SignalRejected(code, "; ".join(parts))
