"""``/api/costs`` (summary, timeline, by agent) and ``/api/usage/events``, from the cost rollups."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from adapters.api.auth import CallerDep
from adapters.api.common import IdempotencyKey, actor, container_of
from adapters.api.openapi import errors
from adapters.api.session_schemas import (
    Accepted,
    CostByAgent,
    CostSummary,
    CostTimeline,
    UsageEventCreate,
)
from adapters.api.sessions import CHANGE, _accepted
from commands.calls import RecordUsage
from projections import call_queries

router = APIRouter(prefix="/api/costs", tags=["costs"])
usage_router = APIRouter(prefix="/api/usage", tags=["usage"])

Since = Annotated[date | None, Query(description="first day included (UTC)")]
Until = Annotated[date | None, Query(description="first day excluded (UTC)")]
GRANULARITY = {"daily": "day", "weekly": "week", "monthly": "month"}


@router.get("/summary", response_model=CostSummary)
def summary(request: Request, caller: CallerDep, since: Since = None, until: Until = None) -> Any:
    with container_of(request).pool.connection() as conn:
        return call_queries.cost_summary(conn, caller.space_id, since=since, until=until)


@router.get("/timeline", response_model=CostTimeline)
def timeline(
    request: Request, caller: CallerDep,
    granularity: Literal["daily", "weekly", "monthly"] = "daily",
    since: Since = None, until: Until = None,
) -> Any:  # fmt: skip
    with container_of(request).pool.connection() as conn:
        points = call_queries.cost_timeline(
            conn, caller.space_id, granularity=GRANULARITY[granularity],  # type: ignore[arg-type]
            since=since, until=until,
        )  # fmt: skip
    return {"granularity": granularity, "points": points}


@router.get("/by-agent", response_model=CostByAgent)
def by_agent(request: Request, caller: CallerDep, since: Since = None, until: Until = None) -> Any:
    with container_of(request).pool.connection() as conn:
        agents = call_queries.cost_by_agent(conn, caller.space_id, since=since, until=until)
    return {"agents": agents}


@usage_router.post("/events", status_code=201, response_model=Accepted, responses=errors(*CHANGE))
def log_usage(
    request: Request, response: Response, caller: CallerDep, body: UsageEventCreate,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:  # fmt: skip
    cmd = RecordUsage(
        call_id=body.session_id, provider=body.provider, model=body.model, kind=body.kind,
        quantity=body.quantity,
    )  # fmt: skip
    result = container_of(request).calls.record_usage(actor(caller), cmd, idempotency_key)
    return _accepted(response, result)
