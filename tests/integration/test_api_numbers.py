"""The numbers, trunks and provider-accounts routes over the whole event-sourced path: API ->
event store -> relay -> Kafka -> Faust projectors -> Postgres read models and ClickHouse."""

from __future__ import annotations

import uuid

import pytest

from tests.support.processes import eventually

pytestmark = pytest.mark.integration
N = "/api/telephony/numbers"


def space() -> str:
    return f"space-{uuid.uuid4().hex[:10]}"


def fresh_e164() -> str:
    return f"+1415{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"


def agent(client, issuer, sp) -> str:
    resp = client.post("/api/agents", json={"name": "Front desk"}, headers=issuer.headers(sp))
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def provision(client, issuer, sp, e164=None, **body):
    body = {"e164": e164 or fresh_e164(), "provider": "twilio", "provider_id": "PN1", **body}
    resp = client.post(N, json=body, headers=issuer.headers(sp))
    assert resp.status_code == 201, resp.text
    return resp.json()


def error(resp, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code, resp.text


def test_provision_assign_lookup_and_read_your_writes(client, issuer, api_container):
    sp = space()
    made = provision(client, issuer, sp, e164="+1 (415) 555-2671")
    assert made["e164"] == "+14155552671" and made["status"] == "active"
    agent_id = agent(client, issuer, sp)
    resp = client.post(f"{N}/{made['id']}/assign", json={"agent_id": agent_id},
                       headers=issuer.headers(sp))  # fmt: skip
    assert resp.status_code == 200 and resp.headers["ETag"] == '"2"'
    got = client.get(f"{N}/{made['id']}", params={"min_version": 2}, headers=issuer.headers(sp))
    assert got.status_code == 200 and got.json()["inbound_agent_id"] == agent_id
    found = client.get("/api/telephony/lookup", params={"number": "+14155552671"},
                       headers=issuer.headers(sp))  # fmt: skip
    assert found.status_code == 200 and found.json()["agent_id"] == agent_id
    caller_id = client.post(f"{N}/{made['id']}/caller-id", json={"agent_id": agent_id},
                            headers=issuer.headers(sp))  # fmt: skip
    assert caller_id.json()["outbound_agent_id"] == agent_id
    listing = client.get(N, params={"agent_id": agent_id}, headers=issuer.headers(sp))
    eventually(lambda: client.get(N, headers=issuer.headers(sp)).json()["total"] == 1,
               timeout=30, what="the number listed")  # fmt: skip
    assert listing.status_code == 200

    def in_clickhouse():
        ch = api_container.clickhouse()
        try:
            return ch.execute(
                "SELECT e164, inbound_agent_id, outbound_agent_id, version FROM numbers FINAL "
                "WHERE number_id = %(id)s", {"id": made["id"]},
            )  # fmt: skip
        finally:
            ch.disconnect()

    rows = eventually(lambda: in_clickhouse() if in_clickhouse() and in_clickhouse()[0][3] == 3
                      else None, timeout=60, what="the number in ClickHouse")  # fmt: skip
    assert rows == [("+14155552671", agent_id, agent_id, 3)]


def test_another_space_sees_and_changes_nothing(client, issuer):
    sp, other = space(), space()
    made = provision(client, issuer, sp)
    theirs = agent(client, issuer, other)
    mine = agent(client, issuer, sp)
    h = issuer.headers(other)
    error(client.get(f"{N}/{made['id']}", headers=h), 404, "number_not_found")
    error(client.post(f"{N}/{made['id']}/assign", json={"agent_id": theirs}, headers=h),
          404, "number_not_found")  # fmt: skip
    error(client.post(f"{N}/{made['id']}/unassign", headers=h), 404, "number_not_found")
    error(client.post(f"{N}/{made['id']}/caller-id", json={"agent_id": None}, headers=h),
          404, "number_not_found")  # fmt: skip
    error(client.post(f"{N}/{made['id']}/release", headers=h), 404, "number_not_found")
    error(client.get("/api/telephony/lookup", params={"number": made["e164"]}, headers=h),
          404, "number_not_found")  # fmt: skip
    assert client.get(N, headers=h).json()["total"] == 0
    # and the owner cannot assign another space's agent
    error(client.post(f"{N}/{made['id']}/assign", json={"agent_id": theirs},
                      headers=issuer.headers(sp)), 404, "agent_not_found")  # fmt: skip
    assert client.post(f"{N}/{made['id']}/assign", json={"agent_id": mine},
                       headers=issuer.headers(sp)).status_code == 200  # fmt: skip


def test_a_number_is_active_in_one_space_at_a_time(client, issuer):
    sp, other, e164 = space(), space(), fresh_e164()
    made = provision(client, issuer, sp, e164=e164)
    resp = client.post(N, json={"e164": e164, "provider": "sip"}, headers=issuer.headers(other))
    error(resp, 409, "number_taken")
    released = client.post(f"{N}/{made['id']}/release", params={"at_provider": "false"},
                           headers=issuer.headers(sp))  # fmt: skip
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert provision(client, issuer, other, e164=e164, provider="sip", provider_id=None)


def test_invalid_numbers_are_refused_and_nothing_is_stored(client, issuer, api_container):
    sp = space()
    for raw in ("4155550100", "+1415", "+15551234567", "hello"):
        resp = client.post(N, json={"e164": raw, "provider": "twilio"}, headers=issuer.headers(sp))
        error(resp, 422, "invalid_phone_number")
    error(client.get("/api/telephony/lookup", params={"number": "+1"},
                     headers=issuer.headers(sp)), 422, "invalid_phone_number")  # fmt: skip
    assert api_container.numbers.route("+15551234567") is None
    with api_container.pool.connection() as conn:
        found = conn.execute("SELECT count(*) FROM numbers_events WHERE state::text LIKE %s",
                             (f"%{sp}%",)).fetchone()  # fmt: skip
    assert found[0] == 0


def test_archived_agents_and_assigned_or_released_numbers_are_refused(client, issuer):
    sp = space()
    made = provision(client, issuer, sp)
    archived = agent(client, issuer, sp)
    assert client.delete(f"/api/agents/{archived}", headers=issuer.headers(sp)).status_code == 204
    error(client.post(f"{N}/{made['id']}/assign", json={"agent_id": archived},
                      headers=issuer.headers(sp)), 409, "agent_archived")  # fmt: skip
    live = agent(client, issuer, sp)
    client.post(f"{N}/{made['id']}/assign", json={"agent_id": live}, headers=issuer.headers(sp))
    error(client.post(f"{N}/{made['id']}/release", headers=issuer.headers(sp)),
          409, "number_assigned")  # fmt: skip
    client.post(f"{N}/{made['id']}/unassign", headers=issuer.headers(sp))
    resp = client.post(f"{N}/{made['id']}/release", params={"at_provider": "false"},
                       headers=issuer.headers(sp))  # fmt: skip
    assert resp.status_code == 200
    error(client.post(f"{N}/{made['id']}/assign", json={"agent_id": live},
                      headers=issuer.headers(sp)), 409, "number_released")  # fmt: skip


def test_buying_or_searching_needs_the_space_account_and_an_adapter(client, issuer):
    sp = space()
    search = {"provider": "twilio", "country": "US"}
    error(client.get(f"{N}/search", params=search, headers=issuer.headers(sp)),
          409, "provider_account_missing")  # fmt: skip
    buy = {"provider": "twilio", "e164": fresh_e164()}
    error(client.post(f"{N}/buy", json=buy, headers=issuer.headers(sp)),
          409, "provider_account_missing")  # fmt: skip
    error(client.post(f"{N}/buy", json={**buy, "e164": "+1415"}, headers=issuer.headers(sp)),
          422, "invalid_phone_number")  # fmt: skip
    account = {"account_id": "AC0123", "secrets": {"auth_token": "s3cret-token"}}
    put = client.put("/api/telephony/accounts/twilio", json=account, headers=issuer.headers(sp))
    assert put.status_code == 200 and "s3cret-token" not in put.text
    if "twilio" not in client.app.state.container.telephony_providers.names():
        error(client.post(f"{N}/buy", json=buy, headers=issuer.headers(sp)),
              503, "provider_not_configured")  # fmt: skip
    assert client.get(N, headers=issuer.headers(sp)).json()["total"] == 0


def test_accounts_keep_their_secrets_and_stay_in_their_space(client, issuer, api_container):
    sp, other = space(), space()
    url = "/api/telephony/accounts/twilio"
    error(client.put(url, json={"account_id": "AC1", "secrets": {"nope": "x"}},
                     headers=issuer.headers(sp)), 422, "invalid_provider_account")  # fmt: skip
    body = {"account_id": "AC1", "secrets": {"auth_token": "tok-secret-1"}}
    assert client.put(url, json=body, headers=issuer.headers(sp)).status_code == 200
    got = client.get(url, headers=issuer.headers(sp))
    assert got.json()["account_id"] == "AC1" and "tok-secret-1" not in got.text
    error(client.get(url, headers=issuer.headers(other)), 404, "provider_account_not_found")
    error(client.delete(url, headers=issuer.headers(other)), 404, "provider_account_not_found")
    assert api_container.numbers.credentials(sp, "twilio").secrets["auth_token"] == "tok-secret-1"
    assert client.delete(url, headers=issuer.headers(sp)).status_code == 204
    assert api_container.numbers.credentials(sp, "twilio") is None
    error(client.get(url, headers=issuer.headers(sp)), 404, "provider_account_not_found")


def test_trunks_over_the_api_never_return_passwords(client, issuer, api_container):
    sp, other = space(), space()
    body = {"name": "pbx", "inbound": {"allowed_addresses": ["192.0.2.0/24"], "username": "pbx"},
            "inbound_password": "trunk-pass-1"}  # fmt: skip
    error(client.post("/api/telephony/trunks", json={**body, "inbound_password": None},
                      headers=issuer.headers(sp)), 422, "invalid_trunk")  # fmt: skip
    made = client.post("/api/telephony/trunks", json=body, headers=issuer.headers(sp))
    assert made.status_code == 201 and "trunk-pass-1" not in made.text
    tid = made.json()["id"]
    patched = client.patch(f"/api/telephony/trunks/{tid}", json={"name": "pbx-2"},
                           headers={**issuer.headers(sp), "If-Match": '"1"'})  # fmt: skip
    assert patched.status_code == 200 and patched.json()["name"] == "pbx-2"
    got = client.get(f"/api/telephony/trunks/{tid}", params={"min_version": 2},
                     headers=issuer.headers(sp))  # fmt: skip
    assert got.json()["inbound"]["allowed_addresses"] == ["192.0.2.0/24"]
    assert "trunk-pass-1" not in got.text
    assert client.get("/api/telephony/trunks", headers=issuer.headers(sp)).json()["total"] == 1
    h = issuer.headers(other)
    error(client.get(f"/api/telephony/trunks/{tid}", headers=h), 404, "trunk_not_found")
    error(client.patch(f"/api/telephony/trunks/{tid}", json={"name": "x"}, headers=h),
          404, "trunk_not_found")  # fmt: skip
    error(client.delete(f"/api/telephony/trunks/{tid}", headers=h), 404, "trunk_not_found")
    error(client.post(N, json={"e164": fresh_e164(), "provider": "sip", "trunk_id": tid},
                      headers=h), 404, "trunk_not_found")  # fmt: skip
    assert client.get("/api/telephony/trunks", headers=h).json()["total"] == 0
    assert api_container.numbers.trunk_secret(uuid.UUID(tid)).inbound_password == "trunk-pass-1"
    with api_container.pool.connection() as conn:
        row = conn.execute("SELECT trunk::text FROM sip_trunks WHERE id = %s", (tid,)).fetchone()
    assert "trunk-pass-1" not in row[0]
    assert (
        client.delete(f"/api/telephony/trunks/{tid}", headers=issuer.headers(sp)).status_code == 204
    )
