"""The webhooks write side on in-memory persistence: secrets, idempotency, ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from commands.agents import Actor, VersionMismatch
from commands.idempotency import IdempotencyKeyReused
from commands.webhooks import (
    CreateEndpoint,
    DeleteEndpoint,
    EndpointNotFound,
    RotateSecret,
    UpdateEndpoint,
    WebhooksApplication,
    check_secret,
)
from domain.webhooks import EndpointSpec

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
ALICE = Actor(space_id="space-a", subject="alice")
MALLORY = Actor(space_id="space-m", subject="mallory")


@pytest.fixture
def app():
    application = WebhooksApplication(
        env={"PERSISTENCE_MODULE": "tests.fakes.recorder"}, now=lambda: NOW
    )
    yield application
    application.close()


def create(app, key=None, **spec):
    cmd = CreateEndpoint(spec=EndpointSpec(url="https://hooks.example.com/a", **spec))
    return app.create_endpoint(ALICE, cmd, key)


def test_create_generates_a_secret_that_only_the_result_carries(app):
    result = create(app)
    assert check_secret(result.secret) == result.secret
    assert result.endpoint.secret_version == 1
    again = app.update_endpoint(
        ALICE, UpdateEndpoint(endpoint_id=result.id, patch={"description": "d"})
    )
    assert again.secret is None


def test_a_replayed_key_returns_the_first_endpoint_and_secret(app):
    first = create(app, key="k-1")
    second = create(app, key="k-1")
    assert second.replayed and (second.id, second.secret) == (first.id, first.secret)
    with pytest.raises(IdempotencyKeyReused):
        create(app, key="k-1", description="another request")


def test_rotation_gives_a_new_secret_and_caps_the_old_one(app):
    made = create(app)
    rotated = app.rotate_secret(ALICE, RotateSecret(endpoint_id=made.id, overlap_seconds=600))
    assert rotated.secret != made.secret and rotated.endpoint.secret_version == 2
    event = list(app.events.get(made.id))[-1]
    assert event.previous_secret_expires_at == NOW + timedelta(seconds=600)
    own = "whsec_" + "A" * 44
    mine = app.rotate_secret(ALICE, RotateSecret(endpoint_id=made.id, secret=own))
    assert mine.secret == own and mine.endpoint.secret_version == 3


def test_another_space_cannot_see_or_change_an_endpoint(app):
    made = create(app)
    with pytest.raises(EndpointNotFound):
        app.get_endpoint(MALLORY, made.id)
    with pytest.raises(EndpointNotFound):
        app.update_endpoint(MALLORY, UpdateEndpoint(endpoint_id=made.id, patch={"enabled": False}))
    with pytest.raises(EndpointNotFound):
        app.rotate_secret(MALLORY, RotateSecret(endpoint_id=made.id))
    with pytest.raises(EndpointNotFound):
        app.delete_endpoint(MALLORY, DeleteEndpoint(endpoint_id=made.id))
    with pytest.raises(EndpointNotFound):
        app.get_endpoint(ALICE, uuid4())


def test_if_match_guards_changes_and_deleted_endpoints_are_gone(app):
    made = create(app)
    with pytest.raises(VersionMismatch):
        app.delete_endpoint(ALICE, DeleteEndpoint(endpoint_id=made.id, expected_version=7))
    app.delete_endpoint(ALICE, DeleteEndpoint(endpoint_id=made.id, expected_version=1))
    with pytest.raises(EndpointNotFound):
        app.get_endpoint(ALICE, made.id)
