"""``/api/agents``: VoxArena's agents router on the event-sourced path.

Writes go through the AgentsApplication (commands); reads come from the Postgres read model.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response

from adapters.api.auth import CallerDep
from adapters.api.errors import ApiError
from adapters.api.schemas import AgentCreate, AgentPage, AgentPatch, AgentPublic
from commands.agents import Actor, ArchiveAgent, CreateAgent, Result, UpdateAgent
from commands.idempotency import check_key
from projections import agent_queries

router = APIRouter(prefix="/api/agents", tags=["agents"])

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


def _container(request: Request) -> Any:
    return request.app.state.container


def _actor(caller: Any) -> Actor:
    return Actor(space_id=caller.space_id, subject=caller.subject)


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    match = re.fullmatch(r'\s*(?:W/)?"?(\d{1,18})"?\s*', if_match)
    if not match:
        raise ApiError(
            400,
            "invalid_if_match",
            'If-Match must hold the agent version you last read, e.g. If-Match: "3"',
        )
    return int(match.group(1))


def _key(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_key(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_idempotency_key", str(exc)) from None


def _public_from_write(result: Result) -> AgentPublic:
    agent = result.agent
    assert agent is not None
    return AgentPublic(
        **agent.config,
        id=agent.id,
        version=agent.version,
        config_version=agent.config_version,
        archived=agent.archived,
        created_at=agent.created_on,
        updated_at=agent.modified_on,
        archived_at=agent.modified_on if agent.archived else None,
    )


_ROW_META = (
    "id",
    "version",
    "config_version",
    "archived",
    "created_at",
    "updated_at",
    "archived_at",
)


def _public_from_row(row: dict[str, Any]) -> AgentPublic:
    return AgentPublic(**{**row["config"], **{k: row[k] for k in _ROW_META}})


def _write_headers(response: Response, result: Result) -> None:
    response.headers["ETag"] = f'"{result.version}"'
    if result.position is not None:
        response.headers["X-Voxagent-Position"] = str(result.position)
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"


@router.get("", response_model=AgentPage)
def list_agents(
    request: Request,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    include_archived: bool = False,
    name: Annotated[str | None, Query(max_length=200, description="Name contains.")] = None,
    language: Annotated[str | None, Query(max_length=35)] = None,
    llm_provider: Annotated[str | None, Query(max_length=64)] = None,
) -> AgentPage:
    with _container(request).pool.connection() as conn:
        rows, total = agent_queries.list_agents(
            conn,
            caller.space_id,
            limit=limit,
            offset=offset,
            include_archived=include_archived,
            name_contains=name,
            language=language,
            llm_provider=llm_provider,
        )
    items = [_public_from_row(row) for row in rows]
    return AgentPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{agent_id}", response_model=AgentPublic)
def get_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    agent_id: UUID,
    min_version: MinVersion = None,
    min_version_header: Annotated[int | None, Header(alias="X-Voxagent-Min-Version")] = None,
) -> AgentPublic:
    container = _container(request)
    wanted = max(min_version or 0, min_version_header or 0)
    deadline = time.monotonic() + container.settings.api.read_wait_seconds
    delay = 0.005
    while True:
        with container.pool.connection() as conn:
            row = agent_queries.get_agent(conn, caller.space_id, agent_id)
        if row is not None and row["version"] >= wanted:
            break
        if time.monotonic() >= deadline:
            if row is None and not wanted:
                break
            raise ApiError(
                503,
                "read_model_behind",
                f"The read model has not reached version {wanted} of agent {agent_id} yet; "
                "retry in a moment.",
                headers={"Retry-After": "1"},
            )
        if row is None and not wanted:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if row is None:
        raise ApiError(404, "agent_not_found", f"No agent {agent_id} in your space.")
    response.headers["ETag"] = f'"{row["version"]}"'
    return _public_from_row(row)


@router.post("", status_code=201, response_model=AgentPublic)
def create_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    body: AgentCreate,
    idempotency_key: IdempotencyKey = None,
) -> AgentPublic:
    app = _container(request).agents
    cmd = CreateAgent(config=body.model_dump())
    result = app.create_agent(_actor(caller), cmd, _key(idempotency_key))
    _write_headers(response, result)
    response.headers["Location"] = f"/api/agents/{result.id}"
    return _public_from_write(result)


@router.patch("/{agent_id}", response_model=AgentPublic)
def update_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    agent_id: UUID,
    body: AgentPatch,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> AgentPublic:
    app = _container(request).agents
    cmd = UpdateAgent(
        agent_id=agent_id,
        patch=body.model_dump(exclude_unset=True),
        expected_version=_expected_version(if_match),
    )
    result = app.update_agent(_actor(caller), cmd, _key(idempotency_key))
    _write_headers(response, result)
    return _public_from_write(result)


@router.delete("/{agent_id}", status_code=204)
def archive_agent(
    request: Request,
    caller: CallerDep,
    agent_id: UUID,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    app = _container(request).agents
    cmd = ArchiveAgent(agent_id=agent_id, expected_version=_expected_version(if_match))
    result = app.archive_agent(_actor(caller), cmd, _key(idempotency_key))
    response = Response(status_code=204)
    _write_headers(response, result)
    return response
