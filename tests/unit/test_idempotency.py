"""Idempotency keys on the command layer (in-memory persistence): one key space per space across
applications, requests told apart by their fingerprint, concurrent uses writing once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from adapters.api.common import request_fingerprint
from adapters.api.sessions import default_turn_id
from commands.agents import Actor, AgentsApplication, CreateAgent
from commands.idempotency import IdempotencyKeyReused, RequestKey
from commands.webhooks import CreateEndpoint, WebhooksApplication
from domain.agent_config import AgentConfig
from domain.webhooks import EndpointSpec

pytestmark = pytest.mark.unit

ALICE = Actor(space_id="space-a", subject="alice")
BOB = Actor(space_id="space-b", subject="bob")


@pytest.fixture
def apps() -> Any:
    env = {"PERSISTENCE_MODULE": "tests.fakes.recorder", "IDEMPOTENCY_KEYS": uuid.uuid4().hex}
    agents, webhooks = AgentsApplication(env=env), WebhooksApplication(env=env)
    yield agents, webhooks
    agents.close()
    webhooks.close()


def agent(name: str = "Support") -> CreateAgent:
    return CreateAgent(config=AgentConfig(name=name))


def endpoint() -> CreateEndpoint:
    return CreateEndpoint(spec=EndpointSpec(url="https://hooks.example.com/a"))


def events(app: Any) -> list[Any]:
    return list(app.recorder.select_notifications(start=1, limit=1000))


def test_a_key_used_by_one_application_is_refused_by_another(apps):
    agents, webhooks = apps
    agents.create_agent(ALICE, agent(), "k1")
    with pytest.raises(IdempotencyKeyReused):
        webhooks.create_endpoint(ALICE, endpoint(), "k1")
    assert events(webhooks) == []


def test_the_key_space_is_the_space(apps):
    agents, webhooks = apps
    agents.create_agent(ALICE, agent(), "k1")
    made = webhooks.create_endpoint(BOB, endpoint(), "k1")
    assert not made.replayed and len(events(webhooks)) == 1


def test_a_request_key_is_matched_by_the_request_not_the_command(apps):
    agents, _ = apps
    first = agents.create_agent(ALICE, agent(), RequestKey("k1", "request-1"))
    again = agents.create_agent(ALICE, agent(), RequestKey("k1", "request-1"))
    assert again.replayed and again.id == first.id
    # the same command sent by another request (another route) is another request
    with pytest.raises(IdempotencyKeyReused):
        agents.create_agent(ALICE, agent(), RequestKey("k1", "request-2"))
    assert len(events(agents)) == 1


def test_concurrent_commands_with_one_key_write_once_and_answer_alike(apps):
    agents, _ = apps
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = agents.create_agent(ALICE, agent(), "racing")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({(r.id, r.version, r.position) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(events(agents)) == 1


def test_a_request_fingerprint_is_its_route_if_match_and_body_by_value():
    same = request_fingerprint("POST", "/api/agents", "", None, b'{"a": 1, "b": [1, 2]}')
    assert same == request_fingerprint("POST", "/api/agents", "", None, b'{"b":[1,2],"a":1}')
    others = [
        request_fingerprint("POST", "/api/webhooks", "", None, b'{"a": 1, "b": [1, 2]}'),
        request_fingerprint("PATCH", "/api/agents", "", None, b'{"a": 1, "b": [1, 2]}'),
        request_fingerprint("POST", "/api/agents", "x=1", None, b'{"a": 1, "b": [1, 2]}'),
        request_fingerprint("POST", "/api/agents", "", '"3"', b'{"a": 1, "b": [1, 2]}'),
        request_fingerprint("POST", "/api/agents", "", None, b'{"a": 2, "b": [1, 2]}'),
        request_fingerprint("POST", "/api/agents", "", None, b"not json"),
        request_fingerprint("POST", "/api/agents", "", None, b""),
    ]
    assert len({same, *others}) == 1 + len(others)


def test_a_turn_without_id_is_named_by_its_key_or_fresh_without_one():
    class Caller:
        space_id = "space-a"

    key = RequestKey("k1", "fp")
    assert default_turn_id(Caller(), key) == default_turn_id(Caller(), RequestKey("k1", "other"))
    assert default_turn_id(Caller(), key) != default_turn_id(Caller(), RequestKey("k2", "fp"))
    assert default_turn_id(Caller(), None) != default_turn_id(Caller(), None)
