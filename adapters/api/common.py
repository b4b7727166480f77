"""What every router shares: the container, the caller as an actor, write headers."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Response

from adapters.api.errors import ApiError
from adapters.services import Services
from commands.agents import Actor
from commands.idempotency import RequestKey, check_key

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per space across every route: replaying the same request with it "
        "returns the first answer; another request with it is `422 idempotency_key_reused`.",
    ),
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="The version you last read (ETag).")
]
MinVersion = Annotated[
    int | None,
    Query(ge=1, description="Wait (bounded) until the read model reflects this version."),
]
MinVersionHeader = Annotated[int | None, Header(alias="X-Voxagent-Min-Version")]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def container_of(request: Request) -> Services:
    return request.app.state.container


def actor(caller: Any) -> Actor:
    return Actor(space_id=caller.space_id, subject=caller.subject)


def expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    match = re.fullmatch(r'\s*(?:W/)?"?(\d{1,18})"?\s*', if_match)
    if not match:
        raise ApiError(
            400,
            "invalid_if_match",
            'If-Match must hold the version you last read, e.g. If-Match: "3"',
        )
    return int(match.group(1))


def checked_key(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_key(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_idempotency_key", str(exc)) from None


def request_fingerprint(method: str, path: str, query: str, if_match: str | None,
                        body: bytes) -> str:  # fmt: skip
    """What makes a request the same request: its route (method, path, query), its If-Match
    and its body as sent — JSON compared by value, so a retry that orders keys differently or
    spaces them otherwise is still the same request."""
    try:
        content: Any = json.loads(body) if body.strip() else None
    except ValueError:  # not JSON (the route will refuse it anyway): the bytes themselves
        content = body.hex()
    canonical = json.dumps(
        [method, path, query, if_match, content], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def request_key(request: Request, key: IdempotencyKeyHeader = None) -> RequestKey | None:
    """The request's Idempotency-Key (400 when malformed) with the request's fingerprint."""
    checked = checked_key(key)
    if checked is None:
        return None
    fingerprint = request_fingerprint(
        request.method, request.url.path, request.url.query,
        request.headers.get("If-Match"), await request.body(),
    )  # fmt: skip
    return RequestKey(checked, fingerprint)


IdempotencyKey = Annotated[RequestKey | None, Depends(request_key)]


def replayed_header(response: Response, replayed: bool) -> None:
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"


def write_headers(response: Response, result: Any) -> None:
    """ETag (the version), the event store position, and whether a key was replayed."""
    response.headers["ETag"] = f'"{result.version}"'
    if result.position is not None:
        response.headers["X-Voxagent-Position"] = str(result.position)
    replayed_header(response, result.replayed)
