"""Idempotency keys: a replayed key returns the first result and writes nothing.

The record of a key is written in the same transaction as the command's events (the recorder
takes it in the ``records=`` keyword of ``save()``), so either both exist or neither does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True)
class IdempotencyRecord:
    space_id: str
    key: str
    command: str
    fingerprint: str
    aggregate_id: UUID
    version: int


class IdempotencyLookup(Protocol):
    """Implemented by the application recorder that stores the records."""

    def get_idempotency_record(self, space_id: str, key: str) -> IdempotencyRecord | None: ...

    def position_of(self, aggregate_id: UUID, version: int) -> int | None: ...


class IdempotencyKeyReused(Exception):
    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request; "
            "use a new key for a new request"
        )


def fingerprint(command: str, payload: Any) -> str:
    body = json.dumps([command, payload], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


MAX_KEY_LENGTH = 255


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValueError(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")
    return key
