"""What our VoxEngine scenario asks the API, on the real stack: the dialed number finds its
agent and opens the call with its bridge stream; unknown, unassigned and released numbers are
refused politely; the route token of the number's own account is the only way in; statuses
become ``call.provider_status`` signals on the provider ingress topic."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from adapters.telephony import tokens
from adapters.telephony.voximplant import route_token
from commands.agents import Actor
from commands.numbers import (
    AssignNumber,
    ConnectAccount,
    ProvisionNumber,
    ReleaseNumber,
    UnassignNumber,
)
from commands.telephony import ProviderCredentials
from tests.support.fake_voximplant import key_pair

pytestmark = pytest.mark.integration


def new_number() -> str:
    return f"+1212{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"  # one of 8 million


class Space:
    """A space with an agent, a VoxImplant account and one number assigned to the agent."""

    def __init__(self, client, issuer, container, account_id: str | None = None) -> None:
        self.id = f"vox-{uuid.uuid4().hex[:8]}"
        self.headers = issuer.headers(self.id)
        self.container = container
        self.actor = Actor(space_id=self.id, subject="test")
        resp = client.post("/api/agents", json={"name": "Vox desk"}, headers=self.headers)
        assert resp.status_code == 201, resp.text
        self.agent_id = resp.json()["id"]
        self.account_id = account_id or str(uuid.uuid4().int % 10**8)
        private, _public = key_pair()
        secrets = {"key_id": f"key-{uuid.uuid4().hex[:6]}", "private_key": private}
        container.numbers.connect_account(self.actor, ConnectAccount(
            provider="voximplant", account_id=self.account_id, secrets=secrets))  # fmt: skip
        self.creds = ProviderCredentials("voximplant", self.account_id, secrets)
        self.number = new_number()
        self.number_id = self.provision(self.number, assign=True)

    def provision(self, e164: str, assign: bool) -> uuid.UUID:
        cmd = ProvisionNumber(e164=e164, provider="voximplant", provider_id=uuid.uuid4().hex[:8])
        result = self.container.numbers.provision_number(self.actor, cmd)
        if assign:
            self.container.numbers.assign_number(
                self.actor, AssignNumber(number_id=result.id, agent_id=self.agent_id)
            )
        return result.id

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {route_token(self.creds)}"}

    def inbound(self, number: str | None = None, caller: str = "+447911123456") -> dict:
        return {"called_number": (number or self.number).lstrip("+"),
                "caller_number": caller.lstrip("+"), "session_id": uuid.uuid4().hex,
                "account_id": self.account_id}  # fmt: skip


@pytest.fixture
def space(client, issuer, api_container):
    return Space(client, issuer, api_container)


def test_a_dialed_number_routes_to_its_agent_and_opens_the_call(client, space, api_container):
    body = space.inbound()
    resp = client.post("/api/voximplant/route", json=body, headers=space.auth())
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["action"] == "connect"
    assert urlsplit(answer["stream_url"]).path == "/streams/voximplant"
    secret = api_container.settings.telephony.stream_secret.get_secret_value()
    grant = tokens.verify(answer["parameters"]["token"], secret, "voximplant")
    assert grant.call_id == answer["call_id"] == answer["parameters"]["call_id"]
    assert grant.agent_id == space.agent_id and grant.space_id == space.id
    call = api_container.calls.find_call(space.actor, uuid.UUID(answer["call_id"]))
    assert (call.channel, call.direction) == ("voximplant", "inbound")
    assert (call.to_number, call.from_number) == (space.number, "+447911123456")
    # VoxImplant retrying the same session gets the same call
    again = client.post("/api/voximplant/route", json=body, headers=space.auth())
    assert again.json()["call_id"] == answer["call_id"]


def test_unknown_unassigned_and_released_numbers_are_refused_politely(client, space):
    unknown = client.post("/api/voximplant/route", json=space.inbound(new_number()),
                          headers=space.auth())  # fmt: skip
    assert unknown.status_code == 200
    assert unknown.json()["action"] == "refuse" and unknown.json()["reason"] == "unknown_number"
    assert unknown.json()["message"]

    idle = new_number()
    space.provision(idle, assign=False)
    unassigned = client.post("/api/voximplant/route", json=space.inbound(idle),
                             headers=space.auth())  # fmt: skip
    assert unassigned.json()["reason"] == "number_unassigned"

    numbers = space.container.numbers
    numbers.unassign_number(space.actor, UnassignNumber(number_id=space.number_id))
    numbers.release_number(space.actor, ReleaseNumber(number_id=space.number_id))
    released = client.post("/api/voximplant/route", json=space.inbound(), headers=space.auth())
    assert released.json()["reason"] == "unknown_number"

    garbage = client.post("/api/voximplant/route", json=space.inbound("not-a-number"),
                          headers=space.auth())  # fmt: skip
    assert garbage.status_code == 200 and garbage.json()["reason"] == "unknown_number"


def test_only_the_route_token_of_the_numbers_own_account_gets_in(
    client, issuer, space, api_container
):
    other = Space(client, issuer, api_container)
    # no token, a wrong one, another space's token: refused, nothing opened
    for headers in ({}, {"Authorization": "Bearer nope"}, other.auth()):
        resp = client.post("/api/voximplant/route", json=space.inbound(), headers=headers)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "invalid_voximplant_token"
    # the right token naming another account
    body = space.inbound() | {"account_id": other.account_id}
    resp = client.post("/api/voximplant/route", json=body, headers=space.auth())
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "wrong_voximplant_account"
    # an outbound route for another space's call is refused
    opened = client.post("/api/voximplant/route", json=other.inbound(), headers=other.auth())
    theirs = opened.json()["call_id"]
    body = {"called_number": "447700900123", "caller_number": space.number.lstrip("+"),
            "session_id": "s-1", "account_id": space.account_id, "call_id": theirs}  # fmt: skip
    resp = client.post("/api/voximplant/route", json=body, headers=space.auth())
    assert resp.json()["action"] == "refuse" and resp.json()["reason"] == "unknown_call"
    # and the route token shows only your own account
    mine = client.get("/api/voximplant/route-token", headers=space.headers).json()
    assert mine == {"account_id": space.account_id, "route_token": route_token(space.creds)}
    nobody = client.get("/api/voximplant/route-token", headers=issuer.headers("vox-none"))
    assert nobody.status_code == 404
    assert nobody.json()["error"]["code"] == "voximplant_not_connected"


def test_an_outbound_call_gets_its_stream_when_answered(client, space, api_container):
    opened = client.post("/api/telephony/streams", headers=space.headers, json={
        "agent_id": space.agent_id, "channel": "voximplant", "direction": "outbound",
        "from_number": space.number, "to_number": "+447700900123"})  # fmt: skip
    assert opened.status_code == 201, opened.text
    call_id = opened.json()["call_id"]
    body = {"called_number": "447700900123", "caller_number": space.number.lstrip("+"),
            "session_id": "out-1", "account_id": space.account_id, "call_id": call_id}  # fmt: skip
    resp = client.post("/api/voximplant/route", json=body, headers=space.auth())
    answer = resp.json()
    assert answer["action"] == "connect" and answer["call_id"] == call_id
    secret = api_container.settings.telephony.stream_secret.get_secret_value()
    assert tokens.verify(answer["parameters"]["token"], secret, "voximplant").call_id == call_id


def provider_signals(settings, call_id: str) -> list[dict]:
    topic = f"{settings.topic_prefix}.ingress.provider.v1"
    consumer = Consumer({
        "bootstrap.servers": settings.kafka.bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    })  # fmt: skip
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not found:
            msg = consumer.poll(0.5)
            while msg is not None:
                if not msg.error() and msg.key() == call_id.encode():
                    found.append(json.loads(msg.value()))
                msg = consumer.poll(0.2)
        return found
    finally:
        consumer.close()


def test_statuses_become_provider_status_signals_of_the_numbers_space(
    client, issuer, space, api_container
):
    opened = client.post("/api/voximplant/route", json=space.inbound(), headers=space.auth())
    call_id = opened.json()["call_id"]
    access = "https://10.0.0.1:12092/request/AF307C280E30CCA6.1580999958.1204800/90ABEE0D64"
    report = {"call_id": call_id, "number": space.number.lstrip("+"),
              "account_id": space.account_id, "provider_call_id": access,
              "status": "in-progress", "answered_by": "human"}  # fmt: skip
    resp = client.post("/api/voximplant/status", json=report, headers=space.auth())
    assert resp.status_code == 200, resp.text
    assert resp.json()["signal_id"] == f"voximplant:{access}:in-progress"
    (signal,) = provider_signals(api_container.settings, call_id)
    assert signal["type"] == "call.provider_status" and signal["source"] == "provider"
    assert (signal["space_id"], signal["provider"], signal["status"]) == (
        space.id, "voximplant", "in-progress")  # fmt: skip
    assert signal["provider_call_id"] == access and signal["answered_by"] == "human"

    other = Space(client, issuer, api_container)
    # another space's call through my number, or my call with their token: refused
    theirs = client.post("/api/voximplant/route", json=other.inbound(), headers=other.auth())
    mine_for_theirs = report | {"call_id": theirs.json()["call_id"]}
    resp = client.post("/api/voximplant/status", json=mine_for_theirs, headers=space.auth())
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "session_not_found"
    resp = client.post("/api/voximplant/status", json=report, headers=other.auth())
    assert resp.status_code == 403
    resp = client.post("/api/voximplant/status", json=report | {"number": new_number()},
                       headers=space.auth())  # fmt: skip
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_number"
    resp = client.post("/api/voximplant/status", json=report | {"status": "exploded"},
                       headers=space.auth())  # fmt: skip
    assert resp.status_code == 422
