"""The agents API over the whole event-sourced path: API -> event store -> relay -> Kafka ->
Faust projectors -> Postgres read model and ClickHouse."""

from __future__ import annotations

import uuid

import pytest

from tests.support.processes import eventually

pytestmark = pytest.mark.integration

TOOL = {
    "name": "lookup_order",
    "description": "Look an order up by its number",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    "method": "POST",
    "url": "https://tools.example.com/orders",
    "headers": {"X-Api-Key": "k"},
    "timeout_seconds": 5,
}


def space() -> str:
    return f"space-{uuid.uuid4().hex[:10]}"


def create(client, issuer, space_id, **config):
    body = {"name": "Support", "system_prompt": "Be kind.", "first_message": "Hello!", **config}
    resp = client.post("/api/agents", json=body, headers=issuer.headers(space_id))
    assert resp.status_code == 201, resp.text
    return resp.json()


def read(client, issuer, space_id, agent_id, version):
    resp = client.get(
        f"/api/agents/{agent_id}",
        params={"min_version": version},
        headers=issuer.headers(space_id),
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_created_agent_reaches_the_read_model_and_clickhouse(client, issuer, api_container):
    sp = space()
    created = create(
        client, issuer, sp, tools=[TOOL], llm={"provider": "openai", "model": "gpt-4o"}
    )
    assert created["version"] == 1 and created["config_version"] == 1
    got = read(client, issuer, sp, created["id"], 1)
    assert got["name"] == "Support" and got["tools"][0]["name"] == "lookup_order"
    assert {k: got["llm"][k] for k in ("provider", "model", "temperature")} == {
        "provider": "openai",
        "model": "gpt-4o",
        "temperature": 0.7,
    }

    def in_clickhouse():
        ch = api_container.clickhouse()
        try:
            return ch.execute(
                "SELECT name, llm_provider, tools_count, version FROM agents FINAL "
                "WHERE agent_id = %(id)s",
                {"id": created["id"]},
            )
        finally:
            ch.disconnect()

    rows = eventually(in_clickhouse, timeout=60, what="the agent in ClickHouse")
    assert rows == [("Support", "openai", 1, 1)]


def test_patch_merges_bumps_config_version_and_reads_its_own_write(client, issuer):
    sp = space()
    created = create(client, issuer, sp)
    resp = client.patch(
        f"/api/agents/{created['id']}",
        json={"llm": {"temperature": 0.1}, "name": "Sales"},
        headers={**issuer.headers(sp), "If-Match": '"1"'},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["ETag"] == '"2"'
    got = read(client, issuer, sp, created["id"], 2)
    assert got["name"] == "Sales" and got["llm"]["temperature"] == 0.1
    assert got["config_version"] == 2 and got["system_prompt"] == "Be kind."


def test_stale_if_match_is_refused_and_writes_nothing(client, issuer):
    sp = space()
    created = create(client, issuer, sp)
    headers = {**issuer.headers(sp), "If-Match": '"1"'}
    assert (
        client.patch(
            f"/api/agents/{created['id']}", json={"name": "A"}, headers=headers
        ).status_code
        == 200
    )
    resp = client.patch(f"/api/agents/{created['id']}", json={"name": "B"}, headers=headers)
    assert resp.status_code == 412
    assert resp.json()["error"]["code"] == "version_mismatch"
    assert read(client, issuer, sp, created["id"], 2)["name"] == "A"


def test_idempotency_key_replays_the_first_result_and_writes_once(client, issuer, api_container):
    sp = space()
    headers = {**issuer.headers(sp), "Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post("/api/agents", json={"name": "Once"}, headers=headers)
    second = client.post("/api/agents", json={"name": "Once"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    other = client.post("/api/agents", json={"name": "Other"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    read(client, issuer, sp, first.json()["id"], 1)
    listing = client.get("/api/agents", headers=issuer.headers(sp)).json()
    assert [a["name"] for a in listing["items"]] == ["Once"] and listing["total"] == 1


def test_delete_archives_hides_from_listing_and_refuses_changes(client, issuer):
    sp = space()
    keep = create(client, issuer, sp, name="Keep")
    gone = create(client, issuer, sp, name="Gone")
    resp = client.delete(f"/api/agents/{gone['id']}", headers=issuer.headers(sp))
    assert resp.status_code == 204
    archived = read(client, issuer, sp, gone["id"], 2)
    assert archived["archived"] is True and archived["archived_at"]
    read(client, issuer, sp, keep["id"], 1)
    names = [
        a["name"] for a in client.get("/api/agents", headers=issuer.headers(sp)).json()["items"]
    ]
    assert names == ["Keep"]
    with_archived = client.get(
        "/api/agents", params={"include_archived": "true"}, headers=issuer.headers(sp)
    ).json()
    assert {a["name"] for a in with_archived["items"]} == {"Keep", "Gone"}
    resp = client.patch(f"/api/agents/{gone['id']}", json={"name": "X"}, headers=issuer.headers(sp))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "agent_archived"


def test_listing_paginates_and_filters(client, issuer):
    sp = space()
    made = [
        create(client, issuer, sp, name=f"Agent {i}", language="de" if i % 2 else "en")
        for i in range(5)
    ]
    for agent in made:
        read(client, issuer, sp, agent["id"], 1)
    page = client.get(
        "/api/agents", params={"limit": 2, "offset": 0}, headers=issuer.headers(sp)
    ).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    assert [a["name"] for a in page["items"]] == ["Agent 4", "Agent 3"]  # newest first
    german = client.get("/api/agents", params={"language": "de"}, headers=issuer.headers(sp)).json()
    assert {a["name"] for a in german["items"]} == {"Agent 1", "Agent 3"}
    named = client.get("/api/agents", params={"name": "agent 2"}, headers=issuer.headers(sp)).json()
    assert [a["name"] for a in named["items"]] == ["Agent 2"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "llm": {"temperature": 5}}, "temperature"),
        ({"name": "x", "tools": [{**TOOL, "url": "not a url"}]}, "url"),
        ({"name": "x", "tools": [TOOL, TOOL]}, "tool names must be unique"),
        ({"name": "x", "max_call_duration_seconds": 1}, "max_call_duration_seconds"),
        ({"name": "x", "unknown": 1}, "unknown"),
        ({"name": "x", "webhooks": {"post_call_url": "ftp://x"}}, "post_call_url"),
    ],
)
def test_bad_input_gets_a_422_and_writes_nothing(client, issuer, body, field):
    sp = space()
    resp = client.post("/api/agents", json=body, headers=issuer.headers(sp))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request" and error["request_id"]
    assert field in resp.text
    listing = client.get(
        "/api/agents", params={"include_archived": "true"}, headers=issuer.headers(sp)
    )
    assert listing.json()["total"] == 0


def test_bad_patch_gets_a_422_and_changes_nothing(client, issuer):
    sp = space()
    created = create(client, issuer, sp)
    resp = client.patch(
        f"/api/agents/{created['id']}",
        json={"llm": {"temperature": -1}},
        headers=issuer.headers(sp),
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_config"
    resp = client.patch(
        f"/api/agents/{created['id']}", json={"nope": 1}, headers=issuer.headers(sp)
    )
    assert resp.status_code == 422
    resp = client.patch(
        f"/api/agents/{created['id']}",
        json={"name": "x"},
        headers={**issuer.headers(sp), "If-Match": "abc"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_if_match"
    got = read(client, issuer, sp, created["id"], 1)
    assert got["version"] == 1 and got["llm"]["temperature"] == 0.7


def test_no_route_touches_another_spaces_agent(client, issuer):
    owner, stranger = space(), space()
    agent = create(client, issuer, owner)
    read(client, issuer, owner, agent["id"], 1)
    h = issuer.headers(stranger)
    url = f"/api/agents/{agent['id']}"
    assert client.get(url, headers=h).status_code == 404
    assert client.get("/api/agents", headers=h).json()["total"] == 0
    assert client.patch(url, json={"name": "Hijacked"}, headers=h).status_code == 404
    assert client.delete(url, headers=h).status_code == 404
    got = read(client, issuer, owner, agent["id"], 1)
    assert got["name"] == "Support" and got["archived"] is False


def test_every_api_route_requires_a_token(client):
    some = str(uuid.uuid4())
    for method, url in [
        ("GET", "/api/agents"),
        ("POST", "/api/agents"),
        ("GET", f"/api/agents/{some}"),
        ("PATCH", f"/api/agents/{some}"),
        ("DELETE", f"/api/agents/{some}"),
    ]:
        resp = client.request(method, url, json={"name": "x"})
        assert resp.status_code == 401, (method, url)
        assert resp.json()["error"]["code"] == "unauthenticated"


def test_unknown_agent_is_a_404_with_a_stable_code(client, issuer):
    resp = client.get(f"/api/agents/{uuid.uuid4()}", headers=issuer.headers(space()))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "agent_not_found"
    resp = client.get("/api/agents/not-a-uuid", headers=issuer.headers(space()))
    assert resp.status_code == 422


def test_health_reports_each_dependency(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"postgres", "kafka", "clickhouse", "consumers"}
    assert all(dep["ok"] for dep in body["dependencies"].values())
    stores = body["dependencies"]["postgres"]["applications"]
    assert set(stores) == {"agents", "calls", "webhooks", "numbers", "billing"}
    assert all(store["relay_lag_events"] >= 0 for store in stores.values())
    queue = body["dependencies"]["postgres"]["webhook_queue"]
    assert queue["pending"] >= queue["due"] >= 0


def test_openapi_describes_the_agent_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/agents", "/api/agents/{agent_id}", "/health"} <= set(spec["paths"])


def test_an_agent_whose_provider_has_no_key_is_refused_when_saved(client, issuer):
    sp = space()
    body = {"name": "Needs a key", "stt": {"provider": "deepgram"}}
    resp = client.post("/api/agents", json=body, headers=issuer.headers(sp))
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "provider_unavailable"
    assert "VOXAGENT_PROVIDERS__DEEPGRAM_API_KEY" in error["message"]
    unknown = client.post(
        "/api/agents", json={"name": "x", "tts": {"provider": "nope"}}, headers=issuer.headers(sp)
    )
    assert unknown.json()["error"]["code"] == "provider_unavailable"
    made = client.post("/api/agents", json={"name": "ok"}, headers=issuer.headers(sp)).json()
    patched = client.patch(
        f"/api/agents/{made['id']}", json={"llm": {"provider": "anthropic"}},
        headers=issuer.headers(sp),
    )  # fmt: skip
    assert patched.status_code == 422
    assert patched.json()["error"]["code"] == "provider_unavailable"
    assert patched.json()["error"]["message"].count("ANTHROPIC_API_KEY") == 1
    got = client.get(f"/api/agents/{made['id']}?min_version=1", headers=issuer.headers(sp))
    assert got.json()["llm"]["provider"] == "scripted"  # the refused change left nothing
    eventually(lambda: client.get("/api/agents", headers=issuer.headers(sp)).json()["total"] == 1)
