"""The HTTP API's app factory: the container lives on ``app.state``; errors are JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing import persistence
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from adapters.api import (
    agents,
    costs,
    health,
    livekit,
    numbers,
    outbound,
    sessions,
    sip,
    telephony,
    telephony_config,
    twilio_webhooks,
    voximplant,
    webhooks,
)
from adapters.api.errors import error_response, install_error_handlers, unexpected_error
from adapters.api.openapi import install_openapi
from adapters.api.text_guard import TextGuard
from adapters.kafka.consumer import is_infrastructure
from adapters.services import Services
from commands.agents import AgentNotFound, ConcurrentModification, VersionMismatch
from commands.calls import CallNotFound
from commands.idempotency import IdempotencyKeyReused
from commands.numbers import (
    AccountNotFound,
    NumberNotFound,
    NumberTaken,
    TrunkInUse,
    TrunkNotFound,
)
from commands.webhooks import EndpointNotFound
from domain.calls import CallEnded, CallNotStarted, InvalidSignal
from domain.errors import AgentArchived, InvalidConfig, ProviderUnavailable
from domain.phone_numbers import InvalidNumber, InvalidPhoneNumber, NumberAssigned, NumberReleased
from domain.provider_accounts import AccountDisconnected, InvalidAccount
from domain.sip_trunks import InvalidTrunk, TrunkDeleted
from domain.webhooks import EndpointDeleted

log = logging.getLogger(__name__)

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
    NumberNotFound: (404, "number_not_found"),
    NumberTaken: (409, "number_taken"),
    NumberReleased: (409, "number_released"),
    NumberAssigned: (409, "number_assigned"),
    InvalidPhoneNumber: (422, "invalid_phone_number"),
    InvalidNumber: (422, "invalid_number"),
    TrunkNotFound: (404, "trunk_not_found"),
    TrunkDeleted: (404, "trunk_not_found"),
    TrunkInUse: (409, "trunk_in_use"),
    InvalidTrunk: (422, "invalid_trunk"),
    AccountNotFound: (404, "provider_account_not_found"),
    AccountDisconnected: (404, "provider_account_not_found"),
    InvalidAccount: (422, "invalid_provider_account"),
}


# PostgreSQL (event store, read models) does not answer: the caller retries; nothing was written
# (a command's events and its idempotency record commit together or not at all)
_STORE_AWAY = (
    persistence.OperationalError,
    persistence.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_infrastructure(exc):  # e.g. a limit the statement itself broke: not "retry"
        return await unexpected_error(request, exc)
    log.warning("PostgreSQL unavailable: %s", type(exc).__name__)
    return error_response(
        request,
        503,
        "store_unavailable",
        "The event store does not answer right now; nothing was written. Retry in a few seconds "
        "(with the same Idempotency-Key for a write).",
        headers={"Retry-After": "5"},
    )


def _handler(status: int, code: str) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, status, code, getattr(exc, "message", None) or str(exc))

    return handle


def create_app(container: Services) -> FastAPI:
    app = FastAPI(
        title="Voxagent API",
        version="0.1.0",
        description="Configure voice agents; every change is an event. "
        "Authenticate with a bearer JWT whose space claim scopes every request.",
    )
    app.state.container = container
    app.state.verifier = container.verifier
    install_error_handlers(app)
    app.add_middleware(TextGuard)  # NUL or invalid UTF-8 in a URL or header: 422, for every route
    for exc_type, (status, code) in _MAPPED.items():
        app.add_exception_handler(exc_type, _handler(status, code))
    for away in _STORE_AWAY:
        app.add_exception_handler(away, _store_unavailable)
    app.include_router(agents.router)
    app.include_router(sessions.router)
    app.include_router(costs.router)
    app.include_router(costs.usage_router)
    app.include_router(webhooks.router)
    app.include_router(livekit.router)
    app.include_router(telephony.router)
    app.include_router(numbers.router)
    app.include_router(telephony_config.router)
    app.include_router(outbound.router)
    app.include_router(twilio_webhooks.router)
    app.include_router(voximplant.router)
    app.include_router(sip.router)
    app.include_router(health.router)
    install_openapi(app)
    return app
