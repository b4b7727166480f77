"""Outbound calls and transfers through Twilio, end to end on the real stack: the API, the real
``twilio`` SDK (``TwilioProvider``, registered in the container's providers, pointed at a local
Twilio with ``telephony.twilio_api_base_url``), Twilio's signed webhooks back to the API, the
pipeline (ingest, relay, projectors) and LiveKit. No worker runs: where a worker would start or
end the call, the test does it with the same commands."""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from livekit import rtc

from adapters.livekit.rooms import CALL_TOPIC, LiveKitRooms
from adapters.telephony import tokens
from adapters.telephony.twilio import TwilioProvider
from commands.agents import Actor
from commands.call_commands import EndCall, StartCall
from commands.numbers import ConnectAccount, ProvisionNumber, SetCallerId
from projections import number_queries
from tests.integration.test_twilio_webhooks import BASE, Space, stream_params
from tests.support.fake_twilio import FakeTwilio, signature, via_client
from tests.support.processes import eventually

pytestmark = pytest.mark.integration
CALLEE = "+12025550123"


@pytest.fixture
def fake(client, api_container, monkeypatch) -> Iterator[FakeTwilio]:
    """A local Twilio the container's Twilio adapter talks to; webhooks it signs for the URLs
    the API gives it (``telephony.public_api_url`` = the TestClient's base)."""
    server = FakeTwilio(deliver=via_client(client)).start()
    telephony = api_container.settings.telephony
    monkeypatch.setattr(telephony, "public_api_url", BASE)
    providers = api_container.telephony_providers
    before = providers.voice_provider("twilio")
    local = telephony.model_copy(update={"twilio_api_base_url": server.base_url})
    providers.register(TwilioProvider(local))
    yield server
    providers.register(before)
    server.stop()


@pytest.fixture
def space(client, issuer, api_container, fake) -> Space:
    return Space(client, issuer, api_container, fake)


def caller_id(space: Space, number_id: uuid.UUID, client: Any = None) -> None:
    """Make the number the space's agent's caller id (through the API when given a client),
    and wait until the read model says so."""
    agent_id = uuid.UUID(space.agent_id)
    if client is None:
        space.container.numbers.set_caller_id(
            space.actor, SetCallerId(number_id=number_id, agent_id=agent_id)
        )
    else:
        resp = client.post(f"/api/telephony/numbers/{number_id}/caller-id",
                           json={"agent_id": space.agent_id}, headers=space.headers)  # fmt: skip
        assert resp.status_code == 200, resp.text

    def visible() -> Any:
        with space.container.pool.connection() as conn:
            return number_queries.caller_id_of(conn, space.id, agent_id)

    eventually(visible, timeout=60, what="the caller id in the numbers read model")


def dial(client, space: Space, key: str | None = None, **extra: Any) -> Any:
    headers = dict(space.headers, **({"Idempotency-Key": key} if key else {}))
    body = {"agent_id": space.agent_id, "to": "+1 (202) 555-0123", **extra}
    return client.post("/api/telephony/outbound", json=body, headers=headers)


def creates(fake: FakeTwilio) -> list[dict[str, str]]:
    """The Calls create requests the local Twilio received."""
    return [
        {k: v[-1] for k, v in form.items()}
        for method, path, form in fake.requests
        if method == "POST" and path.endswith("/Calls.json")
    ]


def status_of(client, space: Space, call_id: str, until: Any) -> dict[str, Any]:
    """``GET /api/telephony/{call_id}/status`` once ``until(status)`` holds."""
    last: list[Any] = [None]

    def check() -> Any:
        resp = client.get(f"/api/telephony/{call_id}/status", headers=space.headers)
        last[0] = resp.json()
        return resp.json() if resp.status_code == 200 and until(resp.json()) else None

    try:
        return eventually(check, timeout=60, what=f"the status of call {call_id}")  # type: ignore[return-value]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last[0]}") from None


def provider_statuses(space: Space, call_id: str) -> list[tuple[str, str, str | None]]:
    with space.container.pool.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, provider_call_id, answered_by FROM call_provider_statuses "
            "WHERE call_id = %s ORDER BY seq",
            (call_id,),
        )
        return [tuple(row) for row in cur.fetchall()]


def test_an_outbound_call_dials_from_the_agents_caller_id_and_follows_twilio(
    client, issuer, fake, api_container
):
    space = Space(client, issuer, api_container, fake)  # its agent; its account, again by API
    account = {"account_id": fake.account.sid, "secrets": {"auth_token": fake.account.auth_token}}
    put = client.put("/api/telephony/accounts/twilio", json=account, headers=space.headers)
    assert put.status_code in (200, 201), put.text
    e164 = f"+1415557{uuid.uuid4().int % 10_000:04d}"
    fake.offer(e164)
    bought = client.post("/api/telephony/numbers/buy", json={"provider": "twilio", "e164": e164},
                         headers=space.headers)  # fmt: skip
    assert bought.status_code == 201, bought.text
    assert fake.owned(e164)["voice_url"] == f"{BASE}/api/twilio/voice"
    number_id = uuid.UUID(bought.json()["id"])
    caller_id(space, number_id, client)
    key = f"dial-{uuid.uuid4()}"
    resp = dial(client, space, key, variables={"customer_name": "Ada"})
    assert resp.status_code == 201, resp.text
    placed = resp.json()
    call_id, sid = placed["call_id"], placed["provider_call_id"]
    assert (placed["from_number"], placed["to_number"], placed["provider"]) == (
        e164, CALLEE, "twilio",
    )  # fmt: skip
    (create,) = creates(fake)
    assert (create["From"], create["To"]) == (e164, CALLEE)
    assert create["Url"] == f"{BASE}/api/twilio/voice?call_id={call_id}"
    assert create["StatusCallback"] == f"{BASE}/api/twilio/status?call_id={call_id}"
    assert "MachineDetection" not in create and fake.calls[sid]["resource"]["to"] == CALLEE

    again = dial(client, space, key, variables={"customer_name": "Ada"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert (again.json()["call_id"], again.json()["provider_call_id"]) == (call_id, sid)
    assert len(creates(fake)) == 1  # a replayed key never dials twice

    assert [d.status for d in fake.ring(sid)] == [200, 200]
    voice, answered = fake.answer(sid)
    assert voice is not None and voice.status == 200, voice
    params = stream_params(voice.body)  # the stream of the call we opened, nothing new
    assert params["call_id"] == call_id
    secret = api_container.settings.telephony.stream_secret.get_secret_value()
    grant = tokens.verify(params["token"], secret, "twilio_media_streams")
    assert (grant.call_id, grant.space_id) == (call_id, space.id)
    assert [d.status for d in answered] == [200]
    space.container.calls.start_call(space.actor, StartCall(call_id=uuid.UUID(call_id)))
    assert fake.finish(sid).status == 200

    status = status_of(client, space, call_id, lambda s: s["provider_status"] == "completed")
    assert (status["provider"], status["provider_call_id"]) == ("twilio", sid)
    assert (status["direction"], status["channel"]) == ("outbound", "twilio_media_streams")
    assert (status["from_number"], status["to_number"]) == (e164, CALLEE)
    assert [s for s, _, _ in provider_statuses(space, call_id)] == [
        "queued", "ringing", "in-progress", "completed",
    ]  # fmt: skip
    assert {p for _, p, _ in provider_statuses(space, call_id)} == {sid}
    call = space.container.calls.find_call(space.actor, uuid.UUID(call_id))
    assert call.variables == {"customer_name": "Ada"}


@pytest.mark.parametrize("twilio_status,reason", [("busy", "busy"), ("no-answer", "no_answer")])
def test_a_call_nobody_answers_ends_with_the_providers_reason(
    space, client, fake, twilio_status, reason
):
    _, number_id = space.buy()
    resp = dial(client, space, from_number_id=str(number_id))
    assert resp.status_code == 201, resp.text
    call_id, sid = resp.json()["call_id"], resp.json()["provider_call_id"]
    fake.ring(sid)
    assert fake.finish(sid, twilio_status).status == 200
    status = status_of(client, space, call_id, lambda s: s["status"] == "ended")
    assert (status["end_reason"], status["provider_status"]) == (reason, twilio_status)


def test_a_provider_that_refuses_the_credentials_fails_the_call(space, client, fake):
    _, number_id = space.buy()
    caller_id(space, number_id)
    space.container.numbers.connect_account(space.actor, ConnectAccount(
        provider="twilio", account_id=fake.account.sid, secrets={"auth_token": "not-it"},
    ))  # fmt: skip
    resp = dial(client, space)
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["code"] == "provider_failed"
    assert error["details"]["code"] == "provider_auth_failed"
    assert "not-it" not in resp.text
    assert fake.calls == {}  # Twilio placed nothing
    call_id = error["details"]["call_id"]
    status = status_of(client, space, call_id, lambda s: s["status"] == "ended")
    assert status["end_reason"] == "failed" and status["provider_call_id"] is None


def test_bad_outbound_requests_are_refused_and_dial_nothing(
    space, client, issuer, api_container, fake
):
    e164, number_id = space.buy()
    bad = dial(client, space, from_number_id=str(number_id), to="+1 555")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_phone_number"
    no_caller_id = dial(client, space)
    assert no_caller_id.status_code == 422
    assert no_caller_id.json()["error"]["code"] == "no_caller_id"

    other = Space(client, issuer, api_container, fake)
    theirs = dial(client, other, from_number_id=str(number_id))
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "number_not_found"

    bare_space = f"bare-{uuid.uuid4().hex[:8]}"
    bare_headers = issuer.headers(bare_space)
    agent = client.post("/api/agents", json={"name": "No account"}, headers=bare_headers).json()
    unbought = f"+1415556{uuid.uuid4().int % 10_000:04d}"
    bare_number = api_container.numbers.provision_number(
        Actor(space_id=bare_space, subject="test"),
        ProvisionNumber(e164=unbought, provider="twilio"),
    ).id
    missing = client.post(
        "/api/telephony/outbound",
        json={"agent_id": agent["id"], "to": CALLEE, "from_number_id": str(bare_number)},
        headers=bare_headers,
    )
    assert missing.status_code == 409
    assert missing.json()["error"]["code"] == "provider_account_missing"
    assert creates(fake) == [] and fake.calls == {}

    caller_id(space, number_id)
    mine = dial(client, space)
    assert mine.status_code == 201, mine.text
    call_id = mine.json()["call_id"]
    assert status_of(client, space, call_id, lambda s: True)["call_id"] == call_id
    stranger = client.get(f"/api/telephony/{call_id}/status", headers=other.headers)
    assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "session_not_found"
    assert len(creates(fake)) == 1


def test_a_machine_answering_is_told_to_the_calls_worker(space, client, fake, api_container):
    _, number_id = space.buy()
    caller_id(space, number_id)
    resp = dial(client, space, machine_detection=True)
    assert resp.status_code == 201, resp.text
    placed = resp.json()
    (create,) = creates(fake)
    assert create["MachineDetection"] == "DetectMessageEnd"
    settings = api_container.settings.livekit
    token = LiveKitRooms(settings).join_token(
        placed["room_name"], "worker-stand-in", "worker", timedelta(minutes=5)
    )

    async def listen() -> list[tuple[str, dict[str, Any]]]:
        room, heard = rtc.Room(), asyncio.Queue()

        @room.on("data_received")
        def _data(packet: rtc.DataPacket) -> None:
            heard.put_nowait((packet.topic, json.loads(packet.data)))

        await room.connect(settings.url, token)
        try:
            fake.ring(placed["provider_call_id"])
            voice, answered = await asyncio.to_thread(
                fake.answer, placed["provider_call_id"], "machine_end_beep"
            )
            assert voice is not None and voice.status == 200
            assert stream_params(voice.body)["call_id"] == placed["call_id"]
            first = await asyncio.wait_for(heard.get(), timeout=20)
            return [first]
        finally:
            await room.disconnect()

    heard = asyncio.run(listen())
    assert heard == [(CALL_TOPIC, {"type": "answered_by", "value": "machine"})]
    status = status_of(client, space, placed["call_id"], lambda s: s["answered_by"] is not None)
    assert status["answered_by"] == "machine"


def answered_call(space: Space, client, fake: FakeTwilio) -> tuple[str, str]:
    """An outbound call the callee answered and the agent took (the worker's start)."""
    _, number_id = space.buy()
    resp = dial(client, space, from_number_id=str(number_id))
    assert resp.status_code == 201, resp.text
    call_id, sid = resp.json()["call_id"], resp.json()["provider_call_id"]
    fake.ring(sid)
    fake.answer(sid)
    space.container.calls.start_call(space.actor, StartCall(call_id=uuid.UUID(call_id)))
    return call_id, sid


@pytest.mark.parametrize(
    "dial_status,outcome,apology",
    [("completed", "completed", False), ("busy", "busy", True), ("canceled", "failed", True)],
)
def test_a_transfer_dials_through_twilio_and_its_outcome_comes_from_the_dial(
    space, client, fake, dial_status, outcome, apology
):
    call_id, sid = answered_call(space, client, fake)
    resp = client.post(f"/api/sessions/{call_id}/transfer",
                       json={"target": "+1 415 555 0199"}, headers=space.headers)  # fmt: skip
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "transferring"
    (moved,) = fake.transfers
    assert (moved.call_sid, moved.kind, moved.target) == (sid, "number", "+14155550199")
    dial_el = ET.fromstring(moved.twiml).find("Dial")
    assert dial_el.get("action") == f"{BASE}/api/twilio/transfer?call_id={call_id}"
    # the stream stops with the redirect: the worker ends its leg
    space.container.calls.end_call(
        space.actor, EndCall(call_id=uuid.UUID(call_id), reason="transferred")
    )

    reported = fake.end_dial(sid, dial_status)
    assert reported is not None and reported.status == 200, reported
    twiml = ET.fromstring(reported.body)
    assert twiml.find("Hangup") is not None and twiml.find("Connect") is None
    assert (twiml.find("Say") is not None) == apology
    assert fake._send(reported.url, reported.form).status == 200  # Twilio retries: no harm

    status = status_of(client, space, call_id, lambda s: s["transfer_outcome"] is not None)
    assert status["transfer_outcome"] == outcome
    assert (status["status"], status["end_reason"]) == ("ended", "transferred")


def test_transfers_that_cannot_be_made_are_refused(space, client, issuer, api_container, fake):
    call_id, sid = answered_call(space, client, fake)
    forged_url = f"{BASE}/api/twilio/transfer?call_id={call_id}"
    ours = fake.calls[sid]["resource"]["from"]
    form = {"CallSid": sid, "AccountSid": fake.account.sid, "From": ours, "To": CALLEE,
            "Direction": "outbound-api", "DialCallStatus": "completed"}  # fmt: skip
    forged_signature = signature("x" * 32, forged_url, form)
    forged = client.post(f"/api/twilio/transfer?call_id={call_id}", data=form,
                         headers={"X-Twilio-Signature": forged_signature})  # fmt: skip
    assert forged.status_code == 403

    other = Space(client, issuer, api_container, fake)
    theirs = client.post(f"/api/sessions/{call_id}/transfer", json={"target": "+14155550199"},
                         headers=other.headers)  # fmt: skip
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "session_not_found"
    bad = client.post(f"/api/sessions/{call_id}/transfer", json={"target": "front desk"},
                      headers=space.headers)  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_phone_number"

    web = client.post("/api/livekit/token", json={"agent_id": space.agent_id},
                      headers=space.headers).json()  # fmt: skip
    not_phone = client.post(f"/api/sessions/{web['call_id']}/transfer",
                            json={"target": "+14155550199"}, headers=space.headers)  # fmt: skip
    assert not_phone.status_code == 409
    assert not_phone.json()["error"]["code"] == "not_a_phone_call"

    space.container.calls.end_call(space.actor, EndCall(call_id=uuid.UUID(call_id)))
    ended = client.post(f"/api/sessions/{call_id}/transfer", json={"target": "+14155550199"},
                        headers=space.headers)  # fmt: skip
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "call_ended"
    assert fake.transfers == []


def test_a_transfer_may_name_one_of_the_agents_transfer_targets(space, client, fake):
    targets = [{"name": "sales", "destination": "sip:sales@pbx.example.com",
                "description": "buying something"}]  # fmt: skip
    patched = client.patch(f"/api/agents/{space.agent_id}", json={"transfer_targets": targets},
                           headers=space.headers)  # fmt: skip
    assert patched.status_code == 200, patched.text
    call_id, sid = answered_call(space, client, fake)
    resp = client.post(f"/api/sessions/{call_id}/transfer", json={"target": "sales"},
                       headers=space.headers)  # fmt: skip
    assert resp.status_code == 202, resp.text
    (moved,) = fake.transfers
    assert (moved.call_sid, moved.kind, moved.target) == (sid, "sip", "sip:sales@pbx.example.com")
