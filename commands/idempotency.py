"""Idempotency keys: a replayed key returns the first result and writes nothing.

One key space per space, across every application and route: the records of every application
live in one store (one table in the shared PostgreSQL database), so a key used for one command
is refused for any other. The record of a key is written in the same transaction as the
command's events (the recorder takes it in the ``records=`` keyword of ``save()``), so either
both exist or neither does.

A record remembers the fingerprint of the request that first used the key: the HTTP API passes
a ``RequestKey`` carrying the fingerprint of the request as the caller sent it (route and body);
other callers pass a plain key and the command's own payload is fingerprinted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID


@dataclass(frozen=True)
class RequestKey:
    """An Idempotency-Key and the fingerprint of the request that carried it."""

    key: str
    request: str


Key = str | RequestKey | None  # what a command method takes as its idempotency key


@dataclass(frozen=True)
class IdempotencyRecord:
    """A used key: the command and request it answered, and either the write it made
    (``aggregate_id`` at ``version``) or, for answers that are no aggregate write, the answer
    itself (``response``)."""

    space_id: str
    key: str
    command: str
    fingerprint: str
    aggregate_id: UUID | None
    version: int | None
    response: dict[str, Any] | None = None


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


def request_of(key: Key, command: str, payload: Any) -> RequestKey | None:
    """The key with the fingerprint its every use must match: the request's own when the
    caller gave one, else the command's."""
    if key is None or isinstance(key, RequestKey):
        return key
    return RequestKey(key, fingerprint(command, payload))


def check_same(record: IdempotencyRecord, command: str, request: RequestKey) -> None:
    """``IdempotencyKeyReused`` unless ``record`` answered this very command and request."""
    if record.command != command or record.fingerprint != request.request:
        raise IdempotencyKeyReused(request.key)


MAX_KEY_LENGTH = 255


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValueError(f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters")
    return key
