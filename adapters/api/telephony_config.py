"""``/api/telephony/accounts/{provider}`` and ``/api/telephony/trunks``: a space's provider
accounts and SIP trunks. Secrets (auth tokens, keys, digest passwords) are write-only: stored
beside the events in the same transaction, never in an event, never in an answer."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Request, Response

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
    AccountBody,
    AccountPublic,
    TrunkCreate,
    TrunkPage,
    TrunkPatch,
    TrunkPublic,
)
from adapters.api.openapi import errors
from adapters.api.reads import read_at_least
from commands.numbers import (
    ConnectAccount,
    CreateTrunk,
    DeleteTrunk,
    DisconnectAccount,
    Result,
    UpdateTrunk,
)
from domain.provider_accounts import ProviderAccount
from domain.sip_trunks import SipTrunk, TrunkSpec
from projections import number_queries

router = APIRouter(prefix="/api/telephony", tags=["numbers"])
AccountProvider = Literal["twilio", "voximplant"]
_TRUNK = ("trunk_not_found", "concurrent_modification")


def _account(account: ProviderAccount) -> AccountPublic:
    return AccountPublic(
        provider=account.provider,  # type: ignore[arg-type]
        account_id=account.account_id, connected=account.connected, version=account.version,
        updated_at=account.modified_on,
    )  # fmt: skip


@router.put("/accounts/{provider}", response_model=AccountPublic,
            responses=errors("invalid_provider_account"))  # fmt: skip
def put_account(
    request: Request, response: Response, caller: CallerDep, provider: AccountProvider,
    body: AccountBody, idempotency_key: IdempotencyKey = None,
) -> AccountPublic:  # fmt: skip
    """Connect your space's account at ``provider``, or replace its credentials."""
    try:
        cmd = ConnectAccount(provider=provider, **body.model_dump())
    except ValueError as exc:
        raise ApiError(422, "invalid_provider_account", _first(exc)) from None
    result = container_of(request).numbers.connect_account(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    return _account(result.aggregate)


def _first(exc: Exception) -> str:
    errs = getattr(exc, "errors", None)
    if callable(errs):
        return "; ".join(str(e.get("msg")) for e in errs())
    return str(exc)


@router.get("/accounts/{provider}", response_model=AccountPublic,
            responses=errors("provider_account_not_found"))  # fmt: skip
def get_account(
    request: Request, response: Response, caller: CallerDep, provider: AccountProvider
) -> AccountPublic:
    account = container_of(request).numbers.get_account(actor(caller), provider)
    response.headers["ETag"] = f'"{account.version}"'
    return _account(account)


@router.delete("/accounts/{provider}", status_code=204,
               responses=errors("provider_account_not_found"))  # fmt: skip
def delete_account(
    request: Request, caller: CallerDep, provider: AccountProvider,
    idempotency_key: IdempotencyKey = None,
) -> Response:  # fmt: skip
    """Disconnect the account; its secrets are deleted."""
    cmd = DisconnectAccount(provider=provider)
    result = container_of(request).numbers.disconnect_account(actor(caller), cmd, idempotency_key)
    response = Response(status_code=204)
    write_headers(response, result)
    return response


def _trunk(trunk: SipTrunk, created: Any = None) -> TrunkPublic:
    spec: TrunkSpec = trunk.spec
    data = spec.as_data()
    return TrunkPublic(
        id=trunk.id, name=spec.name, inbound=data["inbound"], outbound=data["outbound"],
        version=trunk.version, created_at=created or trunk.created_on,
        updated_at=trunk.modified_on,
    )  # fmt: skip


def _trunk_row(row: dict[str, Any]) -> TrunkPublic:
    return TrunkPublic(
        id=row["id"], name=row["name"], inbound=row["trunk"]["inbound"],
        outbound=row["trunk"].get("outbound"), version=row["version"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )  # fmt: skip


def _written(response: Response, result: Result) -> TrunkPublic:
    write_headers(response, result)
    return _trunk(result.aggregate)


@router.post("/trunks", status_code=201, response_model=TrunkPublic,
             responses=errors("invalid_trunk"))  # fmt: skip
def create_trunk(
    request: Request, response: Response, caller: CallerDep, body: TrunkCreate,
    idempotency_key: IdempotencyKey = None,
) -> TrunkPublic:  # fmt: skip
    spec = TrunkSpec(name=body.name, inbound=body.inbound, outbound=body.outbound)
    cmd = CreateTrunk(spec=spec, inbound_password=body.inbound_password,
                      outbound_password=body.outbound_password)  # fmt: skip
    result = container_of(request).numbers.create_trunk(actor(caller), cmd, idempotency_key)
    response.headers["Location"] = f"/api/telephony/trunks/{result.id}"
    return _written(response, result)


@router.get("/trunks", response_model=TrunkPage)
def list_trunks(
    request: Request, caller: CallerDep, limit: Limit = 50, offset: Offset = 0
) -> TrunkPage:
    with container_of(request).pool.connection() as conn:
        rows, total = number_queries.list_trunks(conn, caller.space_id, limit=limit,
                                                 offset=offset)  # fmt: skip
    return TrunkPage(items=[_trunk_row(r) for r in rows], total=total, limit=limit,
                     offset=offset)  # fmt: skip


@router.get("/trunks/{trunk_id}", response_model=TrunkPublic,
            responses=errors("trunk_not_found"))  # fmt: skip
async def get_trunk(
    request: Request, response: Response, caller: CallerDep, trunk_id: UUID,
    min_version: MinVersion = None, min_version_header: MinVersionHeader = None,
) -> TrunkPublic:  # fmt: skip
    wanted = max(min_version or 0, min_version_header or 0)
    row = await read_at_least(
        request, caller.space_id,
        lambda conn: number_queries.get_trunk(conn, caller.space_id, trunk_id),
        wanted, f"SIP trunk {trunk_id}",
    )  # fmt: skip
    if row is None or row["deleted"]:
        raise ApiError(404, "trunk_not_found", f"No SIP trunk {trunk_id} in your space.")
    response.headers["ETag"] = f'"{row["version"]}"'
    return _trunk_row(row)


@router.patch("/trunks/{trunk_id}", response_model=TrunkPublic,
              responses=errors(*_TRUNK, "invalid_trunk"))  # fmt: skip
def update_trunk(
    request: Request, response: Response, caller: CallerDep, trunk_id: UUID, body: TrunkPatch,
    if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> TrunkPublic:  # fmt: skip
    given = body.model_dump(mode="json", exclude_unset=True)
    patch = {k: v for k, v in given.items() if k in ("name", "inbound", "outbound")}
    cmd = UpdateTrunk(
        trunk_id=trunk_id, patch=patch, inbound_password=body.inbound_password,
        outbound_password=body.outbound_password, expected_version=expected_version(if_match),
    )  # fmt: skip
    result = container_of(request).numbers.update_trunk(actor(caller), cmd, idempotency_key)
    return _written(response, result)


@router.delete("/trunks/{trunk_id}", status_code=204,
               responses=errors(*_TRUNK, "trunk_in_use"))  # fmt: skip
def delete_trunk(
    request: Request, caller: CallerDep, trunk_id: UUID, if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:  # fmt: skip
    cmd = DeleteTrunk(trunk_id=trunk_id, expected_version=expected_version(if_match))
    result = container_of(request).numbers.delete_trunk(actor(caller), cmd, idempotency_key)
    response = Response(status_code=204)
    write_headers(response, result)
    return response
