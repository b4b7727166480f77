"""Refused calls are recorded (issue 12): a call that Twilio's voice webhook answers politely
at a number we know becomes ``number.call_refused`` in the number's space, once per CallSid,
and reaches the ``refused_calls`` read model (``GET .../refused-calls``) and ClickHouse through
the real relay and projectors; a number we do not know is only counted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.telephony import refusals
from commands.numbers import ReleaseNumber
from tests.integration.test_twilio_webhooks import Space, said
from tests.integration.test_voximplant_api import Space as VoxSpace
from tests.integration.test_voximplant_api import new_number
from tests.support.fake_twilio import FakeTwilio, signature, via_client
from tests.support.processes import eventually

pytestmark = pytest.mark.integration
N = "/api/telephony/numbers"
BASE = "http://testserver"


@pytest.fixture
def twilio(client) -> Iterator[FakeTwilio]:
    server = FakeTwilio(deliver=via_client(client)).start()
    yield server
    server.stop()


@pytest.fixture
def owner(client, issuer, api_container, twilio) -> Space:
    return Space(client, issuer, api_container, twilio)


def refused_calls(client, owner: Space, number_id: uuid.UUID, **params: Any) -> Any:
    return client.get(f"{N}/{number_id}/refused-calls", params=params, headers=owner.headers)


def listed(client, owner: Space, number_id: uuid.UUID, count: int) -> list[dict[str, Any]]:
    def page() -> list[dict[str, Any]] | None:
        resp = refused_calls(client, owner, number_id)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return body["items"] if body["total"] >= count else None

    items = eventually(page, timeout=60, what=f"{count} refused call(s) listed")
    assert isinstance(items, list)
    return items


def in_clickhouse(container, number_id: uuid.UUID) -> list[tuple[Any, ...]]:
    ch = container.clickhouse()
    try:
        return ch.execute(
            "SELECT reason, caller, provider, provider_call_id, e164, space_id "
            "FROM refused_calls FINAL WHERE number_id = %(id)s ORDER BY at",
            {"id": str(number_id)},
        )
    finally:
        ch.disconnect()


def test_an_unassigned_numbers_call_is_refused_politely_and_recorded_once(
    owner, client, issuer, api_container
):
    e164, number_id = owner.buy(assign=False)
    answered = owner.fake.incoming_call(e164, caller="+15550004444")
    assert answered.status == 200 and "nobody is answering" in said(answered.body)
    again = owner.fake._send(answered.url, answered.form)  # Twilio retries the webhook
    assert again.status == 200 and "nobody is answering" in said(again.body)

    (item,) = listed(client, owner, number_id, 1)
    call_sid = answered.form["CallSid"]
    assert item["number_id"] == str(number_id) and item["e164"] == e164
    assert (item["reason"], item["provider"], item["caller"], item["provider_call_id"]) == (
        "number_unassigned", "twilio", "+15550004444", call_sid,
    )  # fmt: skip
    rows = eventually(lambda: in_clickhouse(api_container, number_id), timeout=60,
                      what="the refused call in ClickHouse")  # fmt: skip
    assert rows == [("number_unassigned", "+15550004444", "twilio", call_sid, e164, owner.id)]
    assert refused_calls(client, owner, number_id).json()["total"] == 1  # the retry: no second
    number = client.get(f"{N}/{number_id}", headers=owner.headers)
    assert number.json()["version"] == 1  # a refused call is no change of the number

    other = issuer.headers(f"other-{uuid.uuid4().hex[:8]}")
    hidden = client.get(f"{N}/{number_id}/refused-calls", headers=other)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "number_not_found"
    bad = refused_calls(client, owner, number_id, limit=0)
    assert bad.status_code == 422


def test_refused_calls_are_paged_newest_first(owner, client):
    e164, number_id = owner.buy(assign=False)
    sids = [owner.fake.incoming_call(e164).form["CallSid"] for _ in range(3)]
    listed(client, owner, number_id, 3)
    first = refused_calls(client, owner, number_id, limit=2).json()
    second = refused_calls(client, owner, number_id, limit=2, offset=2).json()
    assert first["total"] == second["total"] == 3 and (first["limit"], second["offset"]) == (2, 2)
    got = [i["provider_call_id"] for i in first["items"] + second["items"]]
    assert sorted(got) == sorted(sids) and got[0] == sids[-1]


def test_a_released_numbers_calls_are_recorded_in_the_space_that_had_it(
    owner, client, api_container, monkeypatch
):
    e164, number_id = owner.buy(assign=False)
    owner.container.numbers.release_number(owner.actor, ReleaseNumber(number_id=number_id))
    monkeypatch.setattr(
        api_container.settings.telephony, "twilio_auth_token",
        SecretStr(owner.fake.account.auth_token),
    )  # fmt: skip
    # the released row must be in the read model before a call to it can find its owner
    eventually(
        lambda: client.get(f"{N}/{number_id}", headers=owner.headers).json().get("status")
        == "released",
        timeout=60, what="the number released in the read model",
    )  # fmt: skip
    gone = owner.fake.incoming_call(e164)
    assert gone.status == 200 and "not in service" in said(gone.body)
    (item,) = listed(client, owner, number_id, 1)
    assert item["reason"] == "number_released"
    assert item["provider_call_id"] == gone.form["CallSid"]


def test_a_number_we_do_not_know_is_answered_and_counted_never_recorded(
    client, api_container, monkeypatch
):
    token = "deployment-auth-token-0123456789ab"
    monkeypatch.setattr(api_container.settings.telephony, "twilio_auth_token", SecretStr(token))
    form = {
        "CallSid": "CA" + uuid.uuid4().hex, "AccountSid": "AC" + "1" * 32,
        "From": "+15550003333", "To": "+12025550166", "Direction": "inbound",
    }  # fmt: skip
    before = refusals.NOT_RECORDED["unknown_number"]
    url = f"{BASE}/api/twilio/voice"
    polite = client.post(
        "/api/twilio/voice", data=form,
        headers={"X-Twilio-Signature": signature(token, url, form)},
    )  # fmt: skip
    assert polite.status_code == 200 and "not in service" in said(polite.text)
    assert refusals.NOT_RECORDED["unknown_number"] == before + 1
    assert refusals.REFUSED[("twilio", "unknown_number")] >= 1


def test_a_failure_to_record_still_answers_politely(owner, client, monkeypatch):
    e164, number_id = owner.buy(assign=False)

    def broken(*_args: Any, **_kw: Any) -> Any:
        raise RuntimeError("event store away")

    monkeypatch.setattr(owner.container.numbers, "record_refusal", broken)
    before = refusals.NOT_RECORDED["failed"]
    answered = owner.fake.incoming_call(e164)
    assert answered.status == 200 and "nobody is answering" in said(answered.body)
    assert refusals.NOT_RECORDED["failed"] == before + 1


def test_voximplant_refusals_are_recorded_only_with_the_numbers_route_token(
    client, issuer, api_container
):
    vox = VoxSpace(client, issuer, api_container)
    idle = new_number()
    idle_id = vox.provision(idle, assign=False)
    body = vox.inbound(idle, caller="+447911123456")
    for _ in range(2):  # the scenario retries: the same session, recorded once
        resp = client.post("/api/voximplant/route", json=body, headers=vox.auth())
        assert resp.status_code == 200 and resp.json()["reason"] == "number_unassigned"
    (item,) = listed(client, vox, idle_id, 1)
    assert (item["provider"], item["reason"], item["caller"], item["provider_call_id"]) == (
        "voximplant", "number_unassigned", "+447911123456", body["session_id"],
    )  # fmt: skip

    numbers = vox.container.numbers
    numbers.release_number(vox.actor, ReleaseNumber(number_id=idle_id))
    eventually(
        lambda: client.get(f"{N}/{idle_id}", headers=vox.headers).json()["status"]
        == "released",
        timeout=60, what="the number released in the read model",
    )  # fmt: skip
    stranger = VoxSpace(client, issuer, api_container)
    before = refusals.NOT_RECORDED["not_authenticated"]
    forged = client.post("/api/voximplant/route", json=vox.inbound(idle), headers=stranger.auth())
    assert forged.status_code == 200 and forged.json()["action"] == "refuse"
    assert refusals.NOT_RECORDED["not_authenticated"] == before + 1
    released = vox.inbound(idle)
    resp = client.post("/api/voximplant/route", json=released, headers=vox.auth())
    assert resp.json()["reason"] == "unknown_number"  # what the scenario hears is unchanged
    items = listed(client, vox, idle_id, 2)
    assert [(i["reason"], i["provider_call_id"]) for i in items] == [
        ("number_released", released["session_id"]), ("number_unassigned", body["session_id"]),
    ]  # fmt: skip
