"""In-memory recorder with idempotency keys, for unit tests of the command layer.

Like PostgreSQL's one ``idempotency_keys`` table, the keys are one store per space across
applications: applications built with the same ``IDEMPOTENCY_KEYS`` env value share a store
(``KeyStore``); without it each recorder has a store of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing import popo
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from commands.idempotency import IdempotencyRecord


class KeyStore:
    """The idempotency keys of a space, whatever the application (a shared table)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], IdempotencyRecord] = {}


_STORES: dict[str, KeyStore] = {}


def shared_keys(name: str) -> KeyStore:
    return _STORES.setdefault(name, KeyStore())


class IdempotentPOPORecorder(POPOApplicationRecorder):
    def __init__(self, keys: KeyStore | None = None) -> None:
        super().__init__()
        self.key_store = keys or KeyStore()
        self.positions: dict[tuple[UUID, int], int] = {}
        self.secrets: dict[tuple[UUID, int], Any] = {}  # (endpoint, version) -> SecretRecord

    @property
    def keys(self) -> dict[tuple[str, str], IdempotencyRecord]:
        return self.key_store.records

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        records = [r for r in kwargs.get("records") or () if isinstance(r, IdempotencyRecord)]
        with self._database_lock, self.key_store.lock:
            seen: set[tuple[str, str]] = set()
            for record in records:
                pk = (record.space_id, record.key)
                if pk in self.keys or pk in seen:
                    raise IntegrityError(f"idempotency key {record.key} exists")
                seen.add(pk)
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
    """``PERSISTENCE_MODULE=tests.fakes.recorder``: POPO persistence with idempotency keys
    (shared between applications that name the same ``IDEMPOTENCY_KEYS``)."""

    def application_recorder(self) -> IdempotentPOPORecorder:  # type: ignore[override]
        name = self.env.get("IDEMPOTENCY_KEYS")
        return IdempotentPOPORecorder(shared_keys(name) if name else None)
