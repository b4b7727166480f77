"""The HTTP API's app factory: the container lives on ``app.state``; errors are JSON."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from adapters.api import agents, costs, health, livekit, sessions, telephony, webhooks
from adapters.api.errors import error_response, install_error_handlers
from adapters.api.openapi import install_openapi
from commands.agents import AgentNotFound, ConcurrentModification, VersionMismatch
from commands.calls import CallNotFound
from commands.idempotency import IdempotencyKeyReused
from commands.webhooks import EndpointNotFound
from domain.calls import CallEnded, CallNotStarted, InvalidSignal
from domain.errors import AgentArchived, InvalidConfig, ProviderUnavailable
from domain.webhooks import EndpointDeleted

# exception -> (HTTP status, stable code); the exception's message says what to do
_MAPPED: dict[type[Exception], tuple[int, str]] = {
    AgentNotFound: (404, "agent_not_found"),
    VersionMismatch: (412, "version_mismatch"),
    ConcurrentModification: (409, "concurrent_modification"),
    AgentArchived: (409, "agent_archived"),
    InvalidConfig: (422, "invalid_config"),
    ProviderUnavailable: (422, "provider_unavailable"),
    IdempotencyKeyReused: (422, "idempotency_key_reused"),
    CallNotFound: (404, "session_not_found"),
    CallEnded: (409, "call_ended"),
    CallNotStarted: (409, "call_not_started"),
    InvalidSignal: (422, "invalid_call_update"),
    EndpointNotFound: (404, "webhook_endpoint_not_found"),
    EndpointDeleted: (404, "webhook_endpoint_not_found"),
}


def _handler(status: int, code: str) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, status, code, getattr(exc, "message", None) or str(exc))

    return handle


def create_app(container: Any) -> FastAPI:
    app = FastAPI(
        title="Voxagent API",
        version="0.1.0",
        description="Configure voice agents; every change is an event. "
        "Authenticate with a bearer JWT whose space claim scopes every request.",
    )
    app.state.container = container
    app.state.verifier = container.verifier
    install_error_handlers(app)
    for exc_type, (status, code) in _MAPPED.items():
        app.add_exception_handler(exc_type, _handler(status, code))
    app.include_router(agents.router)
    app.include_router(sessions.router)
    app.include_router(costs.router)
    app.include_router(costs.usage_router)
    app.include_router(webhooks.router)
    app.include_router(livekit.router)
    app.include_router(telephony.router)
    app.include_router(health.router)
    install_openapi(app)
    return app
