"""Signals -> Call aggregate methods: how one call takes a sequence of signals (pure).

``apply_to_call`` applies a call's signals in order to its (possibly not yet existing) aggregate
and tells, per signal, whether it was applied, a duplicate (changed nothing) or rejected with a
stable code. The Calls application loads, calls this, and saves (``CallsApplication``).

``Parking`` holds what ingest could not apply yet because its call does not exist yet
(``unknown_call``: the worker's signals overtook the provider's ``call.initiated``), per call and
in order, for a bounded time and number; ingest retries them with later batches.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar
from uuid import UUID

from commands.signals import (
    CallEndedSignal,
    CallInitiatedSignal,
    CallStartedSignal,
    DtmfSignal,
    ProviderStatusSignal,
    Signal,
    ToolInvokedSignal,
    TranscriptSignal,
    TransferCompletedSignal,
    TransferRequestedSignal,
    TurnMetricsSignal,
    UsageSignal,
)
from domain.calls import Call
from domain.errors import DomainError

Status = Literal["applied", "duplicate", "rejected"]


@dataclass(frozen=True)
class SignalOutcome:
    """What became of one signal. ``code``/``message`` are set when it was rejected."""

    signal_id: str
    call_id: UUID
    status: Status
    code: str | None = None
    message: str | None = None

    @classmethod
    def of(
        cls, signal: Signal, status: Status, code: str | None = None, message: str | None = None
    ) -> SignalOutcome:
        return cls(signal.signal_id, signal.call_id, status, code, message)


def initiate(s: CallInitiatedSignal) -> Call:
    return Call.initiate(
        call_id=s.call_id,
        space_id=s.space_id,
        agent_id=str(s.agent_id),
        agent_config_version=s.agent_config_version,
        direction=s.direction,
        channel=s.channel,
        from_number=s.from_number,
        to_number=s.to_number,
        room_name=s.room_name,
        at=s.at,
        signal_id=s.signal_id,
        variables=s.variables,
    )


def apply_signal(call: Call, s: Signal) -> bool:
    """Call the aggregate method of ``s``; False when it changed nothing. Raises DomainError."""
    sid, at = s.signal_id, s.at
    if isinstance(s, CallStartedSignal):
        return call.start(at=at, signal_id=sid)
    if isinstance(s, TranscriptSignal):
        return call.add_transcript(
            turn_id=s.turn_id,
            speaker=s.speaker,
            text=s.text,
            start_ms=s.start_ms,
            end_ms=s.end_ms,
            at=at,
            signal_id=sid,
            interrupted=s.interrupted,
        )
    if isinstance(s, ToolInvokedSignal):
        return call.invoke_tool(
            turn_id=s.turn_id,
            name=s.name,
            arguments=s.arguments,
            result=s.result,
            error=s.error,
            status=s.status,
            latency_ms=s.latency_ms,
            at=at,
            signal_id=sid,
        )
    if isinstance(s, DtmfSignal):
        return call.receive_dtmf(digit=s.digit, offset_ms=s.offset_ms, at=at, signal_id=sid)
    if isinstance(s, TransferRequestedSignal):
        return call.request_transfer(mode=s.mode, target=s.target, at=at, signal_id=sid)
    if isinstance(s, TransferCompletedSignal):
        return call.complete_transfer(
            succeeded=s.succeeded, outcome=s.outcome, reason=s.reason, at=at, signal_id=sid
        )
    if isinstance(s, ProviderStatusSignal):
        return call.record_provider_status(
            provider=s.provider,
            provider_call_id=s.provider_call_id,
            status=s.status,
            answered_by=s.answered_by,
            sip_code=s.sip_code,
            reason=s.reason,
            at=at,
            signal_id=sid,
        )
    if isinstance(s, UsageSignal):
        return call.record_usage(
            provider=s.provider,
            model=s.model,
            kind=s.kind,
            quantity=s.quantity,
            at=at,
            signal_id=sid,
        )
    if isinstance(s, TurnMetricsSignal):
        return call.record_turn_metrics(
            turn_id=s.turn_id,
            end_of_speech_to_first_audio_ms=s.end_of_speech_to_first_audio_ms,
            stt_final_ms=s.stt_final_ms,
            llm_first_token_ms=s.llm_first_token_ms,
            tts_first_byte_ms=s.tts_first_byte_ms,
            at=at,
            signal_id=sid,
        )
    if isinstance(s, CallEndedSignal):
        return call.end(reason=s.reason, duration_ms=s.duration_ms, at=at, signal_id=sid)
    raise TypeError(f"no handler for signal type {s.type!r}")  # pragma: no cover


def apply_to_call(
    call: Call | None, signals: list[Signal]
) -> tuple[Call | None, list[SignalOutcome]]:
    """Apply ``signals`` (all for one call, in order) to ``call`` (None: not created yet)."""
    outcomes: list[SignalOutcome] = []
    for s in signals:
        if call is None:
            if not isinstance(s, CallInitiatedSignal):
                outcomes.append(
                    SignalOutcome.of(
                        s,
                        "rejected",
                        "unknown_call",
                        f"call {s.call_id} is unknown: no call.initiated signal was applied for it",
                    )
                )
                continue
            try:
                call = initiate(s)
            except DomainError as exc:
                outcomes.append(SignalOutcome.of(s, "rejected", exc.code, exc.message))
                continue
            outcomes.append(SignalOutcome.of(s, "applied"))
            continue
        outcomes.append(_apply_existing(call, s))
    return call, outcomes


def _apply_existing(call: Call, s: Signal) -> SignalOutcome:
    if s.space_id != call.space_id:
        return SignalOutcome.of(
            s, "rejected", "space_mismatch", f"call {s.call_id} belongs to another space"
        )
    if call.seen(s.signal_id):
        return SignalOutcome.of(s, "duplicate")
    if isinstance(s, CallInitiatedSignal):
        return SignalOutcome.of(
            s, "rejected", "call_exists", f"call {s.call_id} was already initiated"
        )
    if isinstance(s, CallEndedSignal) and s.source == "provider" and call.ended_at is not None:
        # the provider confirming an end the worker already reported (e.g. LiveKit's
        # room_finished): nothing to add, nothing wrong
        return SignalOutcome.of(s, "duplicate")
    try:
        changed = apply_signal(call, s)
    except DomainError as exc:
        return SignalOutcome.of(s, "rejected", exc.code, exc.message)
    return SignalOutcome.of(s, "applied" if changed else "duplicate")


T = TypeVar("T")


class Parked(NamedTuple, Generic[T]):
    item: T
    since: float  # when it was first parked (clock seconds)


class Parking(Generic[T]):
    """Items of calls that do not exist yet, per call in arrival order (plain, no Kafka).

    ``park`` appends (an item re-parked after a failed retry keeps its first ``since``);
    ``take`` removes whole calls for a retry: the ones named (a new batch touches them) and,
    with ``due``, every call not retried for ``retry_every`` seconds. ``expire`` removes what
    waited ``max_age`` seconds (``rebase`` restarts every age). Beyond ``max_items`` the oldest
    parked call loses its oldest item (``park`` returns the evicted). A call's items only ever
    leave from the front, so whatever is applied later keeps the order in which the call's
    signals arrived.
    """

    def __init__(
        self,
        *,
        max_age: float = 30.0,
        max_items: int = 10_000,
        retry_every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age, self.max_items, self.retry_every = max_age, max_items, retry_every
        self.clock = clock
        self._calls: OrderedDict[UUID, deque[Parked[T]]] = OrderedDict()
        self._retry_at: dict[UUID, float] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def park(self, call_id: UUID, item: T, since: float | None = None) -> list[T]:
        """Hold ``item`` behind the call's other parked items; the items evicted to make room."""
        now = self.clock()
        if call_id not in self._calls:
            self._calls[call_id] = deque()
            self._retry_at[call_id] = now + self.retry_every
        self._calls[call_id].append(Parked(item, now if since is None else since))
        self._count += 1
        evicted: list[T] = []
        while self._count > self.max_items:
            oldest = next(iter(self._calls))
            evicted.append(self._pop_front(oldest).item)
        return evicted

    def take(
        self, call_ids: Iterable[UUID] = (), *, due: bool = True, everything: bool = False
    ) -> list[Parked[T]]:
        """Remove and return the items of ``call_ids`` and (``due``) of calls due for a retry
        (or of every call), whole calls in parking order."""
        now = self.clock()
        wanted = set(self._calls) if everything else {c for c in call_ids if c in self._calls}
        if due:
            wanted |= {c for c, at in self._retry_at.items() if at <= now}
        taken: list[Parked[T]] = []
        for call_id in [c for c in self._calls if c in wanted]:  # in parking order
            items = self._calls.pop(call_id)
            del self._retry_at[call_id]
            self._count -= len(items)
            taken.extend(items)
        return taken

    def expire(self, spare: Iterable[UUID] = ()) -> list[T]:
        """Remove and return every item parked ``max_age`` seconds ago or earlier, except the
        items of the calls in ``spare``."""
        limit = self.clock() - self.max_age
        expired: list[T] = []
        kept = set(spare)
        for call_id in [c for c in self._calls if c not in kept]:
            while call_id in self._calls and self._calls[call_id][0].since <= limit:
                expired.append(self._pop_front(call_id).item)
        return expired

    def rebase(self) -> list[T]:
        """Count every parked item's age from now (time spent waiting on something else than
        the call, e.g. an outage or downtime, is not waiting for the call); returns them."""
        now = self.clock()
        for call_id, items in self._calls.items():
            self._calls[call_id] = deque(Parked(p.item, now) for p in items)
        return [p.item for items in self._calls.values() for p in items]

    def _pop_front(self, call_id: UUID) -> Parked[T]:
        items = self._calls[call_id]
        first = items.popleft()
        self._count -= 1
        if not items:
            del self._calls[call_id], self._retry_at[call_id]
        return first
