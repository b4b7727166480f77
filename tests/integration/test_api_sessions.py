"""Sessions (calls), costs and usage over the whole path: API -> calls event store -> relay ->
Kafka -> projectors -> read models; and simulated worker signals through ingest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.integration


def space() -> str:
    return f"space-{uuid.uuid4().hex[:10]}"


def new_agent(client, issuer, sp):
    resp = client.post("/api/agents", json={"name": "Support"}, headers=issuer.headers(sp))
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def new_session(client, issuer, sp, agent_id, **extra):
    body = {"agent_id": agent_id, "room_name": f"room-{uuid.uuid4().hex[:8]}", **extra}
    resp = client.post("/api/sessions", json=body, headers=issuer.headers(sp))
    assert resp.status_code == 201, resp.text
    return resp.json()


def read(client, issuer, sp, session_id, version):
    resp = client.get(
        f"/api/sessions/{session_id}",
        params={"min_version": version},
        headers=issuer.headers(sp),
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_session_lives_from_creation_to_its_end(client, issuer):
    sp = space()
    agent_id = new_agent(client, issuer, sp)
    created = new_session(
        client, issuer, sp, agent_id, from_number="+15550001", channel="twilio_sip"
    )
    sid, h = created["id"], issuer.headers(sp)
    assert created["status"] == "initiated" and created["agent_config_version"] == 1
    assert (
        client.patch(f"/api/sessions/{sid}", json={"status": "in_progress"}, headers=h).status_code
        == 200
    )
    for i, (speaker, text) in enumerate([("agent", "Hello!"), ("user", "Where is my order?")]):
        resp = client.post(
            f"/api/sessions/{sid}/transcripts",
            json={"speaker": speaker, "text": text, "start_ms": 1000 * i, "end_ms": 1000 * i + 800},
            headers=h,
        )
        assert resp.status_code == 201, resp.text
    usage = {
        "session_id": sid,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "kind": "llm_input_tokens",
        "quantity": 1200,
    }
    assert client.post("/api/usage/events", json=usage, headers=h).status_code == 201
    resp = client.post(
        f"/api/sessions/{sid}/transfer", json={"mode": "warm", "target": "+15559999"}, headers=h
    )
    assert resp.status_code == 202, resp.text
    end = client.post(
        f"/api/sessions/by-room/{created['room_name']}/end", json={"reason": "hangup"}, headers=h
    )
    assert end.status_code == 200, end.text
    session = read(client, issuer, sp, sid, end.json()["version"])
    assert session["status"] == "ended" and session["end_reason"] == "hangup"
    assert session["transcript_count"] == 2 and session["from_number"] == "+15550001"
    transcripts = client.get(f"/api/sessions/{sid}/transcripts", headers=h).json()
    assert [t["text"] for t in transcripts] == ["Hello!", "Where is my order?"]
    breakdown = client.get(f"/api/sessions/{sid}/cost-breakdown", headers=h).json()
    assert float(breakdown["total_usd"]) > 0
    assert client.get(f"/api/sessions/{sid}/analysis", headers=h).json()["status"] == "pending"
    late = client.post(
        f"/api/sessions/{sid}/transcripts", json={"speaker": "user", "text": "hi?"}, headers=h
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "call_ended"


def test_transfer_needs_an_answered_phone_call(client, issuer):
    sp = space()
    agent_id = new_agent(client, issuer, sp)
    sid = new_session(client, issuer, sp, agent_id, channel="twilio_sip")["id"]
    resp = client.post(
        f"/api/sessions/{sid}/transfer", json={"target": "+15559999"}, headers=issuer.headers(sp)
    )
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "call_not_started"
    web = new_session(client, issuer, sp, agent_id)["id"]
    resp = client.post(
        f"/api/sessions/{web}/transfer", json={"target": "+15559999"}, headers=issuer.headers(sp)
    )
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_a_phone_call"


def test_archived_agent_takes_no_new_session(client, issuer):
    sp = space()
    agent_id = new_agent(client, issuer, sp)
    assert client.delete(f"/api/agents/{agent_id}", headers=issuer.headers(sp)).status_code == 204
    resp = client.post("/api/sessions", json={"agent_id": agent_id}, headers=issuer.headers(sp))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "agent_archived"


def test_sessions_list_filters_and_costs_roll_up(client, issuer):
    sp = space()
    a, b = new_agent(client, issuer, sp), new_agent(client, issuer, sp)
    h = issuer.headers(sp)
    made = [new_session(client, issuer, sp, agent) for agent in (a, a, b)]
    last = None
    for s in made:
        usage = {
            "session_id": s["id"],
            "provider": "deepgram",
            "model": "nova-2",
            "kind": "stt_seconds",
            "quantity": 60,
        }
        last = client.post("/api/usage/events", json=usage, headers=h)
        assert last.status_code == 201, last.text
        read(client, issuer, sp, s["id"], last.json()["version"])
    page = client.get("/api/sessions", params={"agent_id": a}, headers=h).json()
    assert page["total"] == 2 and {i["agent_id"] for i in page["items"]} == {a}
    assert client.get("/api/sessions", params={"status": "ended"}, headers=h).json()["total"] == 0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/api/sessions", params={"since": tomorrow}, headers=h).json()["total"] == 0
    summary = client.get("/api/costs/summary", headers=h).json()
    by_agent = client.get("/api/costs/by-agent", headers=h).json()
    timeline = client.get("/api/costs/timeline", params={"granularity": "weekly"}, headers=h).json()
    assert float(summary["total_usd"]) > 0
    assert summary["call_count"] == 3
    total_by_agent = sum(float(x["cost_usd"]) for x in by_agent["agents"])
    assert abs(total_by_agent - float(summary["total_usd"])) < 1e-6
    assert (
        abs(sum(float(p["cost_usd"]) for p in timeline["points"]) - float(summary["total_usd"]))
        < 1e-6
    )


def test_no_session_route_reaches_another_space(client, issuer):
    owner, stranger = space(), space()
    s = new_session(client, issuer, owner, new_agent(client, issuer, owner))
    read(client, issuer, owner, s["id"], 1)
    h, sid, room = issuer.headers(stranger), s["id"], s["room_name"]
    for method, url, body in [
        ("GET", f"/api/sessions/{sid}", None),
        ("PATCH", f"/api/sessions/{sid}", {"status": "in_progress"}),
        ("GET", f"/api/sessions/{sid}/transcripts", None),
        ("POST", f"/api/sessions/{sid}/transcripts", {"speaker": "user", "text": "x"}),
        ("GET", f"/api/sessions/{sid}/analysis", None),
        ("GET", f"/api/sessions/{sid}/cost-breakdown", None),
        ("POST", f"/api/sessions/{sid}/transfer", {"target": "+1"}),
        ("GET", f"/api/sessions/by-room/{room}", None),
        ("POST", f"/api/sessions/by-room/{room}/end", {}),
        ("POST", f"/api/sessions/by-room/{room}/transcripts", {"speaker": "user", "text": "x"}),
        (
            "POST",
            "/api/usage/events",
            {
                "session_id": sid,
                "provider": "x",
                "model": "y",
                "kind": "tts_characters",
                "quantity": 1,
            },
        ),
    ]:
        resp = client.request(method, url, json=body, headers=h)
        assert resp.status_code == 404, (method, url, resp.text)
    assert client.get("/api/sessions", headers=h).json()["total"] == 0
    assert float(client.get("/api/costs/summary", headers=h).json()["total_usd"]) == 0
    assert client.get("/api/costs/timeline", headers=h).json()["points"] == []
    assert client.get("/api/costs/by-agent", headers=h).json()["agents"] == []
    assert (
        client.post("/api/sessions", json={"agent_id": s["agent_id"]}, headers=h).status_code == 404
    )
    assert read(client, issuer, owner, sid, 1)["status"] == "initiated"


def test_session_routes_require_a_token(client):
    sid = uuid.uuid4()
    for method, url in [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", f"/api/sessions/{sid}"),
        ("GET", "/api/costs/summary"),
        ("GET", "/api/costs/timeline"),
        ("GET", "/api/costs/by-agent"),
        ("POST", "/api/usage/events"),
        ("GET", "/api/sessions/by-room/r"),
    ]:
        assert client.request(method, url, json={}).status_code == 401, (method, url)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "agent_id"),
        ({"agent_id": "not-a-uuid"}, "agent_id"),
        ({"agent_id": str(uuid.uuid4()), "channel": "carrier-pigeon"}, "channel"),
    ],
)
def test_bad_session_input_gets_a_422(client, issuer, body, field):
    resp = client.post("/api/sessions", json=body, headers=issuer.headers(space()))
    assert resp.status_code == 422 and field in resp.text


def test_numbers_out_of_range_get_a_422_and_nothing_is_written(client, issuer):
    """A quantity or an offset no column can hold is refused up front (domain/numbers.py);
    the largest accepted values are projected (the read model reaches their version)."""
    sp = space()
    agent_id = new_agent(client, issuer, sp)
    created = new_session(client, issuer, sp, agent_id)
    sid, h = created["id"], issuer.headers(sp)
    usage = {"session_id": sid, "provider": "openai", "model": "gpt-4o-mini",
             "kind": "llm_input_tokens"}  # fmt: skip
    for quantity in (1e300, 1_000_000_001, -1):
        resp = client.post("/api/usage/events", json={**usage, "quantity": quantity}, headers=h)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["details"][0]["loc"][-1] == "quantity"
    for start_ms in (2**32, 2**63):
        resp = client.post(
            f"/api/sessions/{sid}/transcripts",
            json={"speaker": "user", "text": "hi", "start_ms": start_ms},
            headers=h,
        )
        assert resp.status_code == 422 and "start_ms" in resp.text
    resp = client.patch(
        f"/api/sessions/{sid}", json={"status": "ended", "duration_ms": 2**32}, headers=h
    )
    assert resp.status_code == 422 and "duration_ms" in resp.text
    # nothing of the above was stored: the next write is the session's next version
    ok = client.post("/api/usage/events", json={**usage, "quantity": 1e9}, headers=h)
    assert ok.status_code == 201, ok.text
    assert ok.json()["version"] == created["version"] + 1
    said = client.post(
        f"/api/sessions/{sid}/transcripts",
        json={"speaker": "user", "text": "hi", "start_ms": 2**32 - 1, "end_ms": 2**32 - 1},
        headers=h,
    )
    assert said.status_code == 201, said.text
    session = read(client, issuer, sp, sid, said.json()["version"])
    assert session["version"] == created["version"] + 2 and session["transcript_count"] == 1
    lines = client.get(f"/api/sessions/{sid}/cost-breakdown", headers=h).json()["lines"]
    assert [(line["quantity"], line["usage_count"]) for line in lines] == [(1e9, 1)]
    transcripts = client.get(f"/api/sessions/{sid}/transcripts", headers=h).json()
    assert [t["start_ms"] for t in transcripts] == [2**32 - 1]
