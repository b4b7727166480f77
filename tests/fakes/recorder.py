"""In-memory recorder with idempotency keys, for unit tests of the command layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing import popo
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from commands.idempotency import IdempotencyRecord


class IdempotentPOPORecorder(POPOApplicationRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[tuple[str, str], IdempotencyRecord] = {}
        self.positions: dict[tuple[UUID, int], int] = {}
        self.secrets: dict[tuple[UUID, int], Any] = {}  # (endpoint, version) -> SecretRecord

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        records = [r for r in kwargs.get("records") or () if isinstance(r, IdempotencyRecord)]
        with self._database_lock:
            for record in records:
                if (record.space_id, record.key) in self.keys:
                    raise IntegrityError(f"idempotency key {record.key} exists")
            ids = super().insert_events(stored_events, **kwargs)
            for record in records:
                self.keys[(record.space_id, record.key)] = record
            for side in kwargs.get("records") or ():
                if hasattr(side, "secret_version"):
                    self.secrets[(side.endpoint_id, side.secret_version)] = side
            for event, nid in zip(stored_events, ids or (), strict=False):
                self.positions[(UUID(str(event.originator_id)), event.originator_version)] = nid
            return ids

    def get_idempotency_record(self, space_id: str, key: str) -> IdempotencyRecord | None:
        return self.keys.get((space_id, key))

    def get_secret(self, endpoint_id: UUID, version: int) -> str | None:
        record = self.secrets.get((endpoint_id, version))
        return None if record is None else record.secret

    def position_of(self, aggregate_id: UUID, version: int) -> int | None:
        return self.positions.get((aggregate_id, version))

    def select_events_after(self, after: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """``commands.calls.BatchLoader``, as the PostgreSQL recorder does it."""
        found: list[StoredEvent] = []
        for aggregate_id, version in sorted(after, key=lambda a: str(a[0])):
            found.extend(self.select_events(aggregate_id, gt=version or None))
        return found


class Factory(popo.POPOFactory):
    """``PERSISTENCE_MODULE=tests.fakes.recorder``: POPO persistence with idempotency keys."""

    def application_recorder(self) -> IdempotentPOPORecorder:  # type: ignore[override]
        return IdempotentPOPORecorder()
