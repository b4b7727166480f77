"""SIP trunks end to end: a real SIP phone (baresip) calls a provisioned number at our SIP
endpoint (the real sipd), the real worker answers through the bridge and LiveKit, the phone
records what it heard and Whisper checks it; the agent calls a phone out through a trunk; a
REFER moves a caller to a third phone; a warm transfer briefs a third phone, then joins it to
the caller. Everything on loopback, nothing mocked."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.baresip import Phone
from tests.support.caller import RATE as SPEECH_RATE
from tests.support.caller import speak
from tests.support.hearing import transcribe, understood
from tests.support.processes import eventually

pytestmark = pytest.mark.e2e
CALLER_ID = "+15550006666"
AGENT = {
    "name": "SIP desk",
    "system_prompt": "You answer the phone.",
    "first_message": "Hello! How can I help you?",
    "llm": {"provider": "scripted", "script": [
        {"match": "keypad: 4 2", "reply": "You entered forty two."},
        {"match": "order|check|please|status", "reply": "Your order will arrive on Friday."},
    ]},
}  # fmt: skip


def fresh_e164() -> str:
    return f"+1646{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"


class Space:
    """A space of the test's own, provisioned through the public API."""

    def __init__(self, http: httpx.Client, issuer) -> None:
        self.http = http
        self.headers = issuer.headers(f"sip-{uuid.uuid4().hex[:8]}")

    def post(self, path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        resp = self.http.post(path, json=body, headers=self.headers)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else {}

    def get(self, path: str) -> Any:
        resp = self.http.get(path, headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def agent(self, **changes: Any) -> str:
        return str(self.post("/api/agents", {**AGENT, **changes})["id"])

    def trunk(self, **spec: Any) -> str:
        return str(self.post("/api/telephony/trunks", {"name": "carrier", **spec})["id"])

    def number(self, trunk_id: str, agent_id: str | None = None) -> tuple[str, str]:
        e164 = fresh_e164()
        made = self.post("/api/telephony/numbers",
                         {"e164": e164, "provider": "sip", "trunk_id": trunk_id})  # fmt: skip
        if agent_id is not None:
            self.post(f"/api/telephony/numbers/{made['id']}/assign", {"agent_id": agent_id}, 200)
        return str(made["id"]), e164

    def ended(self, call_id: str, procs: tuple) -> dict[str, Any]:
        def done() -> dict | None:
            got = self.http.get(f"/api/sessions/{call_id}", headers=self.headers).json()
            return got if got.get("status") == "ended" else None

        return eventually(done, timeout=90, what="the ended call", processes=procs)  # type: ignore[return-value]

    def calls(self) -> list[dict[str, Any]]:
        return list(self.get("/api/sessions?limit=50")["items"])


def loopback_trunk(space: Space, **outbound: Any) -> str:
    spec: dict[str, Any] = {"inbound": {"allowed_addresses": ["127.0.0.1/32"]}}
    if outbound:
        spec["outbound"] = outbound
    return space.trunk(**spec)


def heard_text(phone: Phone) -> str:
    pcm, rate = phone.heard()
    return transcribe(pcm, rate)


def test_a_sip_phone_calls_a_number_and_talks_to_its_agent(
    sip, issuer, worker, pipeline, tmp_path: Path
) -> None:  # fmt: skip
    space = Space(sip.http, issuer)
    agent_id = space.agent()
    _, e164 = space.number(loopback_trunk(space), agent_id)
    caller = Phone(tmp_path / "caller", CALLER_ID)
    caller.say(speak("Please check my order."), SPEECH_RATE, lead_s=4.0)
    with caller:
        caller.dial(f"sip:{e164}@{sip.address}")
        caller.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(12)  # the greeting, the question, the answer
        caller.press("42")
        time.sleep(7)  # the agent repeats the keys
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=15)
    heard = heard_text(caller)
    assert understood(heard, "Hello! How can I help you?", "help", "hello"), heard
    assert understood(heard, "Your order will arrive on Friday.", "order", "friday"), heard
    assert understood(heard, "You entered forty two.", "forty", "42"), heard

    procs = (*pipeline.values(), worker, sip.sipd)
    call = eventually(lambda: [c for c in space.calls() if c["to_number"] == e164],
                      timeout=60, what="the SIP call", processes=procs)  # fmt: skip
    session = space.ended(call[0]["id"], procs)
    assert (session["direction"], session["channel"]) == ("inbound", "sip"), session
    assert (session["from_number"], session["to_number"]) == (CALLER_ID, e164), session
    assert [d["digit"] for d in session["dtmf"]] == ["4", "2"], session
    transcripts = space.get(f"/api/sessions/{session['id']}/transcripts")
    agent_said = [t["text"] for t in transcripts if t["speaker"] == "agent"]
    assert "Your order will arrive on Friday." in agent_said, transcripts
    assert "You entered forty two." in agent_said, transcripts
    assert any(t["speaker"] == "user" for t in transcripts), transcripts


def test_invites_for_unknown_numbers_or_from_unauthenticated_trunks_are_refused(
    sip, issuer, pipeline, tmp_path: Path
) -> None:  # fmt: skip
    space = Space(sip.http, issuer)
    agent_id = space.agent()
    elsewhere = space.trunk(inbound={"allowed_addresses": ["10.11.0.0/16"]})
    _, fenced = space.number(elsewhere, agent_id)
    _, idle = space.number(loopback_trunk(space))  # provisioned, never assigned
    calls_before = len(space.calls())
    with Phone(tmp_path / "stranger", CALLER_ID) as phone:
        outcomes = []
        for number in (fresh_e164(), fenced, idle):
            phone.events.clear()
            phone.dial(f"sip:{number}@{sip.address}")
            outcomes.append(phone.wait_event("CALL_CLOSED", timeout=20)["param"])
    unknown, unauthenticated, unassigned = outcomes
    assert unknown.startswith("404"), outcomes
    assert unauthenticated.startswith("403"), outcomes
    assert unassigned.startswith("480"), outcomes
    assert len(space.calls()) == calls_before, "a refused INVITE opens no call"


def test_the_agent_calls_a_phone_out_through_a_trunk(
    sip, issuer, worker, pipeline, tmp_path: Path
) -> None:  # fmt: skip
    space = Space(sip.http, issuer)
    agent_id = space.agent()
    callee_number = fresh_e164()
    with Phone(tmp_path / "callee", callee_number, auto_answer=True) as callee:
        trunk = loopback_trunk(space, address=f"127.0.0.1:{callee.sip_port}")
        number_id, our_number = space.number(trunk)
        placed = space.post("/api/telephony/outbound", {
            "agent_id": agent_id, "to": callee_number, "from_number_id": number_id})  # fmt: skip
        assert (placed["provider"], placed["from_number"]) == ("sip", our_number), placed
        established = callee.wait_event("CALL_ESTABLISHED", timeout=30)
        time.sleep(6)  # the greeting
        callee.hangup()
        callee.wait_event("CALL_CLOSED", timeout=15)
    assert callee_number in established["peeruri"] or our_number in established["peeruri"]
    assert understood(heard_text(callee), "Hello! How can I help you?", "help", "hello")
    procs = (*pipeline.values(), worker, sip.sipd)
    session = space.ended(placed["call_id"], procs)
    assert (session["direction"], session["channel"]) == ("outbound", "sip"), session
    status = space.get(f"/api/telephony/{placed['call_id']}/status")
    assert status["provider"] == "sip" and status["provider_status"] in (
        "in-progress",
        "completed",
    ), status


def test_a_refer_moves_the_caller_to_another_phone(
    sip, issuer, worker, pipeline, tmp_path: Path
) -> None:  # fmt: skip
    space = Space(sip.http, issuer)
    agent_id = space.agent()
    _, e164 = space.number(loopback_trunk(space), agent_id)
    caller = Phone(tmp_path / "caller", CALLER_ID)
    caller.say(speak("Please check my order."), SPEECH_RATE, lead_s=2.0)
    desk = Phone(tmp_path / "desk", "desk", auto_answer=True)
    procs = (*pipeline.values(), worker, sip.sipd)
    with caller, desk:
        caller.dial(f"sip:{e164}@{sip.address}")
        caller.wait_event("CALL_ESTABLISHED", timeout=30)
        call = eventually(lambda: [c for c in space.calls() if c["to_number"] == e164],
                          timeout=60, what="the SIP call", processes=procs)  # fmt: skip
        call_id = call[0]["id"]

        def transferred() -> bool:  # once sipd's in-progress report names the phone leg
            resp = sip.http.post(f"/api/sessions/{call_id}/transfer", json={"target": desk.uri},
                                 headers=space.headers)  # fmt: skip
            assert resp.status_code in (202, 409), resp.text
            return resp.status_code == 202

        eventually(transferred, timeout=30, interval=0.5, what="the transfer accepted",
                   processes=procs)  # fmt: skip
        answered = desk.wait_event("CALL_ESTABLISHED", timeout=30)
        assert CALLER_ID in answered["peeruri"], answered  # the caller's phone dialed the desk
        time.sleep(1)
        caller.hangup()

        def outcome() -> str | None:
            got = space.get(f"/api/sessions/{call_id}")
            return got.get("transfer_status") if got.get("transfer_status") != "requested" else None

        assert eventually(outcome, timeout=60, what="the transfer's outcome",
                          processes=procs) == "completed"  # fmt: skip


def test_a_warm_transfer_briefs_the_desk_then_joins_it_to_the_caller(
    sip, issuer, worker, pipeline, tmp_path: Path
) -> None:  # fmt: skip
    """The caller asks for a person; the agent's transfer_call tool has sipd dial the desk (the
    caller on hold), says the briefing to the desk, and leaves: sipd joins caller and desk."""
    space = Space(sip.http, issuer)
    desk = Phone(tmp_path / "desk", "desk", auto_answer=True)
    desk.say(speak("This is the help desk speaking."), SPEECH_RATE, lead_s=14.0)
    caller = Phone(tmp_path / "caller", CALLER_ID)
    caller.say(np.concatenate([
        speak("Please connect me to a person."), np.zeros(int(16000 * 22), np.int16),
        speak("Good morning, thank you very much.", rate=130),
    ]), SPEECH_RATE, lead_s=4.0)  # fmt: skip
    agent_id = space.agent(
        transfer_targets=[{"name": "desk", "destination": desk.uri, "mode": "warm",
                           "description": "A person at the help desk.",
                           "briefing": "A caller needs help with an order."}],
        llm={"provider": "scripted", "fallback_reply": "", "script": [
            {"match": "person|connect|human", "tool": "transfer_call",
             "arguments": {"target": "desk"}}]},
    )  # fmt: skip
    _, e164 = space.number(loopback_trunk(space), agent_id)
    procs = (*pipeline.values(), worker, sip.sipd)
    with caller, desk:
        caller.dial(f"sip:{e164}@{sip.address}")
        caller.wait_event("CALL_ESTABLISHED", timeout=30)
        answered = desk.wait_event("CALL_ESTABLISHED", timeout=45)  # sipd's consult leg
        assert CALLER_ID in answered["peeruri"], answered  # it shows the caller's number
        time.sleep(30)  # the briefing, the join, the desk's words, the caller's second phrase
        caller.hangup()
        caller.wait_event("CALL_CLOSED", timeout=15)
        desk.wait_event("CALL_CLOSED", timeout=15)  # the caller's BYE ended the desk's leg
    desk_heard = heard_text(desk)
    assert understood(desk_heard, "A caller needs help with an order.", "caller", "order"), (
        desk_heard
    )
    assert understood(desk_heard, "Good morning, thank you very much.", "morning", "thank"), (
        desk_heard
    )
    caller_heard = heard_text(caller)
    assert "caller needs" not in caller_heard.lower(), "the caller heard the briefing"
    # Whisper tiny through two G.711 legs may mangle the desk's words ("This is my health mask
    # beacon" once): the caller hears the desk's sentence, which only the desk says
    desk_words = ("desk", "speaking", "this is")
    assert understood(caller_heard, "This is the help desk speaking.", *desk_words), caller_heard

    call = eventually(lambda: [c for c in space.calls() if c["to_number"] == e164],
                      timeout=60, what="the SIP call", processes=procs)  # fmt: skip
    session = space.ended(call[0]["id"], procs)
    assert session["end_reason"] == "transferred", session

    def outcome() -> str | None:
        got = space.get(f"/api/sessions/{session['id']}")
        return got.get("transfer_status") if got.get("transfer_status") != "requested" else None

    assert eventually(outcome, timeout=60, what="the transfer's outcome",
                      processes=procs) == "completed"  # fmt: skip
