"""Twilio's webhooks on the real stack, driven by a local Twilio (tests/support/fake_twilio.py)
that signs them as Twilio does: a number bought with the real SDK and provisioned in a space
routes its calls by ``To`` to the agent it is assigned to; unknown, released and unassigned
numbers are refused politely; status callbacks of a call we placed become
``call.provider_status`` signals on the provider ingress topic; forged webhooks are refused."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from adapters.api import twilio_webhooks
from adapters.telephony import tokens
from adapters.telephony.twilio import TwilioProvider
from commands.agents import Actor
from commands.numbers import (
    AssignNumber,
    ConnectAccount,
    ProvisionNumber,
    ReleaseNumber,
    UnassignNumber,
)
from commands.telephony import CallbackUrls, OutboundCall, ProviderCredentials
from infra.settings import TelephonySettings
from tests.integration.test_relay import read_topic
from tests.support.fake_twilio import FakeTwilio, signature, via_client

pytestmark = pytest.mark.integration
BASE = "http://testserver"  # the TestClient's URLs: what Twilio signs here
URLS = CallbackUrls(f"{BASE}/api/twilio/voice", f"{BASE}/api/twilio/status")


@pytest.fixture
def fake(client) -> Iterator[FakeTwilio]:
    server = FakeTwilio(deliver=via_client(client)).start()
    yield server
    server.stop()


class Space:
    """A space with an agent, its own Twilio account at the fake, and numbers bought there."""

    def __init__(self, client, issuer, container, fake: FakeTwilio) -> None:
        self.id = f"twl-{uuid.uuid4().hex[:8]}"
        self.headers = issuer.headers(self.id)
        self.container, self.fake = container, fake
        self.actor = Actor(space_id=self.id, subject="test")
        resp = client.post("/api/agents", json={"name": "Front desk"}, headers=self.headers)
        assert resp.status_code == 201, resp.text
        self.agent_id = resp.json()["id"]
        secrets = {"auth_token": fake.account.auth_token}
        container.numbers.connect_account(
            self.actor,
            ConnectAccount(provider="twilio", account_id=fake.account.sid, secrets=secrets),
        )
        self.creds = ProviderCredentials("twilio", fake.account.sid, secrets)
        self.provider = TwilioProvider(TelephonySettings(twilio_api_base_url=fake.base_url))

    def buy(self, *, assign: bool = True) -> tuple[str, uuid.UUID]:
        # one of 8 million numbers: the session's database keeps every number provisioned
        e164 = f"+1415{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"
        self.fake.offer(e164)
        bought = self.provider.buy(self.creds, e164, URLS)
        number_id = self.container.numbers.provision_number(
            self.actor,
            ProvisionNumber(e164=e164, provider="twilio", provider_id=bought.provider_id),
        ).id
        if assign:
            self.container.numbers.assign_number(
                self.actor, AssignNumber(number_id=number_id, agent_id=self.agent_id)
            )
        return e164, number_id


@pytest.fixture
def space(client, issuer, api_container, fake) -> Space:
    return Space(client, issuer, api_container, fake)


def said(twiml: str) -> str | None:
    root = ET.fromstring(twiml)
    assert root.find("Connect") is None, twiml
    assert root.find("Hangup") is not None, twiml
    say = root.find("Say")
    return None if say is None else say.text


def stream_params(twiml: str) -> dict[str, str]:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    assert urlsplit(stream.get("url")).path == "/streams/twilio"
    return {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


def test_a_call_to_a_bought_number_reaches_the_agent_it_is_assigned_to(space, api_container):
    e164, _ = space.buy()
    number = space.fake.owned(e164)
    assert number["voice_url"] == URLS.voice_url and number["status_callback"] == URLS.status_url

    answered = space.fake.incoming_call(e164, caller="+15550007777")
    assert answered.status == 200, answered.body
    params = stream_params(answered.body)
    secret = api_container.settings.telephony.stream_secret.get_secret_value()
    grant = tokens.verify(params["token"], secret, "twilio_media_streams")
    assert grant.space_id == space.id and grant.agent_id == space.agent_id
    assert grant.call_id == params["call_id"]
    call = api_container.calls.find_call(space.actor, uuid.UUID(params["call_id"]))
    assert (call.direction, call.to_number, call.from_number) == ("inbound", e164, "+15550007777")
    again = space.fake._send(answered.url, answered.form)  # Twilio retries: the same call
    assert stream_params(again.body)["call_id"] == params["call_id"]

    ended = space.fake.finish(answered.form["CallSid"])  # the number's status callback
    assert ended is not None and ended.status == 200 and ended.url == URLS.status_url
    signals = provider_signals(api_container.settings, params["call_id"])
    assert [(s["status"], s["sip_code"]) for s in signals] == [("completed", 200)]
    assert signals[0]["provider_call_id"] == answered.form["CallSid"]


def test_numbers_that_cannot_take_calls_are_answered_politely_and_counted(
    space, client, monkeypatch
):
    unassigned, _ = space.buy(assign=False)
    before = dict(twilio_webhooks.REFUSED)
    no_agent = space.fake.incoming_call(unassigned)
    assert no_agent.status == 200 and "nobody is answering" in said(no_agent.body)

    released, number_id = space.buy(assign=False)  # an assigned number cannot be released
    space.container.numbers.release_number(space.actor, ReleaseNumber(number_id=number_id))
    gone = space.fake.incoming_call(released)  # still at Twilio, no longer ours
    assert gone.status == 403  # the space's token no longer applies, and no deployment token
    monkeypatch.setattr(
        space.container.settings.telephony,
        "twilio_auth_token",
        SecretStr(space.fake.account.auth_token),
    )
    gone = space.fake.incoming_call(released)
    assert gone.status == 200 and "not in service" in said(gone.body)
    assert twilio_webhooks.REFUSED["no_agent"] == before.get("no_agent", 0) + 1
    assert twilio_webhooks.REFUSED["unknown_number"] == before.get("unknown_number", 0) + 1

    reassigned, number_id = space.buy()
    space.container.numbers.unassign_number(space.actor, UnassignNumber(number_id=number_id))
    assert "nobody is answering" in said(space.fake.incoming_call(reassigned).body)


def test_an_unknown_number_is_verified_with_the_deployment_token_or_refused(
    client, api_container, monkeypatch
):
    token = "deployment-auth-token-0123456789ab"
    form = {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": "AC" + "1" * 32,
        "From": "+15550003333",
        "To": "+12025550166",
        "Direction": "inbound",
    }
    url = f"{BASE}/api/twilio/voice"

    def post(key: str) -> Any:
        return client.post(
            "/api/twilio/voice",
            data=form,
            headers={"X-Twilio-Signature": signature(key, url, form)},
        )

    assert post(token).status_code == 403  # no deployment token: nothing can verify it
    monkeypatch.setattr(api_container.settings.telephony, "twilio_auth_token", SecretStr(token))
    forged = post("someone-elses-token")
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_twilio_signature"
    polite = post(token)
    assert polite.status_code == 200 and "not in service" in said(polite.text)


def test_only_the_numbers_own_account_signs_its_webhooks(space, client, api_container, monkeypatch):
    e164, _ = space.buy()
    deployment = "deployment-auth-token-0123456789ab"
    monkeypatch.setattr(
        api_container.settings.telephony, "twilio_auth_token", SecretStr(deployment)
    )
    form = {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": space.fake.account.sid,
        "From": "+15550003333",
        "To": e164,
        "Direction": "inbound",
    }
    url = f"{BASE}/api/twilio/voice"
    for key in (deployment, "not-the-spaces-token"):
        resp = client.post(
            "/api/twilio/voice",
            data=form,
            headers={"X-Twilio-Signature": signature(key, url, form)},
        )
        assert resp.status_code == 403, resp.text
    tampered = dict(form, To="+12025550177")  # signed for another number
    resp = client.post(
        "/api/twilio/voice",
        data=tampered,
        headers={"X-Twilio-Signature": signature(space.fake.account.auth_token, url, form)},
    )
    assert resp.status_code == 403
    unsigned = client.post("/api/twilio/voice", data=form)
    assert unsigned.status_code == 403


def provider_signals(settings, call_id: str) -> list[dict[str, Any]]:
    topic = f"{settings.topic_prefix}.ingress.provider.v1"
    return [json.loads(v) for k, v in read_topic(settings, topic) if k == call_id]


def test_a_placed_calls_progress_becomes_provider_status_signals(space, client, api_container):
    e164, _ = space.buy()
    opened = client.post(
        "/api/telephony/streams",
        headers=space.headers,
        json={
            "agent_id": space.agent_id,
            "channel": "twilio_media_streams",
            "direction": "outbound",
            "from_number": e164,
            "to_number": "+12025550123",
        },
    )
    assert opened.status_code == 201, opened.text
    call_id = opened.json()["call_id"]
    placed = space.provider.place_call(
        space.creds,
        OutboundCall(
            call_id=uuid.UUID(call_id),
            from_e164=e164,
            to_e164="+12025550123",
            urls=URLS,
            machine_detection=True,
        ),
    )
    sid = placed.provider_call_id

    ringing = space.fake.ring(sid)
    assert [d.status for d in ringing] == [200, 200], [d.body for d in ringing]
    voice, answered = space.fake.answer(sid, answered_by="machine_end_beep")
    assert voice is not None and stream_params(voice.body)["call_id"] == call_id
    space.fake.finish(sid)
    assert all(d.status == 200 and d.body.endswith('"signals":1}') for d in answered)

    signals = provider_signals(api_container.settings, call_id)
    assert [s["status"] for s in signals] == ["queued", "ringing", "in-progress", "completed"]
    for s in signals:
        assert s["type"] == "call.provider_status" and s["source"] == "provider"
        assert s["space_id"] == space.id and s["provider"] == "twilio"
        assert s["provider_call_id"] == sid
        assert s["signal_id"] == f"twilio:{sid}:{s['status']}"
    assert signals[2]["answered_by"] == "machine" and signals[3]["sip_code"] == 200
    assert signals[0]["answered_by"] is None and signals[0]["sip_code"] is None


def test_a_forged_status_callback_produces_nothing(space, client, api_container):
    e164, _ = space.buy()
    call_id = str(uuid.uuid4())
    url = f"{BASE}/api/twilio/status?call_id={call_id}"
    form = {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": space.fake.account.sid,
        "From": e164,
        "To": "+12025550123",
        "Direction": "outbound-api",
        "CallStatus": "completed",
    }
    forged = client.post(
        f"/api/twilio/status?call_id={call_id}",
        data=form,
        headers={"X-Twilio-Signature": signature("x" * 32, url, form)},
    )
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "invalid_twilio_signature"
    elsewhere = client.post(
        f"/api/twilio/status?call_id={uuid.uuid4()}",
        data=form,
        headers={"X-Twilio-Signature": signature(space.fake.account.auth_token, url, form)},
    )
    assert elsewhere.status_code == 403  # the signature covers our call id
    unknown_call = client.post(
        f"/api/twilio/status?call_id={call_id}",
        data=form,
        headers={"X-Twilio-Signature": signature(space.fake.account.auth_token, url, form)},
    )
    assert unknown_call.status_code == 200 and unknown_call.json()["signals"] == 0
    assert provider_signals(api_container.settings, call_id) == []


def test_another_spaces_call_cannot_be_reached_through_our_numbers(
    space, client, issuer, api_container
):
    opened = client.post(
        "/api/telephony/streams",
        headers=space.headers,
        json={"agent_id": space.agent_id, "channel": "twilio_media_streams"},
    )
    theirs = opened.json()["call_id"]
    other_fake = FakeTwilio(deliver=via_client(client)).start()
    try:
        other = Space(client, issuer, api_container, other_fake)
        their_number, _ = other.buy()
        url = f"{BASE}/api/twilio/voice?call_id={theirs}"
        form = {
            "CallSid": "CA" + uuid.uuid4().hex,
            "AccountSid": other_fake.account.sid,
            "From": their_number,
            "To": "+12025550123",
            "Direction": "outbound-api",
        }
        token = other_fake.account.auth_token
        resp = client.post(
            f"/api/twilio/voice?call_id={theirs}",
            data=form,
            headers={"X-Twilio-Signature": signature(token, url, form)},
        )
        assert resp.status_code == 200 and "cannot be connected" in said(resp.text)
        status_url = f"{BASE}/api/twilio/status?call_id={theirs}"
        status = dict(form, CallStatus="completed")
        resp = client.post(
            f"/api/twilio/status?call_id={theirs}",
            data=status,
            headers={"X-Twilio-Signature": signature(token, status_url, status)},
        )
        assert resp.status_code == 200 and resp.json()["signals"] == 0
        assert provider_signals(api_container.settings, theirs) == []
    finally:
        other_fake.stop()
