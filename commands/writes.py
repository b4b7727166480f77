"""What every command handler does around its one aggregate method, for any aggregate type:
answer a replayed Idempotency-Key with the first result, and save through the group commit with
the key's record in the same transaction (DESIGN §4, §8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from commands.group_commit import GroupCommit
from commands.idempotency import (
    IdempotencyKeyReused,
    IdempotencyRecord,
    Key,
    check_same,
    request_of,
)


@dataclass(frozen=True)
class Written:
    """What a command wrote (or, ``replayed``, what the first request with its key wrote)."""

    id: UUID
    version: int
    position: int | None
    aggregate: Any
    replayed: bool = False


class IdempotentWrites:
    def __init__(
        self,
        app: Application[UUID],
        group_commit: GroupCommit,
        conflict: Callable[[Any], Exception],
    ) -> None:
        self.app = app
        self.group_commit = group_commit
        self.conflict = conflict  # aggregate -> the error for "changed concurrently"

    def replay(self, space_id: str, key: Key, command: str, payload: Any) -> Written | None:
        """The first result of ``key`` in ``space_id``, or None when the key is new.
        ``IdempotencyKeyReused`` when the key answered another command or request, of any
        application (the keys of a space are one key space)."""
        request = request_of(key, command, payload)
        if request is None:
            return None
        recorder: Any = self.app.recorder
        record = recorder.get_idempotency_record(space_id, request.key)
        if record is None:
            return None
        check_same(record, command, request)
        if record.aggregate_id is None or record.version is None:
            raise IdempotencyKeyReused(request.key)  # an answer stored by a non-event route
        aggregate: Any = self.app.repository.get(record.aggregate_id, version=record.version)
        position = recorder.position_of(record.aggregate_id, record.version)
        return Written(record.aggregate_id, record.version, position, aggregate, replayed=True)

    def save(
        self,
        space_id: str,
        aggregate: Any,
        key: Key,
        command: str,
        payload: Any,
        extra: Sequence[Any] = (),
    ) -> Written:
        """Save ``aggregate``'s pending events, the key's record and ``extra`` side records in
        the group commit (one transaction)."""
        records = list(extra)
        request = request_of(key, command, payload)
        if request is not None:
            records.append(IdempotencyRecord(
                space_id,
                request.key,
                command,
                request.request,
                aggregate.id,
                aggregate.version,
            ))  # fmt: skip
        try:
            position = self.group_commit.commit(aggregate.collect_events(), records)
        except IntegrityError:
            replay = self.replay(space_id, key, command, payload)
            if replay:
                return replay
            raise self.conflict(aggregate) from None
        return Written(aggregate.id, aggregate.version, position, aggregate)

    def unchanged(self, aggregate: Any) -> Written:
        """The answer of a command that changed nothing: the current version and position."""
        recorder: Any = self.app.recorder
        position = recorder.position_of(aggregate.id, aggregate.version)
        return Written(aggregate.id, aggregate.version, position, aggregate)
