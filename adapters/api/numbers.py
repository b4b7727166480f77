"""``/api/telephony/numbers`` and ``/api/telephony/lookup``: the space's phone numbers.

Writes go through the NumbersApplication (an E.164 number is active in one space at a time,
enforced with the event); reads come from the ``numbers`` read model (``min_version`` waits for a
write). Searching and buying call the provider adapter of ``provider`` in a thread, with the
space's own account (``/api/telephony/accounts``); a number bought but then refused by our store
is released at the provider again (compensation), and the answer says so.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
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
from adapters.api.number_schemas import (
    AgentRef,
    BuyProviderName,
    CallerIdBody,
    LookupResult,
    NumberBuy,
    NumberPage,
    NumberProvision,
    NumberPublic,
    RefusedCallPage,
    RefusedCallPublic,
    SearchResult,
)
from adapters.api.openapi import errors
from adapters.api.reads import read_at_least
from adapters.services import Services
from commands.numbers import (
    AssignNumber,
    NumberTaken,
    ProvisionNumber,
    ReleaseNumber,
    Result,
    SetCallerId,
    UnassignNumber,
)
from commands.telephony import CallbackUrls, NumberQuery, ProviderCredentials, ProviderError
from domain.errors import DomainError
from domain.phone_numbers import PhoneNumber, normalise_e164
from projections import number_queries

router = APIRouter(prefix="/api/telephony", tags=["numbers"])
PROVIDER = ("provider_account_missing", "provider_not_configured", "provider_rejected",
            "provider_failed")  # fmt: skip
_CHANGE = ("number_not_found", "number_released", "concurrent_modification")
_AGENT = ("agent_not_found", "agent_archived")


def public_from_number(number: PhoneNumber) -> NumberPublic:
    return NumberPublic(
        id=number.id, e164=number.e164, provider=number.provider,  # type: ignore[arg-type]
        provider_id=number.provider_id, capabilities=number.capabilities,
        inbound_agent_id=number.inbound_agent_id, outbound_agent_id=number.outbound_agent_id,
        trunk_id=number.trunk_id, status=number.status,  # type: ignore[arg-type]
        version=number.version, created_at=number.created_on, updated_at=number.modified_on,
        released_at=number.modified_on if number.released else None,
    )  # fmt: skip


def _answer(response: Response, result: Result) -> NumberPublic:
    write_headers(response, result)
    return public_from_number(result.aggregate)


def provider_failure(exc: ProviderError) -> ApiError:
    """A provider's refusal or failure as our error, its own code in ``details.code``."""
    details = {"code": exc.code, "provider_status": exc.status}
    if exc.code == "provider_not_configured":
        return ApiError(503, "provider_not_configured", exc.message, details)
    if exc.code in ("provider_rejected", "provider_not_found"):
        return ApiError(409, "provider_rejected", exc.message, details)
    return ApiError(502, "provider_failed", f"The provider failed: {exc.message}", details)


def _credentials(container: Services, space_id: str, provider: str) -> ProviderCredentials:
    creds = container.numbers.credentials(space_id, provider)
    if creds is None:
        raise ApiError(
            409, "provider_account_missing",
            f"Your space has no {provider} account: connect one with "
            f"PUT /api/telephony/accounts/{provider} first.",
        )  # fmt: skip
    return creds


def callback_urls(request: Request, provider: str) -> CallbackUrls:
    """Our webhooks a bought number reports to (no query strings: the number routes calls)."""
    settings = container_of(request).settings.telephony
    base = (settings.public_api_url or str(request.base_url)).rstrip("/")
    if provider == "voximplant":
        return CallbackUrls(f"{base}/api/voximplant/route", f"{base}/api/voximplant/status")
    return CallbackUrls(f"{base}/api/twilio/voice", f"{base}/api/twilio/status")


@router.get("/numbers/search", response_model=SearchResult, responses=errors(*PROVIDER))
async def search_numbers(
    request: Request,
    caller: CallerDep,
    provider: BuyProviderName,
    country: Annotated[str, Query(pattern=r"^[A-Z]{2}$", description="ISO 3166-1, e.g. `US`.")],
    area_code: Annotated[str | None, Query(pattern=r"^[0-9]{1,6}$")] = None,
    contains: Annotated[str | None, Query(pattern=r"^[0-9*]{1,16}$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResult:
    container = container_of(request)
    creds = _credentials(container, caller.space_id, provider)
    query = NumberQuery(country=country, area_code=area_code, contains=contains, limit=limit)
    try:
        adapter = container.telephony_providers.number_provider(provider)
        found = await anyio.to_thread.run_sync(adapter.search, creds, query)
    except ProviderError as exc:
        raise provider_failure(exc) from None
    return SearchResult(items=found)


@router.post(
    "/numbers/buy", status_code=201, response_model=NumberPublic,
    responses=errors("invalid_phone_number", "number_taken", *PROVIDER, *_AGENT),
)  # fmt: skip
async def buy_number(
    request: Request,
    response: Response,
    caller: CallerDep,
    body: NumberBuy,
    idempotency_key: IdempotencyKey = None,
) -> NumberPublic:
    """Buy ``e164`` at the provider (its voice and status URLs set to our webhooks), make it the
    space's, and assign it to ``agent_id`` when given."""
    container, who = container_of(request), actor(caller)
    numbers = container.numbers
    first = await anyio.to_thread.run_sync(numbers.replayed, who, idempotency_key, "buy_number")
    if first is not None:
        response.headers["Idempotent-Replayed"] = "true"
        current = numbers.get_number(who, first.id)
        response.headers["ETag"] = f'"{current.version}"'
        return public_from_number(current)
    e164 = normalise_e164(body.e164)
    if body.agent_id is not None:
        container.agents.get_agent(who, body.agent_id).ensure_accepts_calls()
    if numbers.route(e164) is not None:
        raise NumberTaken(f"{e164} is already provisioned (in this or another space)")
    creds = _credentials(container, caller.space_id, body.provider)
    try:
        adapter = container.telephony_providers.number_provider(body.provider)
        urls = callback_urls(request, body.provider)
        bought = await anyio.to_thread.run_sync(adapter.buy, creds, e164, urls)
    except ProviderError as exc:
        raise provider_failure(exc) from None
    cmd = ProvisionNumber(
        e164=bought.e164, provider=body.provider, provider_id=bought.provider_id,
        capabilities=[c for c in bought.capabilities if c in ("voice", "sms", "mms", "fax")]
        or ["voice"],
    )  # fmt: skip
    try:
        result = await anyio.to_thread.run_sync(
            lambda: numbers.provision_number(who, cmd, idempotency_key, "buy_number")
        )
    except Exception as exc:
        await _compensate(adapter, creds, bought.provider_id, exc)
        raise
    if body.agent_id is not None:
        assign = AssignNumber(number_id=result.id, agent_id=body.agent_id)
        result = await anyio.to_thread.run_sync(numbers.assign_number, who, assign)
    response.headers["Location"] = f"/api/telephony/numbers/{result.id}"
    return _answer(response, result)


async def _compensate(adapter: Any, creds: ProviderCredentials, provider_id: str,
                      cause: Exception) -> None:  # fmt: skip
    """Release a number we bought but could not record; the error then says what happened."""
    try:
        await anyio.to_thread.run_sync(adapter.release, creds, provider_id)
        note = "the number was bought and then released again at the provider"
    except ProviderError as exc:
        note = (f"the number was bought but could not be released again at the provider "
                f"({exc.code}); release {provider_id} there yourself")  # fmt: skip
    if isinstance(cause, DomainError | NumberTaken):
        cause.args = (f"{cause}; {note}",)
        if hasattr(cause, "message"):
            cause.message = f"{cause.message}; {note}"


@router.post(
    "/numbers", status_code=201, response_model=NumberPublic,
    responses=errors("invalid_phone_number", "invalid_number", "number_taken", "trunk_not_found"),
)  # fmt: skip
def provision_number(
    request: Request,
    response: Response,
    caller: CallerDep,
    body: NumberProvision,
    idempotency_key: IdempotencyKey = None,
) -> NumberPublic:
    """Make a number you already have the space's (the only way for `sip` numbers)."""
    cmd = ProvisionNumber(**body.model_dump())
    result = container_of(request).numbers.provision_number(actor(caller), cmd, idempotency_key)
    response.headers["Location"] = f"/api/telephony/numbers/{result.id}"
    return _answer(response, result)


def _public_from_row(row: dict[str, Any]) -> NumberPublic:
    return NumberPublic(**row)


@router.get("/numbers", response_model=NumberPage)
def list_numbers(
    request: Request,
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
    include_released: bool = False,
    agent_id: Annotated[UUID | None, Query(description="Numbers of this agent.")] = None,
    provider: Annotated[str | None, Query(max_length=16)] = None,
) -> NumberPage:
    with container_of(request).pool.connection() as conn:
        rows, total = number_queries.list_numbers(
            conn, caller.space_id, limit=limit, offset=offset,
            include_released=include_released, agent_id=agent_id, provider=provider,
        )  # fmt: skip
    return NumberPage(items=[_public_from_row(r) for r in rows], total=total, limit=limit,
                      offset=offset)  # fmt: skip


@router.get("/numbers/{number_id}", response_model=NumberPublic,
            responses=errors("number_not_found"))  # fmt: skip
async def get_number(
    request: Request,
    response: Response,
    caller: CallerDep,
    number_id: UUID,
    min_version: MinVersion = None,
    min_version_header: MinVersionHeader = None,
) -> NumberPublic:
    wanted = max(min_version or 0, min_version_header or 0)
    row = await read_at_least(
        request, caller.space_id,
        lambda conn: number_queries.get_number(conn, caller.space_id, number_id),
        wanted, f"number {number_id}",
    )  # fmt: skip
    if row is None:
        raise ApiError(404, "number_not_found", f"No number {number_id} in your space.")
    response.headers["ETag"] = f'"{row["version"]}"'
    return _public_from_row(row)


@router.get("/numbers/{number_id}/refused-calls", response_model=RefusedCallPage,
            responses=errors("number_not_found"))  # fmt: skip
async def list_refused_calls(
    request: Request, caller: CallerDep, number_id: UUID, limit: Limit = 50, offset: Offset = 0
) -> RefusedCallPage:
    """Calls to the number that were refused politely (unassigned, released, agent unavailable,
    another provider...), newest first. Calls to numbers that are nobody's are not recorded."""
    container = container_of(request)
    await anyio.to_thread.run_sync(container.numbers.get_number, actor(caller), number_id)

    def page() -> tuple[list[dict[str, Any]], int]:
        with container.pool.connection() as conn:
            return number_queries.list_refused_calls(
                conn, caller.space_id, number_id, limit=limit, offset=offset
            )

    rows, total = await anyio.to_thread.run_sync(page)
    fields = RefusedCallPublic.model_fields
    items = [RefusedCallPublic(**{k: v for k, v in r.items() if k in fields}) for r in rows]
    return RefusedCallPage(items=items, total=total, limit=limit, offset=offset)


@router.post("/numbers/{number_id}/assign", response_model=NumberPublic,
             responses=errors(*_CHANGE, *_AGENT))  # fmt: skip
def assign_number(
    request: Request, response: Response, caller: CallerDep, number_id: UUID, body: AgentRef,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> NumberPublic:  # fmt: skip
    """Calls to the number are answered by ``agent_id`` (a live agent of your space)."""
    cmd = AssignNumber(number_id=number_id, agent_id=body.agent_id,
                       expected_version=expected_version(if_match))  # fmt: skip
    app = container_of(request).numbers
    return _answer(response, app.assign_number(actor(caller), cmd, idempotency_key))


@router.post("/numbers/{number_id}/unassign", response_model=NumberPublic,
             responses=errors(*_CHANGE))  # fmt: skip
def unassign_number(
    request: Request, response: Response, caller: CallerDep, number_id: UUID,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> NumberPublic:  # fmt: skip
    cmd = UnassignNumber(number_id=number_id, expected_version=expected_version(if_match))
    app = container_of(request).numbers
    return _answer(response, app.unassign_number(actor(caller), cmd, idempotency_key))


@router.post("/numbers/{number_id}/caller-id", response_model=NumberPublic,
             responses=errors(*_CHANGE, *_AGENT))  # fmt: skip
def set_caller_id(
    request: Request, response: Response, caller: CallerDep, number_id: UUID,
    body: CallerIdBody, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> NumberPublic:  # fmt: skip
    """``agent_id`` places its outbound calls from this number (null: none does)."""
    cmd = SetCallerId(number_id=number_id, agent_id=body.agent_id,
                      expected_version=expected_version(if_match))  # fmt: skip
    app = container_of(request).numbers
    return _answer(response, app.set_caller_id(actor(caller), cmd, idempotency_key))


@router.post("/numbers/{number_id}/release", response_model=NumberPublic,
             responses=errors(*_CHANGE, "number_assigned", *PROVIDER))  # fmt: skip
async def release_number(
    request: Request, response: Response, caller: CallerDep, number_id: UUID,
    at_provider: Annotated[bool, Query(description="Also release it at the provider (a "
                                       "number with a provider id).")] = True,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> NumberPublic:  # fmt: skip
    """The number leaves the space (unassign it first); by default it is released at the
    provider too, before we record it."""
    container, who = container_of(request), actor(caller)
    numbers = container.numbers
    number = numbers.get_number(who, number_id)
    if at_provider and _releasable(number):
        creds = _credentials(container, caller.space_id, number.provider)
        try:
            adapter = container.telephony_providers.number_provider(number.provider)
            await anyio.to_thread.run_sync(adapter.release, creds, number.provider_id or "")
        except ProviderError as exc:
            if exc.code != "provider_not_found":  # gone there already: release it here
                raise provider_failure(exc) from None
    cmd = ReleaseNumber(number_id=number_id, expected_version=expected_version(if_match))
    result = await anyio.to_thread.run_sync(numbers.release_number, who, cmd, idempotency_key)
    return _answer(response, result)


def _releasable(number: PhoneNumber) -> bool:
    """Worth asking the provider: active, unassigned (else we refuse anyway), bought there."""
    return (not number.released and number.inbound_agent_id is None
            and number.provider != "sip" and bool(number.provider_id))  # fmt: skip


@router.get("/lookup", response_model=LookupResult,
            responses=errors("invalid_phone_number", "number_not_found"))  # fmt: skip
def lookup(
    request: Request,
    caller: CallerDep,
    number: Annotated[str, Query(max_length=64, description="E.164, e.g. `+14155550100`.")],
) -> LookupResult:
    """The agent answering ``number`` in your space (from the write side: current at once)."""
    e164 = normalise_e164(number)
    route = container_of(request).numbers.route(e164)
    if route is None or route.space_id != caller.space_id:
        raise ApiError(404, "number_not_found", f"{e164} is not an active number of your space.")
    return LookupResult(
        number_id=route.number_id, e164=route.e164, provider=route.provider,
        agent_id=route.agent_id, trunk_id=route.trunk_id, status=route.status,
    )  # fmt: skip
