"""Write side of calls: one eventsourcing Application ("calls"), one method per command, and the
batch path that ingest drives with worker and provider signals.

A command loads the call, checks that the caller's space owns it, calls one aggregate method,
saves through the group commit and returns ``Result(id, version, position, call)``. The batch
path (``apply_signals``) loads each call of a batch once, applies its signals in order and saves
every touched call in one transaction (DESIGN §8).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, StoredEvent

from commands.agents import Actor, ConcurrentModification
from commands.call_commands import (
    AddTranscript,
    CallCommand,
    CallNotFound,
    CompleteTransfer,
    EndCall,
    InitiateCall,
    RecordProviderStatus,
    RecordUsage,
    RequestTransfer,
    Result,
    StartCall,
)
from commands.call_ingest import SignalOutcome, apply_to_call
from commands.group_commit import GroupCommit
from commands.idempotency import Key
from commands.signals import Signal, iso_ms
from commands.writes import IdempotentWrites
from domain.agents import VoiceAgent
from domain.calls import Call

__all__ = [
    "Actor", "AddTranscript", "CallNotFound", "CallsApplication", "CompleteTransfer", "EndCall",
    "InitiateCall", "RecordProviderStatus", "RecordUsage", "RequestTransfer", "Result",
    "SignalOutcome", "StartCall",
]  # fmt: skip
AgentLookup = Callable[[Actor, UUID], VoiceAgent]
SAVE_ATTEMPTS = 3  # per call, when the batch save met a concurrent writer


@runtime_checkable
class BatchLoader(Protocol):
    """What the calls' recorder must offer the batch path: the stored events of many aggregates,
    each above a given version, in (aggregate, version) order — one query for a whole batch.
    Implemented by ``adapters.postgres.recorder`` and the unit tier's POPO fake."""

    def select_events_after(self, after: Sequence[tuple[UUID, int]]) -> Sequence[StoredEvent]: ...


class _Unloaded:
    """Marks "not loaded yet" (None means "no such call")."""


_UNLOADED = _Unloaded()


class CallsApplication(Application[UUID]):
    name = "calls"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        agent_lookup: AgentLookup | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(env)
        if not isinstance(self.recorder, BatchLoader):
            raise TypeError(
                f"the calls application needs a recorder with select_events_after (BatchLoader); "
                f"{type(self.recorder).__name__} has none: set APPLICATION_RECORDER_TOPIC"
            )
        self._loader: BatchLoader = self.recorder
        self._agent_lookup = agent_lookup
        self._clock = clock or (lambda: datetime.now(UTC))
        self._group_commit = GroupCommit(self.save)
        self._writes = IdempotentWrites(self, self._group_commit, _conflict)

    # -- commands -------------------------------------------------------------------------
    def initiate_call(self, actor: Actor, cmd: InitiateCall, idempotency_key: Key = None) -> Result:
        payload = cmd.model_dump(mode="json")
        replay = self._writes.replay(actor.space_id, idempotency_key, "initiate_call", payload)
        if replay:
            return Result.of(replay)
        if self._agent_lookup is None:
            raise RuntimeError("CallsApplication needs agent_lookup to initiate calls")
        agent = self._agent_lookup(actor, cmd.agent_id)  # AgentNotFound outside the space
        agent.ensure_accepts_calls()
        call_id = cmd.call_id or uuid4()
        call = Call.initiate(
            call_id=call_id,
            space_id=actor.space_id,
            agent_id=str(agent.id),
            agent_config_version=agent.config_version,
            direction=cmd.direction,
            channel=cmd.channel,
            room_name=cmd.room_name or f"call-{call_id}",
            from_number=cmd.from_number,
            to_number=cmd.to_number,
            at=self._at(cmd.at),
            variables=cmd.variables,
        )
        written = self._writes.save(actor.space_id, call, idempotency_key, "initiate_call", payload)
        return Result.of(written)

    def start_call(self, actor: Actor, cmd: StartCall, idempotency_key: Key = None) -> Result:
        return self._command(
            actor, cmd, idempotency_key, "start_call", lambda c: c.start(at=self._at(cmd.at))
        )

    def add_transcript(
        self, actor: Actor, cmd: AddTranscript, idempotency_key: Key = None
    ) -> Result:
        def apply(call: Call) -> bool:
            return call.add_transcript(
                turn_id=cmd.turn_id,
                speaker=cmd.speaker,
                text=cmd.text,
                start_ms=cmd.start_ms,
                end_ms=cmd.end_ms,
                at=self._at(cmd.at),
            )

        return self._command(actor, cmd, idempotency_key, "add_transcript", apply)

    def request_transfer(
        self, actor: Actor, cmd: RequestTransfer, idempotency_key: Key = None
    ) -> Result:
        def apply(call: Call) -> bool:
            return call.request_transfer(mode=cmd.mode, target=cmd.target, at=self._at(cmd.at))

        return self._command(actor, cmd, idempotency_key, "request_transfer", apply)

    def complete_transfer(
        self, actor: Actor, cmd: CompleteTransfer, idempotency_key: Key = None
    ) -> Result:
        def apply(call: Call) -> bool:
            return call.complete_transfer(
                outcome=cmd.outcome, reason=cmd.reason, at=self._at(cmd.at)
            )

        return self._command(actor, cmd, idempotency_key, "complete_transfer", apply)

    def record_provider_status(
        self, actor: Actor, cmd: RecordProviderStatus, idempotency_key: Key = None
    ) -> Result:
        """What the API learnt from the provider itself (e.g. the placed call's id); the
        provider's callbacks arrive as signals. Signal id as a callback's: a later callback
        of the same status is then a duplicate."""

        def apply(call: Call) -> bool:
            return call.record_provider_status(
                provider=cmd.provider, provider_call_id=cmd.provider_call_id,
                status=cmd.status, answered_by=cmd.answered_by, sip_code=cmd.sip_code,
                reason=cmd.reason, at=self._at(cmd.at),
                signal_id=f"{cmd.provider}:{cmd.provider_call_id}:{cmd.status}",
            )  # fmt: skip

        return self._command(actor, cmd, idempotency_key, "record_provider_status", apply)

    def end_call(self, actor: Actor, cmd: EndCall, idempotency_key: Key = None) -> Result:
        def apply(call: Call) -> bool:
            at = self._at(cmd.at)
            duration = cmd.duration_ms
            if duration is None:
                since = call.started_at or call.initiated_at
                duration = max(0, _ms_between(since, at))
            return call.end(reason=cmd.reason, duration_ms=duration, at=at)

        return self._command(actor, cmd, idempotency_key, "end_call", apply)

    def record_usage(self, actor: Actor, cmd: RecordUsage, idempotency_key: Key = None) -> Result:
        def apply(call: Call) -> bool:
            return call.record_usage(
                provider=cmd.provider,
                model=cmd.model,
                kind=cmd.kind,
                quantity=cmd.quantity,
                at=self._at(cmd.at),
            )

        return self._command(actor, cmd, idempotency_key, "record_usage", apply)

    # -- queries on the write model -------------------------------------------------------
    def find_call(self, actor: Actor, call_id: UUID) -> Call:
        """The call now, if the caller's space owns it; else ``CallNotFound``."""
        call = self._load(call_id)
        if call is None or call.space_id != actor.space_id:
            raise CallNotFound(f"call {call_id} not found")
        return call

    def call_of(self, call_id: UUID) -> Call | None:
        """Any space's call, or None (for our SIP service's reports: trusted infrastructure
        that names a call by its id alone; never for a caller's request)."""
        return self._load(call_id)

    # -- the batch path of ingest ---------------------------------------------------------
    def apply_signals(self, signals: list[Signal]) -> list[SignalOutcome]:
        """Apply a batch of signals; one outcome per signal, in the same order.

        Each call is loaded once and takes its signals in batch order; every touched call is
        saved in ONE transaction. When that transaction meets a concurrent writer, the touched
        calls are reloaded and saved one by one (raises ``ConcurrentModification`` when one still
        conflicts after a few attempts: the whole batch may then be retried, as duplicates are
        no-ops).
        """
        groups: dict[UUID, list[int]] = {}
        for index, s in enumerate(signals):
            groups.setdefault(s.call_id, []).append(index)
        outcomes: list[SignalOutcome | None] = [None] * len(signals)
        touched: list[list[int]] = []
        saved: dict[UUID, Call] = {}
        events: list[Any] = []
        loaded = self._load_many(list(groups))
        for call_id, indexes in groups.items():
            call, pending = self._apply(call_id, indexes, signals, outcomes, loaded[call_id])
            if call is not None and pending:
                touched.append(indexes)
                events.extend(pending)
                saved[call_id] = call
        if events:
            try:
                self._group_commit.commit(events)
            except IntegrityError:
                for indexes in touched:
                    self._save_alone(indexes, signals, outcomes)
            else:
                self._cache_saved(saved)
        return [o for o in outcomes if o is not None]

    def _cache_saved(self, saved: dict[UUID, Call]) -> None:
        """Put the calls just saved in the aggregate cache (they are this batch's own copies,
        touched by nothing else now), so the next batch need not fast-forward them again."""
        cache = self.repository.cache
        if cache is not None:
            for call_id, call in saved.items():
                cache.put(call_id, call)

    def _apply(
        self,
        call_id: UUID,
        indexes: list[int],
        signals: list[Signal],
        outcomes: list[SignalOutcome | None],
        loaded: Call | None | _Unloaded = _UNLOADED,
    ) -> tuple[Call | None, list[Any]]:
        """Apply the signals at ``indexes`` to the call (loaded now unless given); the call and
        its pending events."""
        call = self._load(call_id) if isinstance(loaded, _Unloaded) else loaded
        call, results = apply_to_call(call, [signals[i] for i in indexes])
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome
        return call, (list(call.collect_events()) if call is not None else [])

    def _save_alone(
        self, indexes: list[int], signals: list[Signal], outcomes: list[SignalOutcome | None]
    ) -> None:
        call_id = signals[indexes[0]].call_id
        for _ in range(SAVE_ATTEMPTS):
            _call, pending = self._apply(call_id, indexes, signals, outcomes)
            if not pending:
                return
            try:
                self._group_commit.commit(pending)
                return
            except IntegrityError:
                continue
        raise ConcurrentModification(f"call {call_id} keeps changing concurrently; retry")

    # -- helpers --------------------------------------------------------------------------
    def _command(
        self,
        actor: Actor,
        cmd: CallCommand,
        key: Key,
        command: str,
        apply: Callable[[Call], bool],
    ) -> Result:
        payload = cmd.model_dump(mode="json")
        replay = self._writes.replay(actor.space_id, key, command, payload)
        if replay:
            return Result.of(replay)
        for attempt in range(SAVE_ATTEMPTS):
            call = self.find_call(actor, cmd.call_id)
            if not apply(call):
                return Result.of(self._writes.unchanged(call))
            try:
                return Result.of(self._writes.save(actor.space_id, call, key, command, payload))
            except ConcurrentModification:
                # ingest wrote to the call meanwhile (a provider's status, the worker's
                # transcript): a call command names no version, so it is checked and applied
                # again on the newer call
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _load_many(self, call_ids: list[UUID]) -> dict[UUID, Call | None]:
        """Every call of a batch, brought up to date with ONE query (the aggregate cache's
        fast-forward, done for the whole batch instead of once per call)."""
        cache = self.repository.cache
        if cache is None:
            return {call_id: self._load(call_id) for call_id in call_ids}
        calls: dict[UUID, Any] = {}
        for call_id in call_ids:
            with contextlib.suppress(KeyError):
                calls[call_id] = cache.get(call_id)
        after = [(i, calls[i].version if i in calls else 0) for i in call_ids]
        fresh: dict[UUID, Any] = {}  # calls fast-forwarded here: copies, the cache untouched
        for stored in self._loader.select_events_after(after):
            event: Any = self.mapper.to_domain_event(stored)
            call_id = event.originator_id
            if call_id not in fresh:
                fresh[call_id] = deepcopy(calls[call_id]) if call_id in calls else None
            fresh[call_id] = event.mutate(fresh[call_id])
        result: dict[UUID, Call | None] = {}
        for call_id in call_ids:
            call = fresh[call_id] if call_id in fresh else calls.get(call_id)
            if call is not None:
                if call_id in fresh:
                    cache.put(call_id, call)
                call = deepcopy(call)  # commands mutate their copy, never the cached one
            result[call_id] = call
        return result

    def _load(self, call_id: UUID) -> Call | None:
        try:
            call: Call = self.repository.get(call_id)
        except AggregateNotFoundError:
            return None
        return call

    def _at(self, at: datetime | None) -> str:
        moment = at or self._clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return iso_ms(moment)


def _conflict(call: Any) -> Exception:
    return ConcurrentModification(f"call {call.id} was changed concurrently; reload it and retry")


def _ms_between(start: str, end: str) -> int:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return int(delta.total_seconds() * 1000)
