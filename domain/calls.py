"""The Call aggregate: one conversation (VoxArena's "session"), from initiation to its end.

Signals from the agent worker and the telephony providers become commands on a Call; each
carries a ``signal_id`` and a call remembers the ids it has applied, so a signal seen twice
changes nothing. Times that matter (answered, spoken, ended) come from the signal (``at``,
ISO 8601 UTC with milliseconds), not from when ingest ran. Invariants: nothing is added after
the end but the outcome of a transfer in progress; the end happens once; a transfer needs a
started call.

The telephony provider's view of the phone leg (``call.provider_status_changed``: queued,
ringing, in-progress, then a terminal status) is recorded beside the worker's: a terminal
status of a phone leg that was never answered ends the call (busy, no_answer, failed,
canceled); statuses after the end, repeated or older ones change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError

DIRECTIONS = ("inbound", "outbound", "web")
CHANNELS = ("web", "twilio_sip", "twilio_media_streams", "voximplant", "sip")
SPEAKERS = ("user", "agent")
USAGE_KINDS = (
    "stt_seconds",
    "llm_input_tokens",
    "llm_output_tokens",
    "tts_characters",
    "telephony_seconds",
)
TOOL_STATUSES = ("ok", "error", "timeout", "refused")
TRANSFER_MODES = ("warm", "cold")
TRANSFER_OUTCOMES = ("completed", "failed", "no-answer", "busy")
DTMF_DIGITS = tuple("0123456789*#ABCD")
STATUSES = ("initiated", "in_progress", "transferring", "ended")
PROVIDERS = ("twilio", "voximplant", "sip")
PROVIDER_STATUSES = (
    "queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled",
)  # fmt: skip
TERMINAL_PROVIDER_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
ANSWERED_BY = ("human", "machine", "fax", "unknown")
# a phone leg that ends unanswered ends its call with this reason
UNANSWERED_END_REASONS = {
    "busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "canceled",
    "completed": "completed",
}  # fmt: skip


def _status_rank(status: str | None) -> int:
    """Provider statuses only move forward: queued < ringing < in-progress < terminal."""
    if status is None:
        return -1
    if status in TERMINAL_PROVIDER_STATUSES:
        return 3
    return ("queued", "ringing", "in-progress").index(status)


class CallEnded(DomainError):
    code = "call_ended"


class CallNotStarted(DomainError):
    code = "call_not_started"


class InvalidSignal(DomainError):
    code = "invalid_signal"


class ProviderCallMismatch(DomainError):
    code = "provider_call_mismatch"


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InvalidSignal(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class CallEvent(Aggregate.Event):
    """What every call event after ``call.initiated`` carries: the call's space, the worker-side
    time ``at`` and the id of the signal that caused it. Applying one remembers its signal id
    (duplicates then change nothing); ``mutate_call`` holds what a type changes beyond that."""

    space_id: str
    at: str
    signal_id: str | None

    def apply(self, aggregate: Any) -> None:
        if self.signal_id:
            aggregate.signals.add(self.signal_id)
        self.mutate_call(aggregate)

    def mutate_call(self, call: Any) -> None:
        """The state a type changes besides the signal ids (runs again on every replay)."""


class Call(Aggregate):
    TOPIC = "voxagent.Call"

    class Created(Aggregate.Created):
        """call.initiated: the aggregate's creation event."""

        TOPIC = "call.initiated"
        SCHEMA_VERSION = 1
        space_id: str
        agent_id: str
        agent_config_version: int
        direction: str
        channel: str
        from_number: str | None
        to_number: str | None
        room_name: str
        at: str
        signal_id: str | None
        variables: dict[str, str] | None  # per-call dynamic variables (absent in old events)

    class Started(CallEvent):
        TOPIC = "call.started"
        SCHEMA_VERSION = 1

        def mutate_call(self, call: Any) -> None:
            call.started_at = self.at
            if call.status == "initiated":
                call.status = "in_progress"

    class TranscriptAdded(CallEvent):
        TOPIC = "call.transcript_added"
        SCHEMA_VERSION = 1
        turn_id: str
        speaker: str
        text: str
        start_ms: int
        end_ms: int
        interrupted: bool = False  # an agent reply cut off by the caller: text = what was heard

    class ToolInvoked(CallEvent):
        TOPIC = "call.tool_invoked"
        SCHEMA_VERSION = 1
        turn_id: str | None
        name: str
        arguments: dict[str, Any]
        result: Any
        error: str | None
        status: str
        latency_ms: int

    class DtmfReceived(CallEvent):
        TOPIC = "call.dtmf_received"
        SCHEMA_VERSION = 1
        digit: str
        offset_ms: int

    class TransferRequested(CallEvent):
        TOPIC = "call.transfer_requested"
        SCHEMA_VERSION = 1
        mode: str
        target: str

        def mutate_call(self, call: Any) -> None:
            call.transfer = f"{self.mode}:{self.target}"
            call.status = "transferring"

    class TransferCompleted(CallEvent):
        """``outcome`` (completed|failed|no-answer|busy) and ``reason`` were added later: old
        events have ``succeeded`` only."""

        TOPIC = "call.transfer_completed"
        SCHEMA_VERSION = 1
        mode: str
        target: str
        succeeded: bool
        outcome: str
        reason: str | None

        def mutate_call(self, call: Any) -> None:
            call.transfer = None
            if call.status != "ended":  # the outcome of a transfer that outlived the agent
                call.status = "in_progress"
            call.transfer_outcome = getattr(self, "outcome", None) or (
                "completed" if self.succeeded else "failed"
            )

    class ProviderStatusChanged(CallEvent):
        TOPIC = "call.provider_status_changed"
        SCHEMA_VERSION = 1
        provider: str
        provider_call_id: str
        status: str
        answered_by: str | None
        sip_code: int | None
        reason: str | None

        def mutate_call(self, call: Any) -> None:
            call.provider = self.provider
            call.provider_call_id = self.provider_call_id
            call.provider_status = self.status
            if self.status == "in-progress":
                call.answered = True
            if self.answered_by is not None:
                call.answered_by = self.answered_by

    class UsageRecorded(CallEvent):
        TOPIC = "call.usage_recorded"
        SCHEMA_VERSION = 1
        provider: str
        model: str
        kind: str
        quantity: float

    class TurnMetricsRecorded(CallEvent):
        TOPIC = "call.turn_metrics_recorded"
        SCHEMA_VERSION = 1
        turn_id: str
        end_of_speech_to_first_audio_ms: int | None
        stt_final_ms: int | None
        llm_first_token_ms: int | None
        tts_first_byte_ms: int | None

    class Ended(CallEvent):
        TOPIC = "call.ended"
        SCHEMA_VERSION = 1
        reason: str
        duration_ms: int

        def mutate_call(self, call: Any) -> None:
            call.status = "ended"
            call.ended_at = self.at
            call.end_reason = self.reason
            call.duration_ms = self.duration_ms

    @event(Created)
    def __init__(
        self,
        space_id: str,
        agent_id: str,
        agent_config_version: int,
        direction: str,
        channel: str,
        from_number: str | None,
        to_number: str | None,
        room_name: str,
        at: str,
        signal_id: str | None,
        variables: dict[str, str] | None = None,
    ) -> None:
        self.space_id = space_id
        self.agent_id = agent_id
        self.agent_config_version = agent_config_version
        self.direction = direction
        self.channel = channel
        self.from_number = from_number
        self.to_number = to_number
        self.room_name = room_name
        self.status = "initiated"
        self.initiated_at = at
        self.started_at: str | None = None
        self.transfer: str | None = None
        self.ended_at: str | None = None
        self.end_reason: str | None = None
        self.duration_ms: int | None = None
        self.signals: set[str] = {signal_id} if signal_id else set()
        self.variables = dict(variables) if variables else None
        self.provider: str | None = None
        self.provider_call_id: str | None = None
        self.provider_status: str | None = None
        self.answered = False  # the provider reported the phone leg in progress
        self.answered_by: str | None = None
        self.transfer_outcome: str | None = None

    @classmethod
    def initiate(
        cls,
        *,
        space_id: str,
        agent_id: str,
        agent_config_version: int,
        direction: str,
        channel: str,
        room_name: str,
        at: str,
        from_number: str | None = None,
        to_number: str | None = None,
        signal_id: str | None = None,
        call_id: Any = None,
        variables: dict[str, str] | None = None,
    ) -> Call:
        _one_of(direction, DIRECTIONS, "direction")
        _one_of(channel, CHANNELS, "channel")
        return cls._create(
            cls.Created,
            id=call_id,
            space_id=space_id,
            agent_id=agent_id,
            agent_config_version=agent_config_version,
            direction=direction,
            channel=channel,
            from_number=from_number,
            to_number=to_number,
            room_name=room_name,
            at=at,
            signal_id=signal_id,
            variables=dict(variables) if variables else None,
        )

    # -- commands: each returns False when the signal was already applied ------------------
    def seen(self, signal_id: str | None) -> bool:
        return signal_id is not None and signal_id in self.signals

    def start(self, at: str, signal_id: str | None = None) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("start")
        if self.started_at is not None:
            return False  # answered once; a repeated "started" from another source is harmless
        self.trigger_event(self.Started, space_id=self.space_id, at=at, signal_id=signal_id)
        return True

    def add_transcript(
        self,
        *,
        turn_id: str,
        speaker: str,
        text: str,
        start_ms: int,
        end_ms: int,
        at: str,
        signal_id: str | None = None,
        interrupted: bool = False,
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("take a transcript")
        _one_of(speaker, SPEAKERS, "speaker")
        if start_ms < 0 or end_ms < start_ms:
            raise InvalidSignal("transcript offsets must satisfy 0 <= start_ms <= end_ms")
        self.trigger_event(
            self.TranscriptAdded,
            space_id=self.space_id,
            turn_id=turn_id,
            speaker=speaker,
            text=text,
            start_ms=start_ms,
            end_ms=end_ms,
            at=at,
            signal_id=signal_id,
            interrupted=interrupted,
        )
        return True

    def invoke_tool(
        self,
        *,
        name: str,
        arguments: dict[str, Any],
        result: Any,
        error: str | None,
        status: str,
        latency_ms: int,
        at: str,
        turn_id: str | None = None,
        signal_id: str | None = None,
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("record a tool call")
        _one_of(status, TOOL_STATUSES, "tool status")
        if latency_ms < 0:
            raise InvalidSignal("latency_ms must not be negative")
        self.trigger_event(
            self.ToolInvoked,
            space_id=self.space_id,
            turn_id=turn_id,
            name=name,
            arguments=arguments,
            result=result,
            error=error,
            status=status,
            latency_ms=latency_ms,
            at=at,
            signal_id=signal_id,
        )
        return True

    def receive_dtmf(
        self, *, digit: str, offset_ms: int, at: str, signal_id: str | None = None
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("take a key press")
        _one_of(digit, DTMF_DIGITS, "DTMF digit")
        if offset_ms < 0:
            raise InvalidSignal("offset_ms must not be negative")
        self.trigger_event(
            self.DtmfReceived,
            space_id=self.space_id,
            digit=digit,
            offset_ms=offset_ms,
            at=at,
            signal_id=signal_id,
        )
        return True

    def request_transfer(
        self, *, mode: str, target: str, at: str, signal_id: str | None = None
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("transfer")
        _one_of(mode, TRANSFER_MODES, "transfer mode")
        if self.started_at is None:
            raise CallNotStarted(f"call {self.id} has not been answered; it cannot be transferred")
        self.trigger_event(
            self.TransferRequested,
            space_id=self.space_id,
            mode=mode,
            target=target,
            at=at,
            signal_id=signal_id,
        )
        return True

    def complete_transfer(
        self,
        *,
        succeeded: bool | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        at: str,
        signal_id: str | None = None,
    ) -> bool:
        """The transfer's outcome: ``completed`` (the target took the call), ``failed``,
        ``no-answer`` or ``busy``; ``succeeded`` alone means completed/failed. A transfer in
        progress may complete after the call ended: the agent's leg ends at the handover, and
        a provider reports the dialed leg's fate when that leg ends (Twilio's ``<Dial>``
        action), minutes later for a transfer that went through."""
        if self.seen(signal_id):
            return False
        if self.transfer is None:
            self._ensure_open("complete a transfer")
        if outcome is None:
            if succeeded is None:
                raise InvalidSignal("a transfer's completion needs an outcome")
            outcome = "completed" if succeeded else "failed"
        _one_of(outcome, TRANSFER_OUTCOMES, "transfer outcome")
        if succeeded is not None and succeeded != (outcome == "completed"):
            raise InvalidSignal("succeeded must be true exactly when the outcome is completed")
        if self.transfer is None:
            raise InvalidSignal(f"call {self.id} has no transfer in progress")
        mode, target = self.transfer.split(":", 1)
        self.trigger_event(
            self.TransferCompleted,
            space_id=self.space_id,
            mode=mode,
            target=target,
            succeeded=outcome == "completed",
            outcome=outcome,
            reason=reason,
            at=at,
            signal_id=signal_id,
        )
        return True

    def record_provider_status(
        self,
        *,
        provider: str,
        provider_call_id: str,
        status: str,
        at: str,
        answered_by: str | None = None,
        sip_code: int | None = None,
        reason: str | None = None,
        signal_id: str | None = None,
    ) -> bool:
        """Record the provider's status of the phone leg; False when it changes nothing (a
        repeat, an older status arriving late, anything after the end — providers retry and
        reorder callbacks, so none of these is an error). A terminal status of a leg that was
        never answered ends the call: the worker may have joined the room (outbound calls
        start before the callee answers), but nobody was there to talk to. An answered call
        is ended by its worker (which still reports the final usage), not by ``completed``."""
        if self.seen(signal_id) or self.status == "ended":
            return False
        _one_of(provider, PROVIDERS, "provider")
        _one_of(status, PROVIDER_STATUSES, "provider status")
        if answered_by is not None:
            _one_of(answered_by, ANSWERED_BY, "answered_by")
        if self.provider_call_id is not None and provider_call_id != self.provider_call_id:
            raise ProviderCallMismatch(
                f"call {self.id} is the provider call {self.provider_call_id}, "
                f"not {provider_call_id}"
            )
        same = status == self.provider_status and answered_by in (None, self.answered_by)
        if same or _status_rank(status) < _status_rank(self.provider_status):
            return False
        self.trigger_event(
            self.ProviderStatusChanged,
            space_id=self.space_id,
            provider=provider,
            provider_call_id=provider_call_id,
            status=status,
            answered_by=answered_by,
            sip_code=sip_code,
            reason=reason,
            at=at,
            signal_id=signal_id,
        )
        unanswered = self.started_at is None or (not self.answered and status != "completed")
        if status in TERMINAL_PROVIDER_STATUSES and unanswered:
            since = self.started_at or self.initiated_at
            self.trigger_event(
                self.Ended,
                space_id=self.space_id,
                reason=UNANSWERED_END_REASONS[status],
                duration_ms=max(0, _ms_between(since, at)),
                at=at,
                signal_id=None,
            )
        return True

    def record_usage(
        self,
        *,
        provider: str,
        model: str,
        kind: str,
        quantity: float,
        at: str,
        signal_id: str | None = None,
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("record usage")
        _one_of(kind, USAGE_KINDS, "usage kind")
        if quantity < 0:
            raise InvalidSignal("usage quantity must not be negative")
        self.trigger_event(
            self.UsageRecorded,
            space_id=self.space_id,
            provider=provider,
            model=model,
            kind=kind,
            quantity=quantity,
            at=at,
            signal_id=signal_id,
        )
        return True

    def record_turn_metrics(
        self,
        *,
        turn_id: str,
        at: str,
        end_of_speech_to_first_audio_ms: int | None = None,
        stt_final_ms: int | None = None,
        llm_first_token_ms: int | None = None,
        tts_first_byte_ms: int | None = None,
        signal_id: str | None = None,
    ) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("record turn metrics")
        self.trigger_event(
            self.TurnMetricsRecorded,
            space_id=self.space_id,
            turn_id=turn_id,
            end_of_speech_to_first_audio_ms=end_of_speech_to_first_audio_ms,
            stt_final_ms=stt_final_ms,
            llm_first_token_ms=llm_first_token_ms,
            tts_first_byte_ms=tts_first_byte_ms,
            at=at,
            signal_id=signal_id,
        )
        return True

    def end(self, *, reason: str, duration_ms: int, at: str, signal_id: str | None = None) -> bool:
        if self.seen(signal_id):
            return False
        self._ensure_open("end")
        if duration_ms < 0:
            raise InvalidSignal("duration_ms must not be negative")
        self.trigger_event(
            self.Ended,
            space_id=self.space_id,
            reason=reason,
            duration_ms=duration_ms,
            at=at,
            signal_id=signal_id,
        )
        return True

    def _ensure_open(self, what: str) -> None:
        if self.status == "ended":
            raise CallEnded(f"call {self.id} has ended; it cannot {what} any more")


def _ms_between(start: str, end: str) -> int:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return int(delta.total_seconds() * 1000)
