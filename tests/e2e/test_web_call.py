"""A whole web call on the real stack: the API opens the call's room on the real LiveKit
server, the real worker answers with the offline providers (Silero VAD, Whisper, the scripted
LLM, espeak-ng), a caller speaks a question over WebRTC and hears the answer, a tool hits a
local HTTP service, the agent hangs up when told goodbye, and the call reaches the read model
and ClickHouse through the stream."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.caller import Caller, speak
from tests.support.hearing import transcribe, understood
from tests.support.processes import eventually

pytestmark = pytest.mark.e2e


class OrderService:
    """The test agent's tool target: answers order lookups, remembers the requests."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.hooks: list[tuple[str, dict[str, Any]]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                service.requests.append(self.path)
                body = json.dumps({"status": "shipped", "eta": "Thursday"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the agent's pre/post-call webhooks
                length = int(self.headers.get("content-length", 0))
                service.hooks.append((self.path, json.loads(self.rfile.read(length))))
                reply = {"variables": {"customer": "Ada"}} if self.path == "/pre-call" else {}
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/orders"


@pytest.fixture(scope="module")
def orders() -> Iterator[OrderService]:
    service = OrderService()
    yield service
    service.server.shutdown()


def agent_config(orders: OrderService) -> dict[str, Any]:
    orders_url = orders.url
    return {
        "name": "Order desk",
        "system_prompt": "You help with orders.",
        "first_message": "Hello {{customer}}! How can I help you?",
        "webhooks": {"pre_call_url": f"{orders.base}/pre-call",
                     "post_call_url": f"{orders.base}/post-call"},
        "tools": [{
            "name": "lookup_order", "description": "Look an order up.", "method": "GET",
            "url": orders_url, "timeout_seconds": 5,
            "parameters": {"type": "object", "required": ["order_id"],
                           "properties": {"order_id": {"type": "string"}}},
        }],
        "llm": {"provider": "scripted", "script": [
            {"match": "order", "tool": "lookup_order", "arguments": {"order_id": "A1001"},
             "reply": "Your order arrives on {{result.eta}}."},
            {"match": "bye", "reply": "Goodbye!", "end_call": True},
        ]},
    }  # fmt: skip


async def conversation(url: str, token: str) -> tuple[str, str, bool]:
    caller = Caller()
    await caller.join(url, token)
    try:
        await caller.wait_quiet(1.0, timeout=90)  # the greeting, then a pause
        greeting = caller.heard.audio()
        asked = await caller.say(speak("I would like to check the status of my order."))
        await asyncio.sleep(1.0)
        while caller.heard.first_voice_after(asked) is None:
            await asyncio.sleep(0.1)
        await caller.wait_quiet(1.2, timeout=90)
        answer = caller.heard.audio(since=asked)
        await caller.say(speak("Thank you, goodbye."))
        try:
            await asyncio.wait_for(caller.disconnected.wait(), timeout=60)
            hung_up = True
        except TimeoutError:
            hung_up = False
        return transcribe(greeting), transcribe(answer), hung_up
    finally:
        await caller.leave()


def test_a_caller_talks_to_the_agent_and_the_call_is_recorded(
    client, issuer, api_container, worker, pipeline, orders
):
    sp = f"voice-{uuid.uuid4().hex[:8]}"
    h = issuer.headers(sp)
    agent = client.post("/api/agents", json=agent_config(orders), headers=h)
    assert agent.status_code == 201, agent.text
    started = client.post("/api/livekit/token", json={"agent_id": agent.json()["id"]}, headers=h)
    assert started.status_code == 201, started.text
    web = started.json()
    assert web["url"].startswith("ws://127.0.0.1") and web["token"]

    greeting, answer, hung_up = asyncio.run(conversation(web["url"], web["token"]))
    # what the caller heard, transcribed by Whisper tiny (which may miss a word)
    assert understood(greeting, "Hello Ada! How can I help you?", "help"), greeting
    assert understood(answer, "Your order arrives on Thursday.", "thursday"), answer
    assert hung_up, "the agent ends the call after its goodbye"
    assert orders.requests and "order_id=A1001" in orders.requests[0]

    call_id = web["call_id"]
    procs = (*pipeline.values(), worker)

    def ended() -> dict | None:
        body = client.get(f"/api/sessions/{call_id}", headers=h).json()
        return body if body.get("status") == "ended" else None

    session = eventually(ended, timeout=90, what="the ended call", processes=procs)
    assert session["channel"] == "web" and session["end_reason"] == "agent_hangup"
    assert session["tool_call_count"] == 1
    transcripts = client.get(f"/api/sessions/{call_id}/transcripts", headers=h).json()
    speakers = [t["speaker"] for t in transcripts]
    assert "user" in speakers and "agent" in speakers
    said = " ".join(t["text"].lower() for t in transcripts if t["speaker"] == "user")
    assert "order" in said
    agent_said = " ".join(t["text"] for t in transcripts if t["speaker"] == "agent")
    assert "Your order arrives on Thursday." in agent_said
    assert "Hello Ada! How can I help you?" in agent_said  # the pre-call hook's variable
    hooks = dict(orders.hooks)
    assert hooks["/pre-call"]["call_id"] == call_id
    summary = hooks["/post-call"]
    assert summary["call_id"] == call_id and summary["end_reason"] == "agent_hangup"
    assert any(t["text"] == "Your order arrives on Thursday." for t in summary["transcript"])
    assert summary["tool_calls"][0]["name"] == "lookup_order"
    with api_container.pool.connection() as conn:
        tools = conn.execute(
            "SELECT name, status FROM call_tool_calls WHERE call_id = %s", (call_id,)
        ).fetchall()
        kinds = {r[0] for r in conn.execute(
            "SELECT kind FROM call_usage WHERE call_id = %s", (call_id,))}  # fmt: skip
        turns = conn.execute(
            "SELECT end_of_speech_to_first_audio_ms, llm_first_token_ms, tts_first_byte_ms "
            "FROM call_turns WHERE call_id = %s", (call_id,),
        ).fetchall()  # fmt: skip
    assert tools == [("lookup_order", "ok")]
    assert {"stt_seconds", "llm_input_tokens", "llm_output_tokens", "tts_characters"} <= kinds
    assert turns and all(t[0] is not None and t[0] > 0 for t in turns)

    def in_clickhouse() -> bool:
        ch = api_container.clickhouse()
        try:
            rows = ch.execute(
                "SELECT status, transcript_count FROM calls FINAL WHERE call_id = %(id)s",
                {"id": call_id},
            )
        finally:
            ch.disconnect()
        return bool(rows) and rows[0][0] == "ended" and rows[0][1] == len(transcripts)

    eventually(in_clickhouse, timeout=60, what="the call in ClickHouse", processes=procs)
