"""What the OpenAPI document says about errors: the body we send, and every status and code a
route can answer with.

Each route names the errors of its own next to its decorator (``responses=errors(
"agent_not_found", "agent_archived")``); what follows from the route's shape is added here in one
place (:func:`install_openapi`): 422 ``invalid_request`` and 500 everywhere (the text guard
checks every URL and header), the authentication errors of a route that takes a caller,
``If-Match``, ``Idempotency-Key`` and ``min_version`` errors of the routes that take them, 400
``bad_request`` of a JSON body, and 503 ``store_unavailable`` wherever the database is used. Each
error status documents :class:`ErrorBody` and lists its codes (``x-error-codes``),
which docs/api.md's table and the contract test read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from adapters.api.auth import get_caller


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable and machine-readable; each status lists its codes.")
    message: str = Field(description="What went wrong and what to do about it.")
    request_id: str = Field(description="Also in the `x-request-id` header; quote it to us.")
    details: Any = Field(
        None,
        description="Present for some codes: for `invalid_request`, one `{loc, msg, type}` per "
        "field to fix.",
    )


class ErrorBody(BaseModel):
    """Every error the API answers with."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


# code -> (HTTP status, when). The one list of the codes we answer with; app.py maps exceptions
# onto them (a unit test keeps the two equal).
CODES: dict[str, tuple[int, str]] = {
    # any route
    "internal_error": (500, "a fault on our side; retry, and report the request id"),
    "store_unavailable": (503, "the database is unreachable right now; retry shortly"),
    "bad_request": (400, "the body cannot be read as JSON (e.g. it is not UTF-8)"),
    "invalid_request": (
        422,
        "the body, a parameter or a header is not valid (e.g. NUL): `details` says which",
    ),
    # authentication (routes that take a bearer token)
    "unauthenticated": (401, "no token, or one that is malformed, expired or not for this API"),
    "space_missing": (403, "the token names no valid space"),
    "auth_unavailable": (503, "the issuer's keys (JWKS) cannot be fetched right now"),
    # headers and parameters of writes and reads
    "invalid_if_match": (400, '`If-Match` is not a version such as `"3"`'),
    "version_mismatch": (412, "`If-Match` names another version than the current one"),
    "invalid_idempotency_key": (400, "`Idempotency-Key` is empty, too long or not printable"),
    "idempotency_key_reused": (422, "the `Idempotency-Key` was used for a different request"),
    "read_model_behind": (503, "the read model did not reach `min_version` in time; retry"),
    "too_many_waits": (429, "too many reads of your space are waiting for `min_version`"),
    # agents
    "agent_not_found": (404, "no such agent in your space"),
    "agent_archived": (409, "the agent is archived: it cannot change or take calls"),
    "concurrent_modification": (409, "someone else saved in between; reload and retry"),
    "invalid_config": (422, "the configuration breaks a rule the message names"),
    "provider_unavailable": (422, "a provider the agent names is not configured here"),
    # sessions (calls)
    "session_not_found": (404, "no such session in your space"),
    "call_ended": (409, "the session has ended"),
    "call_not_started": (409, "the session has not been answered yet"),
    "invalid_call_update": (422, "the update does not fit the session's state"),
    "livekit_unavailable": (503, "the voice server could not open the call's room"),
    # webhooks
    "webhook_endpoint_not_found": (404, "no such webhook endpoint in your space"),
    "webhook_delivery_not_found": (404, "no such delivery of this endpoint"),
    "webhook_delivery_pending": (409, "the delivery is still pending"),
    "webhook_target_refused": (422, "the URL points where deliveries may not go"),
    # numbers, SIP trunks, provider accounts
    "number_not_found": (404, "no such active number in your space"),
    "number_taken": (409, "the number is already active (in this or another space)"),
    "number_released": (409, "the number was released: it takes no further change"),
    "number_assigned": (409, "the number answers calls with an agent: unassign it first"),
    "invalid_phone_number": (422, "not a valid E.164 phone number: the message says why"),
    "invalid_number": (422, "a provider, capability or trunk a number cannot have"),
    "trunk_not_found": (404, "no such SIP trunk in your space"),
    "trunk_in_use": (409, "active numbers arrive through the trunk: release them first"),
    "invalid_trunk": (422, "the trunk's configuration breaks a rule the message names"),
    "provider_account_not_found": (404, "no account at this provider is connected"),
    "invalid_provider_account": (422, "the account lacks the secrets its provider needs"),
    "provider_account_missing": (409, "connect the space's account at the provider first"),
    "provider_not_configured": (503, "this deployment has no adapter for the provider"),
    "provider_rejected": (409, "the provider refused (e.g. the number is no longer available)"),
    "provider_failed": (502, "the provider failed or could not be reached; `details.code`"),
    # provider webhooks
    "invalid_webhook_signature": (401, "LiveKit's signed token is missing or does not verify"),
    "ingress_unavailable": (503, "Kafka did not take the signals; retry shortly"),
    "twilio_not_configured": (
        503,
        "no auth token verifies the number's webhooks (space account or deployment)",
    ),
    "unsupported_media_type": (415, "the body is not form-encoded"),
    "invalid_twilio_signature": (403, "`X-Twilio-Signature` does not match the request"),
    "wrong_twilio_account": (403, "the webhook comes from another Twilio account"),
    "invalid_form": (400, "the form body is not UTF-8 text our stores can hold"),
    "invalid_body": (400, "the webhook body is not UTF-8 text"),
    "invalid_call_sid": (400, "`CallSid` is not Twilio's `CA...` identifier"),
    "number_not_usable": (409, "the number is released or is another agent's caller id"),
    "no_caller_id": (422, "the agent has no caller id: name the number to call from"),
    "not_a_phone_call": (409, "a web call has no phone leg to transfer"),
    "transfer_failed": (502, "the provider did not take the transfer; `details.code` says why"),
    "invalid_voximplant_token": (403, "not the route token of the number's VoxImplant account"),
    "wrong_voximplant_account": (403, "the request names another VoxImplant account"),
    "unknown_number": (404, "not an active VoxImplant number of any space"),
    "not_a_voximplant_call": (409, "the call is not on the VoxImplant channel"),
    "voximplant_not_connected": (404, "your space has no (complete) VoxImplant account"),
    "invalid_sip_secret": (401, "not `Bearer <telephony.sip_secret>`: only our SIP service"),
    "not_a_sip_call": (409, "the call is not on the SIP channel"),
    "no_transfer_in_progress": (409, "the call has no transfer to complete"),
}

REF = "#/components/schemas/ErrorBody"
CODES_KEY = "x-error-codes"
TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
          502: "Bad gateway",
          409: "Conflict", 412: "Precondition failed", 415: "Unsupported media type",
          422: "Unprocessable", 429: "Too many requests", 500: "Internal error",
          503: "Unavailable"}  # fmt: skip
NO_STORE = {"/api/livekit/webhook", "/health"}  # routes that never touch PostgreSQL


def errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's own error codes, grouped by status."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = CODES[code][0]  # KeyError: add the code to CODES first
        entry = out.setdefault(status, {"model": ErrorBody, CODES_KEY: []})
        entry[CODES_KEY].append(code)
    for entry in out.values():
        entry["description"] = describe(entry[CODES_KEY])
    return out


def describe(codes: list[str]) -> str:
    status = CODES[codes[0]][0]
    lines = [f"- `{code}`: {CODES[code][1]}" for code in codes]
    return f"{TITLES.get(status, 'Error')}; `error.code` is one of:\n" + "\n".join(lines)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every documented API route of ``app`` as mounted (its full path, its dependencies)."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def implied_codes(route: Any) -> list[str]:
    """The codes a route can answer with because of its shape, whatever its body does."""
    deps = list(_dependants(route.dependant))
    headers = {f.alias.lower() for d in deps for f in d.header_params}
    queries = {f.alias for d in deps for f in d.query_params}
    codes = ["invalid_request", "internal_error"]  # TextGuard checks every URL and header
    if any(d.call is get_caller for d in deps):
        codes += ["unauthenticated", "space_missing", "auth_unavailable"]
    if route.body_field is not None:
        codes.append("bad_request")
    if "if-match" in headers:
        codes += ["invalid_if_match", "version_mismatch"]
    if "idempotency-key" in headers:
        codes += ["invalid_idempotency_key", "idempotency_key_reused"]
    if "min_version" in queries:
        codes += ["read_model_behind", "too_many_waits"]
    if route.path_format not in NO_STORE:
        codes.append("store_unavailable")
    return codes


def route_codes(route: Any) -> dict[int, list[str]]:
    """Every error status of a route with its codes: its own, then the implied ones."""
    own = [c for r in route.responses.values() if isinstance(r, dict) for c in r.get(CODES_KEY, ())]
    by_status: dict[int, list[str]] = {}
    for code in [*own, *implied_codes(route)]:
        listed = by_status.setdefault(CODES[code][0], [])
        if code not in listed:
            listed.append(code)
    return dict(sorted(by_status.items()))


def build_openapi(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422; we never send it
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas["ErrorBody"] = body
    spec["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An RS256 JWT from the identity provider; its space claim "
            "scopes every request.",
        }  # fmt: skip
    }
    for route in api_routes(app):
        for method in route.methods or ():
            operation = spec["paths"][route.path_format][method.lower()]
            responses = operation["responses"]
            for status, codes in route_codes(route).items():
                if route.path_format == "/health" and status == 503:
                    continue  # /health answers 503 with its own report
                responses[str(status)] = {
                    "description": describe(codes),
                    CODES_KEY: codes,
                    "content": {"application/json": {"schema": {"$ref": REF}}},
                }
            operation["responses"] = dict(sorted(responses.items()))
            if "unauthenticated" in implied_codes(route):
                operation["security"] = [{"bearer": []}]
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi` (built once) at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
