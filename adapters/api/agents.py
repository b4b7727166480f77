"""``/api/agents``: VoxArena's agents router on the event-sourced path.

Writes go through the AgentsApplication (commands); reads come from the Postgres read model.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from adapters.api.auth import CallerDep
from adapters.api.common import (
    IdempotencyKey,
    IfMatch,
    Limit,
    MinVersion,
    MinVersionHeader,
    Offset,
    actor,
    container_of,
    expected_version,
    write_headers,
)
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.reads import read_at_least
from adapters.api.schemas import AgentCreate, AgentPage, AgentPatch, AgentPublic
from commands.agents import ArchiveAgent, CreateAgent, Result, UpdateAgent
from projections import agent_queries

router = APIRouter(prefix="/api/agents", tags=["agents"])
_CONFIG = ("invalid_config", "provider_unavailable")
_CHANGE = ("agent_not_found", "agent_archived", "concurrent_modification")


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


@router.get("", response_model=AgentPage)
def list_agents(
    request: Request,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    include_archived: bool = False,
    name: Annotated[str | None, Query(max_length=200, description="Name contains.")] = None,
    language: Annotated[str | None, Query(max_length=35)] = None,
    llm_provider: Annotated[str | None, Query(max_length=64)] = None,
) -> AgentPage:
    with container_of(request).pool.connection() as conn:
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


@router.get("/{agent_id}", response_model=AgentPublic, responses=errors("agent_not_found"))
async def get_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    agent_id: UUID,
    min_version: MinVersion = None,
    min_version_header: MinVersionHeader = None,
) -> AgentPublic:
    wanted = max(min_version or 0, min_version_header or 0)
    row = await read_at_least(
        request, caller.space_id,
        lambda conn: agent_queries.get_agent(conn, caller.space_id, agent_id),
        wanted, f"agent {agent_id}",
    )  # fmt: skip
    if row is None:
        raise ApiError(404, "agent_not_found", f"No agent {agent_id} in your space.")
    response.headers["ETag"] = f'"{row["version"]}"'
    return _public_from_row(row)


@router.post("", status_code=201, response_model=AgentPublic, responses=errors(*_CONFIG))
def create_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    body: AgentCreate,
    idempotency_key: IdempotencyKey = None,
) -> AgentPublic:
    app = container_of(request).agents
    cmd = CreateAgent(config=body.model_dump())
    result = app.create_agent(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    response.headers["Location"] = f"/api/agents/{result.id}"
    return _public_from_write(result)


@router.patch("/{agent_id}", response_model=AgentPublic, responses=errors(*_CHANGE, *_CONFIG))
def update_agent(
    request: Request,
    response: Response,
    caller: CallerDep,
    agent_id: UUID,
    body: AgentPatch,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> AgentPublic:
    app = container_of(request).agents
    cmd = UpdateAgent(
        agent_id=agent_id,
        patch=body.model_dump(exclude_unset=True),
        expected_version=expected_version(if_match),
    )
    result = app.update_agent(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    return _public_from_write(result)


@router.delete("/{agent_id}", status_code=204, responses=errors(*_CHANGE))
def archive_agent(
    request: Request,
    caller: CallerDep,
    agent_id: UUID,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    app = container_of(request).agents
    cmd = ArchiveAgent(agent_id=agent_id, expected_version=expected_version(if_match))
    result = app.archive_agent(actor(caller), cmd, idempotency_key)
    response = Response(status_code=204)
    write_headers(response, result)
    return response
