"""``/api/webhooks``: endpoints (event-sourced through the WebhooksApplication), their
deliveries and attempts (the Postgres queue), test sends and replays."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
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
    replayed_header,
    write_headers,
)
from adapters.api.errors import ApiError
from adapters.api.openapi import errors
from adapters.api.reads import read_at_least
from adapters.api.webhook_schemas import (
    DeliveryDetail,
    DeliveryPage,
    DeliveryPublic,
    DeliveryQueued,
    DeliveryStatus,
    EndpointCreate,
    EndpointCreated,
    EndpointPage,
    EndpointPatch,
    EndpointPublic,
    QueueStats,
    ReplayBody,
    ReplayResult,
    RotateBody,
    SecretRotated,
    TestBody,
)
from adapters.net.guard import TargetRefused, check_url
from adapters.postgres.idempotency import answer_once
from adapters.webhooks import deliveries
from adapters.webhooks.queue import enqueue_one
from adapters.webhooks.service import target_policy
from commands.idempotency import RequestKey
from commands.webhooks import (
    CreateEndpoint,
    DeleteEndpoint,
    Result,
    RotateSecret,
    UpdateEndpoint,
)
from domain.catalogue import TEST_EVENT_TYPE
from domain.contract import iso_ms
from domain.webhooks import EndpointSpec, WebhookEndpoint
from projections import webhooks as endpoint_queries

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
_CHANGE = ("webhook_endpoint_not_found", "concurrent_modification")
_DELIVERY = ("webhook_endpoint_not_found", "webhook_delivery_not_found")


def _now() -> datetime:
    return datetime.now(UTC)


def _checked_target(request: Request, url: str | None) -> None:
    """Refuse at once what the delivery worker would refuse anyway (it checks again at connect
    time, after DNS)."""
    if url is None:
        return
    try:
        check_url(url, target_policy(container_of(request).settings))
    except TargetRefused as exc:
        raise ApiError(422, "webhook_target_refused", str(exc)) from None


def _public(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        **endpoint.state, "id": endpoint.id, "version": endpoint.version,
        "created_at": endpoint.created_on, "updated_at": endpoint.modified_on,
    }  # fmt: skip


def _owned(request: Request, caller: Any, endpoint_id: UUID) -> WebhookEndpoint:
    return container_of(request).webhooks.get_endpoint(actor(caller), endpoint_id)


# -- endpoints ----------------------------------------------------------------------------
@router.post(
    "",
    status_code=201,
    response_model=EndpointCreated,
    responses=errors("webhook_target_refused", "invalid_config"),
)
def create_endpoint(
    request: Request, response: Response, caller: CallerDep, body: EndpointCreate,
    idempotency_key: IdempotencyKey = None,
) -> EndpointCreated:  # fmt: skip
    _checked_target(request, body.url)
    spec = EndpointSpec.model_validate(body.model_dump(exclude={"secret"}))
    cmd = CreateEndpoint(spec=spec, secret=body.secret)
    result = container_of(request).webhooks.create_endpoint(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    response.headers["Location"] = f"/api/webhooks/{result.id}"
    assert result.endpoint is not None and result.secret is not None
    return EndpointCreated(**_public(result.endpoint), secret=result.secret)


@router.get("", response_model=EndpointPage)
def list_endpoints(
    request: Request, caller: CallerDep, limit: Limit = 50, offset: Offset = 0
) -> EndpointPage:
    with container_of(request).pool.connection() as conn:
        rows, total = endpoint_queries.list_endpoints(conn, caller.space_id, limit, offset)
    items = [EndpointPublic(**row) for row in rows]
    return EndpointPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/stats", response_model=QueueStats)
def space_stats(request: Request, caller: CallerDep) -> QueueStats:
    """Queue depth and delivery lag over every endpoint of your space."""
    with container_of(request).pool.connection() as conn:
        return QueueStats(**deliveries.queue_stats(conn, caller.space_id, _now()))


@router.get(
    "/{endpoint_id}", response_model=EndpointPublic, responses=errors("webhook_endpoint_not_found")
)
async def get_endpoint(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    min_version: MinVersion = None, min_version_header: MinVersionHeader = None,
) -> EndpointPublic:  # fmt: skip
    wanted = max(min_version or 0, min_version_header or 0)
    row = await read_at_least(
        request, caller.space_id,
        lambda conn: endpoint_queries.get_endpoint(conn, caller.space_id, endpoint_id),
        wanted, f"webhook endpoint {endpoint_id}",
    )  # fmt: skip
    if row is None or row["deleted"]:
        raise ApiError(404, "webhook_endpoint_not_found", f"No webhook endpoint {endpoint_id}.")
    response.headers["ETag"] = f'"{row["version"]}"'
    return EndpointPublic(**row)


def _written(response: Response, result: Result) -> EndpointPublic:
    write_headers(response, result)
    assert result.endpoint is not None
    return EndpointPublic(**_public(result.endpoint))


@router.patch(
    "/{endpoint_id}",
    response_model=EndpointPublic,
    responses=errors(*_CHANGE, "webhook_target_refused", "invalid_config"),
)
def update_endpoint(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    body: EndpointPatch, if_match: IfMatch = None, idempotency_key: IdempotencyKey = None,
) -> EndpointPublic:  # fmt: skip
    patch = body.model_dump(exclude_unset=True)
    if any(v is None for v in patch.values()):
        raise ApiError(422, "invalid_config", "A webhook endpoint field cannot be set to null.")
    _checked_target(request, patch.get("url"))
    cmd = UpdateEndpoint(
        endpoint_id=endpoint_id, patch=patch, expected_version=expected_version(if_match)
    )
    app = container_of(request).webhooks
    return _written(response, app.update_endpoint(actor(caller), cmd, idempotency_key))


@router.delete("/{endpoint_id}", status_code=204, responses=errors(*_CHANGE))
def delete_endpoint(
    request: Request, caller: CallerDep, endpoint_id: UUID, if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:  # fmt: skip
    cmd = DeleteEndpoint(endpoint_id=endpoint_id, expected_version=expected_version(if_match))
    app = container_of(request).webhooks
    result = app.delete_endpoint(actor(caller), cmd, idempotency_key)
    response = Response(status_code=204)
    write_headers(response, result)
    return response


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=SecretRotated,
    responses=errors(*_CHANGE, "invalid_config"),
)
def rotate_secret(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    body: RotateBody | None = None, idempotency_key: IdempotencyKey = None,
) -> SecretRotated:  # fmt: skip
    body = body or RotateBody()
    cmd = RotateSecret(
        endpoint_id=endpoint_id, overlap_seconds=body.overlap_seconds, secret=body.secret
    )
    app = container_of(request).webhooks
    result = app.rotate_secret(actor(caller), cmd, idempotency_key)
    write_headers(response, result)
    endpoint = result.endpoint
    assert endpoint is not None and result.secret is not None
    rotated: WebhookEndpoint = app.repository.get(endpoint.id, version=result.version)
    expires = _rotation_expiry(app, endpoint.id, result.version)
    return SecretRotated(id=endpoint.id, secret=result.secret,
                         secret_version=rotated.secret_version,
                         previous_secret_expires_at=expires, version=result.version)  # fmt: skip


def _rotation_expiry(app: Any, endpoint_id: UUID, version: int) -> datetime:
    event = list(app.events.get(endpoint_id, gt=version - 1, lte=version))[0]
    return event.previous_secret_expires_at


# -- deliveries ---------------------------------------------------------------------------
@router.post(
    "/{endpoint_id}/test",
    status_code=202,
    response_model=DeliveryQueued,
    responses=errors("webhook_endpoint_not_found"),
)
def send_test(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    body: TestBody | None = None, idempotency_key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    """Queue a `webhook.test` event to this endpoint, whatever it subscribes to."""

    def queue(conn: Any) -> dict[str, Any]:
        endpoint = _owned(request, caller, endpoint_id)
        now = _now()
        event_id = str(uuid.uuid4())
        envelope = {
            "event_id": event_id, "type": TEST_EVENT_TYPE, "schema_version": 1,
            "space_id": caller.space_id, "aggregate_id": str(endpoint.id),
            "aggregate_version": endpoint.version, "position": None, "occurred_at": iso_ms(now),
            "data": {"message": (body or TestBody()).message, "endpoint_url": endpoint.spec.url},
        }  # fmt: skip
        delivery = enqueue_one(conn, endpoint.id, envelope, now)
        return DeliveryQueued(delivery_id=delivery, event_id=event_id).model_dump(mode="json")

    return _once(request, response, caller, idempotency_key, "send_test_event", queue)


def _once(
    request: Request, response: Response, caller: Any, key: RequestKey | None, command: str,
    work: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The answer of a route that writes no event: ``work``'s, or a replayed key's first
    (whatever became of the endpoint since, as for the routes that write events)."""
    container = container_of(request)
    _ = container.webhooks  # built: its recorder creates the keys table in a new database
    with container.pool.connection() as conn:
        answer, replayed = answer_once(conn, caller.space_id, key, command, work)
    replayed_header(response, replayed)
    return answer


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=DeliveryPage,
    responses=errors("webhook_endpoint_not_found"),
)
def list_deliveries(
    request: Request, caller: CallerDep, endpoint_id: UUID, limit: Limit = 50,
    offset: Offset = 0, status: DeliveryStatus | None = None,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
) -> DeliveryPage:  # fmt: skip
    _owned(request, caller, endpoint_id)
    with container_of(request).pool.connection() as conn:
        rows, total = deliveries.list_deliveries(
            conn, caller.space_id, endpoint_id, status=status, event_type=event_type,
            limit=limit, offset=offset,
        )  # fmt: skip
    items = [DeliveryPublic(**_delivery(row)) for row in rows]
    return DeliveryPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    responses=errors(*_DELIVERY),
)
def get_delivery(
    request: Request, caller: CallerDep, endpoint_id: UUID, delivery_id: UUID
) -> DeliveryDetail:
    _owned(request, caller, endpoint_id)
    with container_of(request).pool.connection() as conn:
        row = deliveries.get_delivery(conn, caller.space_id, endpoint_id, delivery_id)
    if row is None:
        raise ApiError(404, "webhook_delivery_not_found", f"No delivery {delivery_id} here.")
    row["payload"] = json.loads(row["payload"])
    return DeliveryDetail(**_delivery(row))


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/replay", status_code=202,
    response_model=DeliveryQueued,
    responses=errors(*_DELIVERY, "webhook_delivery_pending"),
)  # fmt: skip
def replay_delivery(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    delivery_id: UUID, idempotency_key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    """Send a delivery again (same `webhook-id`), with a fresh retry schedule."""

    def replay(conn: Any) -> dict[str, Any]:
        _owned(request, caller, endpoint_id)
        row = deliveries.get_delivery(conn, caller.space_id, endpoint_id, delivery_id)
        if row is None:
            raise ApiError(404, "webhook_delivery_not_found", f"No delivery {delivery_id} here.")
        if not deliveries.replay_delivery(conn, caller.space_id, endpoint_id, delivery_id, _now()):
            raise ApiError(
                409,
                "webhook_delivery_pending",
                "This delivery is still pending: it will be attempted anyway.",
            )
        queued = DeliveryQueued(delivery_id=delivery_id, event_id=row["event_id"])
        return queued.model_dump(mode="json")

    return _once(request, response, caller, idempotency_key, "replay_delivery", replay)


@router.post(
    "/{endpoint_id}/replay",
    status_code=202,
    response_model=ReplayResult,
    responses=errors("webhook_endpoint_not_found"),
)
def replay_failed(
    request: Request, response: Response, caller: CallerDep, endpoint_id: UUID,
    body: ReplayBody, idempotency_key: IdempotencyKey = None,
) -> Any:  # fmt: skip
    """Send again every delivery of this endpoint that failed for good since `since`."""

    def replay(conn: Any) -> dict[str, Any]:
        _owned(request, caller, endpoint_id)
        n = deliveries.replay_failed(conn, caller.space_id, endpoint_id, body.since, _now())
        return ReplayResult(replayed=n).model_dump(mode="json")

    return _once(request, response, caller, idempotency_key, "replay_failed_deliveries", replay)


@router.get(
    "/{endpoint_id}/stats",
    response_model=QueueStats,
    responses=errors("webhook_endpoint_not_found"),
)
def endpoint_stats(request: Request, caller: CallerDep, endpoint_id: UUID) -> QueueStats:
    _owned(request, caller, endpoint_id)
    with container_of(request).pool.connection() as conn:
        return QueueStats(**deliveries.queue_stats(conn, caller.space_id, _now(), endpoint_id))


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    if row["status"] != "pending":
        row = {**row, "next_attempt_at": None}
    return row
