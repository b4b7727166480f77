"""Idempotency-Key over the real API and PostgreSQL: one key space per space across every route;
replaying a request with its key answers what the first answer said and writes nothing more;
concurrent requests with one key write once and answer alike."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit import api

pytestmark = pytest.mark.integration

Request = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


def space() -> str:
    return f"idem-{uuid.uuid4().hex[:10]}"


def key() -> str:
    return f"key-{uuid.uuid4()}"


@dataclass
class Space:
    """A fresh space and what a route needs to exist before it is called."""

    client: Any
    issuer: Any
    id: str = field(default_factory=space)

    def headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return {**self.issuer.headers(self.id), **extra}

    def call(self, request: Request, idempotency_key: str | None = None) -> Any:
        method, path, body = request
        return self.client.request(method, path, json=body, headers=self.headers(idempotency_key))

    def ok(self, request: Request) -> dict[str, Any]:
        resp = self.call(request)
        assert resp.is_success, resp.text
        return resp.json()

    def agent(self) -> str:
        return self.ok(("POST", "/api/agents", {"name": "Support"}))["id"]

    def session(self, started: bool = True, channel: str = "web") -> dict[str, Any]:
        room = f"room-{uuid.uuid4().hex[:8]}"
        body = {"agent_id": self.agent(), "room_name": room, "channel": channel}
        made = self.ok(("POST", "/api/sessions", body))
        if started:
            self.ok(("PATCH", f"/api/sessions/{made['id']}", {"status": "in_progress"}))
        return made

    def endpoint(self) -> str:
        body = {"url": f"https://hooks.example.com/{uuid.uuid4().hex[:6]}"}
        return self.ok(("POST", "/api/webhooks", body))["id"]

    def failed_delivery(self, api_container: Any) -> tuple[str, str]:
        """An endpoint and a delivery that failed for good (set as the sender would: no
        sender runs in this module)."""
        endpoint = self.endpoint()
        queued = self.ok(("POST", f"/api/webhooks/{endpoint}/test", {"message": "hi"}))
        with api_container.pool.connection() as conn:
            conn.execute(
                "UPDATE webhook_deliveries SET status = 'failed', completed_at = now(), "
                "last_error = 'http_500' WHERE id = %s",
                (queued["delivery_id"],),
            )
        return endpoint, queued["delivery_id"]


TRANSCRIPT = {"speaker": "user", "text": "Where is my order?", "start_ms": 0, "end_ms": 900}

# route -> what to call, given a fresh space (and the API's container)
ROUTES: dict[str, Callable[[Space, Any], Request]] = {
    "create agent": lambda s, c: ("POST", "/api/agents", {"name": "Once"}),
    "update agent": lambda s, c: ("PATCH", f"/api/agents/{s.agent()}", {"name": "Renamed"}),
    "archive agent": lambda s, c: ("DELETE", f"/api/agents/{s.agent()}", None),
    "create session": lambda s, c: ("POST", "/api/sessions", {"agent_id": s.agent()}),
    "start session": lambda s, c: (
        "PATCH", f"/api/sessions/{s.session(started=False)['id']}", {"status": "in_progress"}
    ),
    "end session": lambda s, c: (
        "PATCH", f"/api/sessions/{s.session()['id']}", {"status": "ended", "end_reason": "bye"}
    ),
    "transcript": lambda s, c: (
        "POST", f"/api/sessions/{s.session()['id']}/transcripts", {**TRANSCRIPT, "turn_id": "t1"}
    ),
    "transcript without turn_id": lambda s, c: (
        "POST", f"/api/sessions/{s.session()['id']}/transcripts", TRANSCRIPT
    ),
    "transcript by room": lambda s, c: (
        "POST", f"/api/sessions/by-room/{s.session()['room_name']}/transcripts", TRANSCRIPT
    ),
    "end by room": lambda s, c: (
        "POST", f"/api/sessions/by-room/{s.session()['room_name']}/end", {"reason": "hangup"}
    ),
    "transfer": lambda s, c: (
        "POST", f"/api/sessions/{s.session(channel='twilio_sip')['id']}/transfer",
        {"mode": "warm", "target": "+15559999"}
    ),
    "usage event": lambda s, c: ("POST", "/api/usage/events", {
        "session_id": s.session()["id"], "provider": "openai", "model": "gpt-4o-mini",
        "kind": "llm_input_tokens", "quantity": 100,
    }),
    "create webhook": lambda s, c: ("POST", "/api/webhooks", {"url": "https://hooks.example.com/a"}),
    "update webhook": lambda s, c: (
        "PATCH", f"/api/webhooks/{s.endpoint()}", {"description": "CRM"}
    ),
    "delete webhook": lambda s, c: ("DELETE", f"/api/webhooks/{s.endpoint()}", None),
    "rotate secret": lambda s, c: (
        "POST", f"/api/webhooks/{s.endpoint()}/rotate-secret", {"overlap_seconds": 60}
    ),
    "test webhook": lambda s, c: ("POST", f"/api/webhooks/{s.endpoint()}/test", {"message": "hi"}),
    "replay delivery": lambda s, c: (
        "POST", "/api/webhooks/{}/deliveries/{}/replay".format(*s.failed_delivery(c)), None
    ),
    "replay failed deliveries": lambda s, c: (
        "POST", f"/api/webhooks/{s.failed_delivery(c)[0]}/replay",
        {"since": "2000-01-01T00:00:00Z"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_replayed_request_gets_the_first_answer(client, issuer, api_container, route):
    s = Space(client, issuer)
    request = ROUTES[route](s, api_container)
    k = key()
    first = s.call(request, k)
    assert first.is_success, first.text
    again = s.call(request, k)
    assert again.status_code == first.status_code
    assert again.content == first.content  # the same body, byte for byte
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    for header in ("ETag", "X-Voxagent-Position", "Location"):
        assert again.headers.get(header) == first.headers.get(header)


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_key_is_refused_for_another_request(client, issuer, api_container, route):
    s = Space(client, issuer)
    request = ROUTES[route](s, api_container)
    k = key()
    assert s.call(request, k).is_success
    others = (  # another route, or another body on the same route
        ("POST", "/api/agents", {"name": "Elsewhere"}),
        ("POST", "/api/webhooks", {"url": "https://hooks.example.com/elsewhere"}),
    )
    for changed in others:
        resp = s.call(changed, k)
        assert resp.status_code == 422, (changed, resp.text)
        assert resp.json()["error"]["code"] == "idempotency_key_reused"


def test_a_key_used_on_agents_is_refused_on_webhooks_and_sessions(client, issuer):
    s = Space(client, issuer)
    k = key()
    agent = s.call(("POST", "/api/agents", {"name": "First"}), k)
    assert agent.status_code == 201
    for request in (
        ("POST", "/api/webhooks", {"url": "https://hooks.example.com/b"}),
        ("POST", "/api/sessions", {"agent_id": agent.json()["id"]}),
        ("POST", "/api/livekit/token", {"agent_id": agent.json()["id"]}),
    ):
        resp = s.call(request, k)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "idempotency_key_reused"
    listing = client.get("/api/webhooks", headers=s.headers()).json()
    assert listing["total"] == 0
    # the key is the space's: another space may use it
    other = Space(client, issuer)
    webhook = ("POST", "/api/webhooks", {"url": "https://hooks.example.com/b"})
    assert other.call(webhook, k).is_success


def test_one_turn_sent_by_id_and_by_room_with_one_key_is_refused_the_second_time(client, issuer):
    s = Space(client, issuer)
    session = s.session()
    k = key()
    by_id = s.call(("POST", f"/api/sessions/{session['id']}/transcripts", TRANSCRIPT), k)
    assert by_id.status_code == 201
    by_room = ("POST", f"/api/sessions/by-room/{session['room_name']}/transcripts", TRANSCRIPT)
    resp = s.call(by_room, k)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "idempotency_key_reused"


def transcripts(s: Space, session_id: str, version: int) -> list[dict[str, Any]]:
    read = s.client.get(
        f"/api/sessions/{session_id}", params={"min_version": version}, headers=s.headers()
    )
    assert read.status_code == 200, read.text
    return s.client.get(f"/api/sessions/{session_id}/transcripts", headers=s.headers()).json()


def test_a_transcript_without_turn_id_replayed_is_one_transcript_line(client, issuer):
    s = Space(client, issuer)
    session = s.session()
    request = ("POST", f"/api/sessions/{session['id']}/transcripts", TRANSCRIPT)
    k = key()
    first, again = s.call(request, k), s.call(request, k)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    lines = transcripts(s, session["id"], first.json()["version"])
    assert [line["text"] for line in lines] == [TRANSCRIPT["text"]]
    # without a key, each request is a turn of its own
    fresh = [s.call(request), s.call(request)]
    assert [r.status_code for r in fresh] == [201, 201]
    assert len(transcripts(s, session["id"], fresh[-1].json()["version"])) == 3


def events_of(app: Any, after: int, originator: str | None = None) -> list[Any]:
    found = []
    for n in app.recorder.select_notifications(start=after + 1, limit=10_000):
        event = app.mapper.to_domain_event(n)
        if originator is None or str(event.originator_id) == originator:
            found.append(event)
    return found


def concurrently(n: int, fn: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    answers: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_concurrent_creates_with_one_key_write_once_and_answer_alike(client, issuer, api_container):
    s = Space(client, issuer)
    agents = api_container.agents
    before = agents.recorder.max_notification_id() or 0
    k = key()
    answers = concurrently(6, lambda: s.call(("POST", "/api/agents", {"name": "Racer"}), k))
    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    mine = [e for e in events_of(agents, before) if getattr(e, "space_id", None) == s.id]
    assert len(mine) == 1


def test_concurrent_transcripts_with_one_key_write_once_and_answer_alike(
    client, issuer, api_container
):
    s = Space(client, issuer)
    session = s.session()
    calls = api_container.calls
    before = calls.recorder.max_notification_id() or 0
    request = ("POST", f"/api/sessions/{session['id']}/transcripts", TRANSCRIPT)
    k = key()
    answers = concurrently(6, lambda: s.call(request, k))
    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1
    assert len(events_of(calls, before, session["id"])) == 1


def test_concurrent_test_sends_with_one_key_queue_one_delivery(client, issuer, api_container):
    s = Space(client, issuer)
    endpoint = s.endpoint()
    k = key()
    request = ("POST", f"/api/webhooks/{endpoint}/test", {"message": "once"})
    answers = concurrently(6, lambda: s.call(request, k))
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    with api_container.pool.connection() as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s", (endpoint,)
        ).fetchone()
    assert count == 1


def test_a_replayed_web_call_token_is_the_same_call_room_and_identity(
    client, issuer, api_container
):
    s = Space(client, issuer)
    request = ("POST", "/api/livekit/token", {"agent_id": s.agent(), "participant_name": "Ann"})
    k = key()
    first, again = s.call(request, k), s.call(request, k)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    same = ("call_id", "room_name", "url", "participant_identity")
    assert {f: again.json()[f] for f in same} == {f: first.json()[f] for f in same}
    livekit = api_container.settings.livekit
    verifier = api.TokenVerifier(livekit.api_key, livekit.api_secret.get_secret_value())
    claims = verifier.verify(again.json()["token"])
    assert claims.identity == first.json()["participant_identity"]
    assert claims.video.room == first.json()["room_name"]


def test_a_replayed_phone_stream_is_the_same_call_and_room(client, issuer):
    s = Space(client, issuer)
    request = ("POST", "/api/telephony/streams",
               {"agent_id": s.agent(), "channel": "voximplant"})  # fmt: skip
    k = key()
    first, again = s.call(request, k), s.call(request, k)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    same = ("call_id", "room_name", "channel", "stream_url")
    assert {f: again.json()[f] for f in same} == {f: first.json()[f] for f in same}
    assert again.json()["parameters"]["call_id"] == first.json()["call_id"]


def test_a_replay_answers_the_first_answer_after_the_resource_changed(client, issuer):
    s = Space(client, issuer)
    create = ("POST", "/api/agents", {"name": "First"})
    k = key()
    first = s.call(create, k)
    agent_id = first.json()["id"]
    s.ok(("PATCH", f"/api/agents/{agent_id}", {"name": "Second"}))
    again = s.call(create, k)
    assert again.status_code == 201 and again.content == first.content
    assert again.json()["name"] == "First" and again.json()["version"] == 1

    endpoint = s.endpoint()
    send = ("POST", f"/api/webhooks/{endpoint}/test", {"message": "before"})
    sent = s.call(send, k2 := key())
    assert s.call(("DELETE", f"/api/webhooks/{endpoint}", None)).status_code == 204
    assert s.call(send).status_code == 404  # a new request finds no endpoint
    replayed = s.call(send, k2)
    assert replayed.status_code == 202 and replayed.content == sent.content
