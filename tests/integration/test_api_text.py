"""Every accepted command is projectable: text our stores cannot hold (NUL, lone surrogates,
non-finite numbers, overlong values) is refused at the boundary, on every route, with a 4xx and
nothing written — in bodies, query parameters, path parameters and headers alike.

Bodies are sent as ASCII JSON (``\\u0000``, ``\\ud800`` escapes), the way any JSON client can send
them; "nothing written" is checked on the event store itself (no new notification in any
application) and on the tables written outside it (webhook deliveries)."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from adapters.api.app import create_app

pytestmark = pytest.mark.integration

NUL, SURROGATE = "a\x00b", "a\ud800b"
BAD_TEXT = [NUL, SURROGATE]
REFUSED_TYPES = {
    "unstorable_text",
    "string_unicode",
    "invalid_utf8",
    "json_too_deep",
    "json_too_large",
}
TOOL = {
    "name": "lookup",
    "description": "Look an order up",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    "url": "https://tools.example.com/orders",
}


def space() -> str:
    return f"text-{uuid.uuid4().hex[:10]}"


def send(client: Any, method: str, path: str, sp: str, body: Any = None, **kw: Any) -> Any:
    """``body`` as ASCII JSON: lone surrogates travel as ``\\ud800`` escapes."""
    headers = {**kw.pop("headers", {}), **client.issuer.headers(sp)}
    if body is not None:
        headers["content-type"] = "application/json"
        kw["content"] = json.dumps(body).encode()
    return client.request(method, path, headers=headers, **kw)


def positions(container: Any) -> tuple[Any, ...]:
    return tuple(app.recorder.max_notification_id() for app in container.applications())


def assert_refused(resp: Any, status: int = 422) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request", error
    assert {d["type"] for d in error["details"]} & REFUSED_TYPES, error
    return error


@pytest.fixture
def api(client: Any, issuer: Any, api_container: Any) -> Any:
    client.issuer = issuer
    client.container = api_container
    return client


@pytest.fixture
def agent(api: Any) -> tuple[str, str]:
    sp = space()
    resp = send(api, "POST", "/api/agents", sp, {"name": "Support"})
    assert resp.status_code == 201, resp.text
    return sp, resp.json()["id"]


@pytest.fixture
def session(api: Any, agent: tuple[str, str]) -> tuple[str, str, str]:
    sp, agent_id = agent
    room = f"room-{uuid.uuid4().hex[:8]}"
    resp = send(api, "POST", "/api/sessions", sp, {"agent_id": agent_id, "room_name": room})
    assert resp.status_code == 201, resp.text
    return sp, resp.json()["id"], room


# -- bodies ---------------------------------------------------------------------------------
def tool(**kw: Any) -> dict[str, Any]:
    return {"name": "A", "tools": [{**TOOL, **kw}]}


def schema(**kw: Any) -> dict[str, Any]:
    return tool(parameters={"type": "object", "properties": {}, **kw})


AGENT_BODIES = {
    "name": lambda bad: {"name": bad},
    "description": lambda bad: {"name": "A", "description": bad},
    "system_prompt": lambda bad: {"name": "A", "system_prompt": bad},
    "first_message": lambda bad: {"name": "A", "first_message": bad},
    "silence_prompt": lambda bad: {"name": "A", "silence_prompt": bad},
    "variables value": lambda bad: {"name": "A", "variables": {"who": bad}},
    "variables key": lambda bad: {"name": "A", "variables": {bad: "x"}},
    "stt.model": lambda bad: {"name": "A", "stt": {"model": bad}},
    "tts.voice": lambda bad: {"name": "A", "tts": {"voice": bad}},
    "llm.fallback_reply": lambda bad: {"name": "A", "llm": {"fallback_reply": bad}},
    "llm.script reply": lambda bad: {"name": "A", "llm": {"script": [{"match": "x",
                                                                      "reply": bad}]}},
    "llm.script arguments": lambda bad: {**tool(), "llm": {"script": [
        {"match": "x", "tool": "lookup", "arguments": {"order": [bad]}}]}},
    "tool description": lambda bad: tool(description=bad),
    "tool schema": lambda bad: schema(properties={"o": {"type": "string", "description": bad}}),
    "tool schema key": lambda bad: schema(properties={bad: {"type": "string"}}),
    "tool header": lambda bad: tool(headers={"X-K": bad}),
    "tool url": lambda bad: tool(url="https://t.example.com/" + bad),
    "webhook url": lambda bad: {"name": "A", "webhooks": {"pre_call_url": "https://h.ex/" + bad}},
}  # fmt: skip


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", sorted(AGENT_BODIES))
def test_agent_create_refuses_unstorable_text_in_every_field(api, field, bad):
    sp, before = space(), positions(api.container)
    assert_refused(send(api, "POST", "/api/agents", sp, AGENT_BODIES[field](bad)))
    assert positions(api.container) == before
    assert send(api, "GET", "/api/agents", sp).json()["total"] == 0


OVERLONG_AGENTS = {
    "system_prompt": {"name": "A", "system_prompt": "x" * 100_001},
    "variables (count)": {"name": "A", "variables": {f"v{i}": "x" for i in range(201)}},
    "variables (size)": {"name": "A", "variables": {f"v{i}": "x" * 9_000 for i in range(10)}},
    "tool schema (size)": {
        "name": "A",
        "tools": [
            {
                **TOOL,
                "parameters": {"type": "object", "properties": {}, "description": "x" * 70_000},
            }
        ],
    },  # fmt: skip
    "tool schema (depth)": {
        "name": "A",
        "tools": [
            {
                **TOOL,
                "parameters": {
                    "type": "object",
                    "properties": {},
                    "x": json.loads("[" * 40 + "]" * 40),
                },
            }
        ],
    },  # fmt: skip
    "whole configuration": {
        "name": "A",
        "tools": [
            {
                **TOOL,
                "name": f"t{i}",
                "parameters": {"type": "object", "properties": {}, "description": "x" * 60_000},
            }
            for i in range(10)
        ],
    },  # fmt: skip
    "a number": {
        "name": "A",
        "tools": [
            {**TOOL, "parameters": {"type": "object", "properties": {}, "maximum": float("inf")}}
        ],
    },  # fmt: skip
}


@pytest.mark.parametrize("what", sorted(OVERLONG_AGENTS))
def test_agent_create_refuses_overlong_values_and_unstorable_numbers(api, what):
    sp, before = space(), positions(api.container)
    body = OVERLONG_AGENTS[what]
    resp = send(api, "POST", "/api/agents", sp, body) if what != "a number" else api.post(
        "/api/agents", content=json.dumps(body).encode(),  # Infinity: what Python's JSON allows
        headers={**api.issuer.headers(sp), "content-type": "application/json"},
    )  # fmt: skip
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
    assert positions(api.container) == before


AGENT_PATCHES = {
    "name": lambda bad: {"name": bad},
    "description": lambda bad: {"description": bad},
    "system_prompt": lambda bad: {"system_prompt": bad},
    "variables": lambda bad: {"variables": {"k": bad}},
    "llm": lambda bad: {"llm": {"model": bad}},
    "tts": lambda bad: {"tts": {"voice": bad}},
    "tools": lambda bad: {"tools": [{**TOOL, "description": bad}]},
}


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", sorted(AGENT_PATCHES))
def test_agent_patch_refuses_unstorable_text(api, agent, field, bad):
    sp, agent_id = agent
    before = positions(api.container)
    assert_refused(send(api, "PATCH", f"/api/agents/{agent_id}", sp, AGENT_PATCHES[field](bad)))
    assert positions(api.container) == before
    got = send(api, "GET", f"/api/agents/{agent_id}", sp, params={"min_version": 1}).json()
    assert got["version"] == 1 and got["name"] == "Support"


def test_agent_patch_refuses_a_configuration_that_outgrows_its_bound(api, agent):
    sp, agent_id = agent
    before = positions(api.container)
    big = {"type": "object", "properties": {}, "description": "x" * 60_000}
    tools = [{**TOOL, "name": f"t{i}", "parameters": big} for i in range(10)]
    resp = send(api, "PATCH", f"/api/agents/{agent_id}", sp, {"tools": tools})
    assert resp.status_code == 422, resp.text
    assert positions(api.container) == before


SESSION_WRITES = {
    "create room_name": lambda s, bad: ("POST", "/api/sessions", {"agent_id": s["agent"],
                                                                 "room_name": bad}),
    "create from_number": lambda s, bad: ("POST", "/api/sessions", {"agent_id": s["agent"],
                                                                   "from_number": bad}),
    "transcript text": lambda s, bad: ("POST", f"/api/sessions/{s['id']}/transcripts",
                                       {"speaker": "user", "text": bad}),
    "transcript turn_id": lambda s, bad: ("POST", f"/api/sessions/{s['id']}/transcripts",
                                          {"speaker": "user", "text": "hi", "turn_id": bad}),
    "transcript by room": lambda s, bad: ("POST", f"/api/sessions/by-room/{s['room']}/transcripts",
                                          {"speaker": "agent", "text": bad}),
    "end by room": lambda s, bad: ("POST", f"/api/sessions/by-room/{s['room']}/end",
                                   {"reason": bad}),
    "patch end_reason": lambda s, bad: ("PATCH", f"/api/sessions/{s['id']}",
                                        {"status": "ended", "end_reason": bad}),
    "transfer target": lambda s, bad: ("POST", f"/api/sessions/{s['id']}/transfer",
                                       {"target": bad}),
    "usage provider": lambda s, bad: ("POST", "/api/usage/events", {
        "session_id": s["id"], "provider": bad, "model": "m", "kind": "stt_seconds",
        "quantity": 1}),
    "usage model": lambda s, bad: ("POST", "/api/usage/events", {
        "session_id": s["id"], "provider": "p", "model": bad, "kind": "stt_seconds",
        "quantity": 1}),
    "livekit token": lambda s, bad: ("POST", "/api/livekit/token", {
        "agent_id": s["agent"], "participant_name": bad}),
    "telephony stream": lambda s, bad: ("POST", "/api/telephony/streams", {
        "agent_id": s["agent"], "channel": "voximplant", "from_number": bad}),
}  # fmt: skip


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "surrogate"])
@pytest.mark.parametrize("route", sorted(SESSION_WRITES))
def test_session_writes_refuse_unstorable_text(api, agent, route, bad):
    sp, agent_id = agent
    room = f"room-{uuid.uuid4().hex[:8]}"
    made = send(api, "POST", "/api/sessions", sp, {"agent_id": agent_id, "room_name": room})
    assert made.status_code == 201, made.text
    s = {"agent": agent_id, "id": made.json()["id"], "room": room}
    before = positions(api.container)
    method, path, body = SESSION_WRITES[route](s, bad)
    assert_refused(send(api, method, path, sp, body))
    assert positions(api.container) == before


def test_a_transcript_is_refused_not_turned_into_replacement_characters(api, session):
    sp, sid, _room = session
    resp = send(api, "POST", f"/api/sessions/{sid}/transcripts", sp,
                {"speaker": "user", "text": "before\x00after"})  # fmt: skip
    assert_refused(resp)
    ok = send(api, "POST", f"/api/sessions/{sid}/transcripts", sp,
              {"speaker": "user", "text": "tab\tand \ufffd and \U0001f600"})  # fmt: skip
    assert ok.status_code == 201, ok.text
    send(api, "GET", f"/api/sessions/{sid}", sp, params={"min_version": ok.json()["version"]})
    texts = [t["text"] for t in send(api, "GET", f"/api/sessions/{sid}/transcripts", sp).json()]
    assert texts == ["tab\tand \ufffd and \U0001f600"]


def webhook(api: Any, sp: str) -> str:
    resp = send(api, "POST", "/api/webhooks", sp, {"url": "https://hooks.example.com/in"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


WEBHOOK_WRITES = {
    "create description": lambda eid, bad: ("POST", "/api/webhooks", {
        "url": "https://hooks.example.com/in", "description": bad}),
    "create url": lambda eid, bad: ("POST", "/api/webhooks", {
        "url": "https://hooks.example.com/" + bad}),
    "create event_types": lambda eid, bad: ("POST", "/api/webhooks", {
        "url": "https://hooks.example.com/in", "event_types": [bad]}),
    "patch description": lambda eid, bad: ("PATCH", f"/api/webhooks/{eid}", {"description": bad}),
    "patch url": lambda eid, bad: ("PATCH", f"/api/webhooks/{eid}", {
        "url": "https://hooks.example.com/" + bad}),
    "patch event_types": lambda eid, bad: ("PATCH", f"/api/webhooks/{eid}", {"event_types": [bad]}),
    "rotate secret": lambda eid, bad: ("POST", f"/api/webhooks/{eid}/rotate-secret",
                                       {"secret": bad}),
    "test message": lambda eid, bad: ("POST", f"/api/webhooks/{eid}/test", {"message": bad}),
}  # fmt: skip


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "surrogate"])
@pytest.mark.parametrize("route", sorted(WEBHOOK_WRITES))
def test_webhook_writes_refuse_unstorable_text(api, route, bad):
    sp = space()
    eid = webhook(api, sp)
    before = positions(api.container)
    method, path, body = WEBHOOK_WRITES[route](eid, bad)
    assert_refused(send(api, method, path, sp, body))
    assert positions(api.container) == before
    deliveries = send(api, "GET", f"/api/webhooks/{eid}/deliveries", sp).json()
    assert deliveries["total"] == 0


# -- URLs and headers ------------------------------------------------------------------------
URLS = [
    "/api/agents?name=%00",
    "/api/agents?name=caf%FF",
    "/api/agents?language=%ED%A0%80",  # an encoded surrogate is not UTF-8
    "/api/agents?%00=1",
    "/api/agents/%00",
    "/api/sessions/by-room/a%00b",
    "/api/sessions/by-room/a%FFb",
    "/api/sessions?status=%00",
    "/api/webhooks/{eid}/deliveries?event_type=%00",
    "/api/webhooks/{eid}/deliveries?event_type=agent.%C0%AE",
    "/api/costs/summary?since=%00",
]


@pytest.mark.parametrize("url", URLS)
def test_unstorable_text_in_the_url_is_a_422_on_every_route(api, url):
    sp = space()
    eid = webhook(api, sp) if "{eid}" in url else ""
    error = assert_refused(send(api, "GET", url.format(eid=eid), sp))
    assert error["details"][0]["loc"][0] in ("path", "query")


@pytest.mark.parametrize("path", [
    "/api/sessions/by-room/a%00b/transcripts", "/api/sessions/by-room/a%00b/end",
    "/api/agents?x=%00",
])  # fmt: skip
def test_writes_with_an_unstorable_url_write_nothing(api, agent, path):
    sp, _agent_id = agent
    before = positions(api.container)
    body = {"speaker": "user", "text": "hi"} if path.endswith("transcripts") else {"name": "A"}
    assert_refused(send(api, "POST", path, sp, body))
    assert positions(api.container) == before


def test_a_header_holding_nul_is_refused_and_never_echoed(api):
    resp = api.get("/health", headers={"X-Request-Id": "abc\x00def"})
    error = assert_refused(resp)
    assert error["details"][0]["loc"] == ["header", "x-request-id"]
    assert "\x00" not in resp.headers["x-request-id"]


# -- a real server: the connection stays usable after a refusal ------------------------------
@pytest.fixture
def server(api_container: Any, pipeline: dict) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(api_container), log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        thread.join(0.01)
    yield port
    srv.should_exit = True
    thread.join(10)


def _exchange(conn: socket.socket, request: bytes) -> tuple[int, bytes]:
    conn.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split(b" ")[1]), body


def test_the_keep_alive_connection_serves_the_next_request_after_a_refusal(server, issuer):
    auth = issuer.headers(space())["Authorization"].encode()
    get = b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"
    body = b'{"speaker":"user","text":"hi"}'
    post = (b"POST /api/sessions/by-room/a%00b/transcripts HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: " + auth + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    with socket.create_connection(("127.0.0.1", server), timeout=30) as conn:
        assert _exchange(conn, get % b"/api/agents?name=%00")[0] == 422
        assert _exchange(conn, get % b"/api/sessions/by-room/a%00b")[0] == 422
        assert _exchange(conn, post)[0] == 422
        status, payload = _exchange(conn, get % b"/api/agents?name=ok")
        assert status == 200 and json.loads(payload)["total"] == 0


# -- provider webhooks -----------------------------------------------------------------------
TWILIO_TOKEN = "twilio-test-auth-token-0123456789ab"


@pytest.mark.parametrize("form", [
    b"CallSid=CA" + b"1" * 32 + b"&From=%2B1555%00&To=%2B15550004444",
    b"CallSid=CA" + b"1" * 32 + b"&From=%2B1555%FF&To=%2B15550004444",
    b"CallSid=CA" + b"1" * 32 + b"&From=\xff",
])  # fmt: skip
def test_twilio_voice_refuses_a_form_with_unstorable_text(api, agent, monkeypatch, form):
    from pydantic import SecretStr

    monkeypatch.setattr(api.container.settings.telephony, "twilio_auth_token",
                        SecretStr(TWILIO_TOKEN))  # fmt: skip
    before = positions(api.container)
    resp = api.post("/api/twilio/voice", content=form,
                    headers={"content-type": "application/x-www-form-urlencoded",
                             "X-Twilio-Signature": "irrelevant"})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_form"
    assert positions(api.container) == before


def test_a_livekit_webhook_ingest_would_refuse_is_refused_at_once(api):
    from livekit import api as lk
    from livekit.protocol import models

    from tests.integration.test_livekit_api import signed

    metadata = json.dumps({"call_id": str(uuid.uuid4()), "space_id": space(), "agent_id": "x",
                           "agent_config_version": 1, "room_name": "r"})  # fmt: skip
    event = lk.WebhookEvent(
        event="room_finished", id="EV_\x00", created_at=1_700_000_000,
        room=models.Room(name="r", metadata=metadata, creation_time=1_700_000_000),
    )  # fmt: skip
    body, token = signed(api.container.settings, event)
    resp = api.post("/api/livekit/webhook", content=body, headers={"Authorization": token})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "unstorable_text"
    bad_utf8 = api.post("/api/livekit/webhook", content=b'{"id": "\xff"}',
                        headers={"Authorization": token})  # fmt: skip
    assert bad_utf8.status_code == 400 and bad_utf8.json()["error"]["code"] == "invalid_body"
