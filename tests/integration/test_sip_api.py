"""What our SIP service (``sipd``) asks the API, on the real stack: an INVITE finds its number's
agent through the number's trunk, which lets it in by source address and/or digest; what
cannot come in is refused with a SIP status and a reason; statuses become
``call.provider_status`` signals and a REFER's outcome completes the transfer. Outbound, the
API places SIP calls through ``sipd``'s control API (a local stand-in, ``FakeSipd``, at the
network boundary) with the caller-id number's trunk and the call's bridge stream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from adapters.telephony import tokens
from adapters.telephony.sip import SipVoiceProvider
from adapters.telephony.sip_auth import md5
from commands.agents import Actor
from commands.call_commands import RequestTransfer, StartCall
from commands.numbers import (
    AssignNumber,
    CreateTrunk,
    ProvisionNumber,
    ReleaseNumber,
    UnassignNumber,
)
from domain.sip_trunks import TrunkSpec
from tests.integration.test_voximplant_api import provider_signals
from tests.support.fake_sipd import FakeSipd
from tests.support.processes import eventually

pytestmark = pytest.mark.integration
CARRIER = "sip.carrier.example:5060"


def new_number() -> str:
    return f"+1646{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"  # one of 8 million


class Space:
    """A space with an agent and a SIP trunk; ``number`` arrives through the trunk."""

    def __init__(self, client, issuer, container, *, addresses: list[str] | None = None,
                 username: str | None = None, outbound: bool = True) -> None:  # fmt: skip
        self.id = f"sip-{uuid.uuid4().hex[:8]}"
        self.headers = issuer.headers(self.id)
        self.container = container
        self.actor = Actor(space_id=self.id, subject="test")
        resp = client.post("/api/agents", json={"name": "SIP desk"}, headers=self.headers)
        assert resp.status_code == 201, resp.text
        self.agent_id = resp.json()["id"]
        self.username, self.password = username, f"pw-{uuid.uuid4().hex}"
        self.out_user, self.out_password = f"out-{uuid.uuid4().hex[:6]}", "carrier-pass-123"
        inbound: dict[str, Any] = {"allowed_addresses": addresses or []}
        if username:
            inbound["username"] = username
        spec: dict[str, Any] = {"name": "Carrier", "inbound": inbound}
        if outbound:
            spec["outbound"] = {"address": CARRIER, "transport": "udp", "username": self.out_user}
        cmd = CreateTrunk(spec=TrunkSpec.model_validate(spec),
                          inbound_password=self.password if username else None,
                          outbound_password=self.out_password if outbound else None)  # fmt: skip
        self.trunk_id = container.numbers.create_trunk(self.actor, cmd).id
        self.number = new_number()
        self.number_id = self.provision(self.number, assign=True)

    def provision(self, e164: str, assign: bool, provider: str = "sip") -> uuid.UUID:
        trunk = self.trunk_id if provider == "sip" else None
        cmd = ProvisionNumber(e164=e164, provider=provider, trunk_id=trunk)  # type: ignore[arg-type]
        result = self.container.numbers.provision_number(self.actor, cmd)
        if assign:
            self.container.numbers.assign_number(
                self.actor, AssignNumber(number_id=result.id, agent_id=self.agent_id)
            )
        return result.id

    def invite(self, number: str | None = None, **changes: Any) -> dict[str, Any]:
        to = (number or self.number).lstrip("+")
        return {"sip_call_id": f"{uuid.uuid4().hex}@10.0.0.9", "to_user": to,
                "from_user": "+447911123456", "from_display": "Ada", "source_ip": "10.0.0.9",
                "source_port": 5060, "transport": "udp", "authorization": None,
                "method": "INVITE", "uri": f"sip:{to}@127.0.0.1:5070",
                "codecs": ["PCMU", "PCMA"]} | changes  # fmt: skip

    def digest(self, body: dict[str, Any], nonce: str, *, username: str | None = None,
               password: str | None = None, realm: str = "voxagent") -> str:  # fmt: skip
        """The Authorization a phone computes from a challenge (RFC 2617, qop=auth)."""
        user, secret = username or self.username, password or self.password
        ha1 = md5(f"{user}:{realm}:{secret}")
        ha2 = md5(f"INVITE:{body['uri']}")
        response = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
        return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", '
                f'uri="{body["uri"]}", response="{response}", algorithm=MD5, '
                f'cnonce="c0ffee", qop=auth, nc=00000001')  # fmt: skip


@pytest.fixture
def sipd_auth(api_container) -> dict[str, str]:
    secret = api_container.settings.telephony.sip_secret.get_secret_value()
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def fake(api_container) -> Iterator[FakeSipd]:
    """A local sipd control API the container's SIP provider talks to."""
    telephony = api_container.settings.telephony
    server = FakeSipd(telephony.sip_secret.get_secret_value()).start()
    providers = api_container.telephony_providers
    before = providers.voice_provider("sip")
    local = telephony.model_copy(update={"sipd_control_port": server.port})
    providers.register(SipVoiceProvider(local, lambda: api_container.numbers))
    yield server
    providers.register(before)
    server.stop()


def post(client, path: str, body: dict[str, Any], auth: dict[str, str]) -> Any:
    return client.post(f"/api/sip/{path}", json=body, headers=auth)


def test_every_route_needs_the_sip_secret(client, issuer, api_container):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    call = {"call_id": str(uuid.uuid4()), "sip_call_id": "x@y", "status": "ringing"}
    transfer = {"call_id": str(uuid.uuid4()), "outcome": "completed"}
    for headers in ({}, {"Authorization": "Bearer nope"}, space.headers):
        for path, body in (("invite", space.invite()), ("status", call), ("transfer", transfer)):
            resp = post(client, path, body, headers)
            assert resp.status_code == 401, (path, resp.text)
            assert resp.json()["error"]["code"] == "invalid_sip_secret"


def test_an_invite_from_the_trunks_addresses_connects_to_the_numbers_agent(
    client, issuer, api_container, sipd_auth
):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/24"])
    body = space.invite(codecs=["G722", "PCMA", "PCMU"])
    resp = post(client, "invite", body, sipd_auth)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["action"] == "connect" and answer["codec"] == "PCMA"
    assert urlsplit(answer["stream_url"]).path == "/streams/sip"
    secret = api_container.settings.telephony.stream_secret.get_secret_value()
    grant = tokens.verify(answer["token"], secret, "sip")
    assert grant.call_id == answer["call_id"] and grant.space_id == space.id
    assert grant.agent_id == space.agent_id
    call = api_container.calls.find_call(space.actor, uuid.UUID(answer["call_id"]))
    assert (call.channel, call.direction) == ("sip", "inbound")
    assert (call.to_number, call.from_number) == (space.number, "+447911123456")
    # sipd retrying the same INVITE (same Call-ID) gets the same call
    again = post(client, "invite", body, sipd_auth).json()
    assert again["action"] == "connect" and again["call_id"] == answer["call_id"]
    # a caller that is not a number keeps its name; the '+' of the number is optional
    named = post(client, "invite", space.invite(space.number, from_user="alice"), sipd_auth)
    opened = api_container.calls.find_call(space.actor, uuid.UUID(named.json()["call_id"]))
    assert opened.from_number == "alice" and opened.id != call.id


def test_a_digest_trunk_challenges_then_connects_with_the_right_password_only(
    client, issuer, api_container, sipd_auth
):
    space = Space(client, issuer, api_container, username="pbx-" + uuid.uuid4().hex[:6])
    body = space.invite()
    first = post(client, "invite", body, sipd_auth).json()
    assert first["action"] == "challenge" and first["realm"] == "voxagent" and first["nonce"]
    wrong = body | {"authorization": space.digest(body, first["nonce"], password="guessed!")}
    refused = post(client, "invite", wrong, sipd_auth).json()
    assert refused == {"action": "refuse", "status": 403, "reason": "digest_invalid"}
    right = body | {"authorization": space.digest(body, first["nonce"])}
    answer = post(client, "invite", right, sipd_auth).json()
    assert answer["action"] == "connect", answer
    # the nonce was issued for that Call-ID: with another, the same header is challenged anew
    other = right | {"sip_call_id": "another@10.0.0.9"}
    assert post(client, "invite", other, sipd_auth).json()["action"] == "challenge"


def test_an_invite_from_outside_the_trunks_addresses_is_refused(
    client, issuer, api_container, sipd_auth
):
    space = Space(client, issuer, api_container, addresses=["192.0.2.0/24"],
                  username="pbx-" + uuid.uuid4().hex[:6])  # fmt: skip
    body = space.invite(source_ip="198.51.100.7")
    answer = post(client, "invite", body, sipd_auth).json()
    assert answer == {"action": "refuse", "status": 403, "reason": "address_not_allowed"}
    inside = space.invite(source_ip="192.0.2.10")
    assert post(client, "invite", inside, sipd_auth).json()["action"] == "challenge"


def test_unknown_unassigned_released_and_other_providers_numbers_are_refused(
    client, issuer, api_container, sipd_auth
):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])

    def refusal(body: dict[str, Any]) -> tuple[int, str]:
        answer = post(client, "invite", body, sipd_auth).json()
        assert answer["action"] == "refuse", answer
        return answer["status"], answer["reason"]

    assert refusal(space.invite(new_number())) == (404, "unknown_number")
    assert refusal(space.invite("not-a-number")) == (404, "unknown_number")
    idle = new_number()
    space.provision(idle, assign=False)
    assert refusal(space.invite(idle)) == (480, "number_unassigned")
    vox = new_number()
    space.provision(vox, assign=True, provider="voximplant")
    assert refusal(space.invite(vox)) == (404, "unknown_number")
    assert refusal(space.invite(codecs=["G729"])) == (488, "codec_unsupported")
    resp = client.delete(f"/api/agents/{space.agent_id}", headers=space.headers)
    assert resp.status_code == 204, resp.text
    assert refusal(space.invite()) == (480, "agent_unavailable")
    numbers = space.container.numbers
    numbers.unassign_number(space.actor, UnassignNumber(number_id=space.number_id))
    numbers.release_number(space.actor, ReleaseNumber(number_id=space.number_id))
    assert refusal(space.invite()) == (404, "unknown_number")


def test_a_trunk_with_no_inbound_checks_takes_no_calls(client, issuer, api_container, sipd_auth):
    space = Space(client, issuer, api_container)  # outbound only
    answer = post(client, "invite", space.invite(), sipd_auth).json()
    assert answer == {"action": "refuse", "status": 403, "reason": "trunk_unauthenticated"}


def test_another_spaces_trunk_never_reaches_a_number(client, issuer, api_container, sipd_auth):
    """Space B's trunk (its addresses, its digest user) cannot call space A's numbers: an
    INVITE is checked against the dialed number's own trunk only."""
    a = Space(client, issuer, api_container, addresses=["192.0.2.0/24"])
    b = Space(client, issuer, api_container, addresses=["10.20.0.0/16"],
              username="b-" + uuid.uuid4().hex[:6])  # fmt: skip
    from_b = a.invite(source_ip="10.20.1.1")
    assert post(client, "invite", from_b, sipd_auth).json()["reason"] == "address_not_allowed"
    # A with a digest user too: B's credentials, even on a nonce A's trunk issued, are refused
    a2 = Space(client, issuer, api_container, username="a-" + uuid.uuid4().hex[:6])
    body = a2.invite(source_ip="10.20.1.1")
    nonce = post(client, "invite", body, sipd_auth).json()["nonce"]
    with_b = body | {"authorization": b.digest(body, nonce)}
    assert post(client, "invite", with_b, sipd_auth).json() == {
        "action": "refuse", "status": 403, "reason": "digest_invalid"}  # fmt: skip
    # B's own nonce (another trunk) is no way in either
    b_body = b.invite(source_ip="10.20.1.1")
    b_nonce = post(client, "invite", b_body, sipd_auth).json()["nonce"]
    crossed = body | {"authorization": a2.digest(body, b_nonce)}
    assert post(client, "invite", crossed, sipd_auth).json()["action"] == "challenge"


def test_statuses_become_provider_status_signals(client, issuer, api_container, sipd_auth):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    body = space.invite()
    call_id = post(client, "invite", body, sipd_auth).json()["call_id"]
    report = {"call_id": call_id, "sip_call_id": body["sip_call_id"], "status": "in-progress",
              "sip_code": 200, "reason": None}  # fmt: skip
    resp = post(client, "status", report, sipd_auth)
    assert resp.status_code == 200, resp.text
    assert resp.json()["signal_id"] == f"sip:{body['sip_call_id']}:in-progress"
    (signal,) = provider_signals(api_container.settings, call_id)
    assert signal["type"] == "call.provider_status" and signal["space_id"] == space.id
    assert (signal["provider"], signal["provider_call_id"], signal["status"]) == (
        "sip", body["sip_call_id"], "in-progress")  # fmt: skip
    assert signal["sip_code"] == 200

    unknown = post(client, "status", report | {"call_id": str(uuid.uuid4())}, sipd_auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "session_not_found"
    vox = client.post("/api/telephony/streams", headers=space.headers, json={
        "agent_id": space.agent_id, "channel": "voximplant", "direction": "outbound",
        "from_number": space.number, "to_number": "+447700900123"})  # fmt: skip
    assert vox.status_code == 201, vox.text
    other = post(client, "status", report | {"call_id": vox.json()["call_id"]}, sipd_auth)
    assert other.status_code == 409 and other.json()["error"]["code"] == "not_a_sip_call"
    bad = post(client, "status", report | {"status": "exploded"}, sipd_auth)
    assert bad.status_code == 422


def test_a_refers_outcome_completes_the_transfer(client, issuer, api_container, sipd_auth):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    call_id = uuid.UUID(post(client, "invite", space.invite(), sipd_auth).json()["call_id"])
    report = {"call_id": str(call_id), "outcome": "failed", "sip_code": 486, "reason": None}
    none = post(client, "transfer", report, sipd_auth)
    assert none.status_code == 409 and none.json()["error"]["code"] == "no_transfer_in_progress"
    calls = api_container.calls
    calls.start_call(space.actor, StartCall(call_id=call_id))
    calls.request_transfer(space.actor, RequestTransfer(call_id=call_id, mode="cold",
                                                        target="+14155550199"))  # fmt: skip
    resp = client.post(f"/api/sip/transfer?call_id={call_id}", json=report, headers=sipd_auth)
    assert resp.status_code == 200 and resp.json() == {"received": True, "changed": True}
    call = calls.find_call(space.actor, call_id)
    assert call.transfer is None and call.transfer_outcome == "failed"
    again = post(client, "transfer", report, sipd_auth)  # sipd retries: no harm
    assert again.status_code == 200 and again.json()["changed"] is False
    mismatch = client.post(f"/api/sip/transfer?call_id={uuid.uuid4()}", json=report,
                           headers=sipd_auth)  # fmt: skip
    assert mismatch.status_code == 422


def test_an_outbound_call_goes_out_through_the_caller_ids_trunk(
    client, issuer, api_container, fake, sipd_auth
):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    resp = client.post("/api/telephony/outbound", headers=space.headers, json={
        "agent_id": space.agent_id, "to": "+1 (202) 555-0123",
        "from_number_id": str(space.number_id)})  # fmt: skip
    assert resp.status_code == 201, resp.text
    placed = resp.json()
    call_id = placed["call_id"]
    (request,) = fake.of("/calls")
    secret = api_container.settings.telephony.sip_secret.get_secret_value()
    assert request.authorization == f"Bearer {secret}"
    body = request.body
    assert body["call_id"] == call_id and body["from_user"] == space.number
    assert body["to"] == f"sip:+12025550123@{CARRIER}"
    assert body["trunk"] == {
        "address": CARRIER,
        "transport": "udp",
        "username": space.out_user,
        "password": space.out_password,
    }
    assert urlsplit(body["stream_url"]).path == "/streams/sip"
    stream_secret = api_container.settings.telephony.stream_secret.get_secret_value()
    grant = tokens.verify(body["token"], stream_secret, "sip")
    assert grant.call_id == call_id and grant.space_id == space.id
    assert body["codec_preference"] == ["PCMU", "PCMA"]
    sip_call_id = fake.calls[call_id]["sip_call_id"]
    assert (placed["provider"], placed["provider_call_id"]) == ("sip", sip_call_id)
    call = api_container.calls.find_call(space.actor, uuid.UUID(call_id))
    assert (call.channel, call.direction, call.provider) == ("sip", "outbound", "sip")

    # answered; the agent transfers the caller: a REFER through sipd, by our call id
    api_container.calls.start_call(space.actor, StartCall(call_id=uuid.UUID(call_id)))
    moved = client.post(f"/api/sessions/{call_id}/transfer", json={"target": "+1 415 555 0199"},
                        headers=space.headers)  # fmt: skip
    assert moved.status_code == 202, moved.text
    assert fake.transfers == [(call_id, "tel:+14155550199")]
    assert api_container.calls.find_call(space.actor, uuid.UUID(call_id)).transfer is not None
    done = post(client, "transfer", {"call_id": call_id, "outcome": "completed",
                                     "sip_code": 200}, sipd_auth)  # fmt: skip
    assert done.status_code == 200, done.text
    after = api_container.calls.find_call(space.actor, uuid.UUID(call_id))
    assert after.transfer_outcome == "completed"


def test_an_outbound_call_sipd_cannot_take_fails_cleanly(client, issuer, api_container, fake):
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    dial = {"agent_id": space.agent_id, "to": "+12025550123",
            "from_number_id": str(space.number_id)}  # fmt: skip
    fake.fail_next(503)
    resp = client.post("/api/telephony/outbound", headers=space.headers, json=dial)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "provider_failed"
    assert resp.json()["error"]["details"]["code"] == "provider_unreachable"
    # a trunk without an outbound address cannot call out
    inbound_only = Space(client, issuer, api_container, addresses=["10.0.0.0/8"], outbound=False)
    resp = client.post("/api/telephony/outbound", headers=inbound_only.headers, json={
        "agent_id": inbound_only.agent_id, "to": "+12025550123",
        "from_number_id": str(inbound_only.number_id)})  # fmt: skip
    assert resp.status_code == 502
    assert resp.json()["error"]["details"]["code"] == "provider_rejected"


def test_refused_invites_are_recorded_in_the_numbers_space(
    client, issuer, api_container, sipd_auth
):
    space = Space(client, issuer, api_container, addresses=["192.0.2.0/24"])
    idle = new_number()
    idle_id = space.provision(idle, assign=False)
    fenced = space.invite(source_ip="198.51.100.7")
    unassigned = space.invite(idle, source_ip="192.0.2.10")
    for body in (fenced, unassigned, unassigned):  # a retried INVITE is recorded once
        assert post(client, "invite", body, sipd_auth).json()["action"] == "refuse"

    def refused(number_id: uuid.UUID) -> list[dict[str, Any]] | None:
        resp = client.get(f"/api/telephony/numbers/{number_id}/refused-calls",
                          headers=space.headers)  # fmt: skip
        assert resp.status_code == 200, resp.text
        return resp.json()["items"] or None

    (trunk,) = eventually(lambda: refused(space.number_id), what="the trunk's refusal")
    assert (trunk["reason"], trunk["provider"]) == ("trunk_unauthenticated", "sip"), trunk
    assert trunk["provider_call_id"] == fenced["sip_call_id"], trunk
    (idle_call,) = eventually(lambda: refused(idle_id), what="the unassigned number's refusal")
    assert idle_call["reason"] == "number_unassigned", idle_call
    assert idle_call["caller"] == "+447911123456", idle_call
    other = issuer.headers(f"sip-{uuid.uuid4().hex[:8]}")
    resp = client.get(f"/api/telephony/numbers/{idle_id}/refused-calls", headers=other)
    assert resp.status_code == 404, resp.text


def test_a_caller_id_we_cannot_store_is_dropped_not_a_500(client, issuer, api_container, sipd_auth):
    """The From user is the carrier's (or an attacker's) text: one the call cannot hold (too
    long, a NUL) opens the call without a caller id instead of failing the INVITE."""
    space = Space(client, issuer, api_container, addresses=["10.0.0.0/8"])
    for caller in ("9" * 200, "bad\x00caller"):
        resp = post(client, "invite", space.invite(from_user=caller), sipd_auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["action"] == "connect", resp.text
