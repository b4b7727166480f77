"""What every router shares: the container, the caller as an actor, write headers."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response

from adapters.api.errors import ApiError
from commands.agents import Actor
from commands.idempotency import check_key

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Replaying a key returns the first result."),
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


def container_of(request: Request) -> Any:
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


def write_headers(response: Response, result: Any) -> None:
    """ETag (the version), the event store position, and whether a key was replayed."""
    response.headers["ETag"] = f'"{result.version}"'
    if result.position is not None:
        response.headers["X-Voxagent-Position"] = str(result.position)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
