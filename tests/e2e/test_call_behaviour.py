"""How the agent behaves in a live room: it checks on a silent caller and then hangs up, it says
goodbye at the call's time limit, and it stops talking when the caller talks over it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.support.caller import Caller, speak
from tests.support.processes import eventually

pytestmark = pytest.mark.e2e


def start(client, issuer, config: dict[str, Any]) -> tuple[dict, dict, str]:
    sp = f"voice-{uuid.uuid4().hex[:8]}"
    h = issuer.headers(sp)
    agent = client.post("/api/agents", json={"name": "Behaviour", **config}, headers=h)
    assert agent.status_code == 201, agent.text
    web = client.post("/api/livekit/token", json={"agent_id": agent.json()["id"]}, headers=h)
    assert web.status_code == 201, web.text
    return web.json(), h, sp


def ended_session(client, h, call_id, procs) -> dict:
    def ended() -> dict | None:
        got = client.get(f"/api/sessions/{call_id}", headers=h).json()
        return got if got.get("status") == "ended" else None

    return eventually(ended, timeout=90, what="the ended call", processes=procs)


async def silent_caller(url: str, token: str, timeout: float) -> tuple[Caller, bool]:
    caller = Caller()
    await caller.join(url, token)
    try:
        await asyncio.wait_for(caller.disconnected.wait(), timeout=timeout)
        return caller, True
    except TimeoutError:
        return caller, False
    finally:
        await caller.leave()


def test_a_silent_caller_is_asked_once_then_the_agent_hangs_up(client, issuer, worker, pipeline):
    web, h, _ = start(client, issuer, {
        "first_message": "Hello.", "silence_timeout_seconds": 3,
        "silence_prompt": "Are you still there?",
    })  # fmt: skip
    caller, hung_up = asyncio.run(silent_caller(web["url"], web["token"], timeout=60))
    assert hung_up, "the agent ends a call nobody speaks in"
    session = ended_session(client, h, web["call_id"], (*pipeline.values(), worker))
    assert session["end_reason"] == "silence"
    transcripts = client.get(f"/api/sessions/{web['call_id']}/transcripts", headers=h).json()
    assert [t["text"] for t in transcripts if t["speaker"] == "agent"] == [
        "Hello.", "Are you still there?"]  # fmt: skip


def test_the_agent_says_goodbye_at_the_calls_time_limit(client, issuer, worker, pipeline):
    web, h, _ = start(client, issuer, {
        "first_message": "Hello.", "max_call_duration_seconds": 10,
        "silence_timeout_seconds": 60,
    })  # fmt: skip
    began = time.monotonic()
    caller, hung_up = asyncio.run(silent_caller(web["url"], web["token"], timeout=60))
    assert hung_up and time.monotonic() - began >= 10
    session = ended_session(client, h, web["call_id"], (*pipeline.values(), worker))
    assert session["end_reason"] == "max_duration"
    transcripts = client.get(f"/api/sessions/{web['call_id']}/transcripts", headers=h).json()
    assert "Goodbye" in " ".join(t["text"] for t in transcripts if t["speaker"] == "agent")


async def barge_in(url: str, token: str) -> tuple[float, float | None]:
    """The caller talks 1.5 s into a long greeting; returns (voiced agent audio in the 3 s before
    the interruption, voiced agent audio from 1.5 s after it until 4 s after it)."""
    caller = Caller()
    await caller.join(url, token)
    try:
        while caller.heard.last_voice_at() is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        interrupted = time.monotonic()
        before = caller.heard.voiced_since(interrupted - 1.5)
        await caller.say(speak("Wait, wait, I have a question about my order."))
        await asyncio.sleep(max(0.0, interrupted + 4.0 - time.monotonic()))
        after = sum(0.01 for t, c in caller.heard.chunks
                    if interrupted + 1.5 <= t <= interrupted + 4.0
                    and float((c.astype("float64") ** 2).mean()) ** 0.5 > 500)  # fmt: skip
        return before, after
    finally:
        await caller.leave()


def test_the_agent_stops_talking_when_the_caller_talks_over_it(client, issuer, worker):
    long_greeting = (
        "Hello and welcome to the order desk. I can look up your orders, change delivery "
        "addresses, tell you about refunds and our opening hours, and much more besides. "
        "Just tell me what you need and I will do my best to help you today."
    )
    web, _, _ = start(client, issuer, {
        "first_message": long_greeting,
        "llm": {"provider": "scripted", "script": [], "fallback_reply": "Yes?"},
    })  # fmt: skip
    before, after = asyncio.run(barge_in(web["url"], web["token"]))
    assert before > 1.0, "the greeting was playing"
    # the rest of the greeting (about 10 s of speech) is cut: at most the short reply follows
    assert after < 1.2, f"{after:.2f} s of agent speech after the caller talked over it"
