"""The media bridge's ``/streams/sip`` against the real LiveKit server: a client speaking our SIP
service's stream (``SipEmulator``: JSON events, binary G.711) is bridged into a call's room. The
caller is heard in the room, keys arrive as DTMF, the agent's audio comes back as binary
frames in the negotiated codec with a mark after each reply played in full, a barge-in clears
at once (and the pending mark is dropped, never heard), and hang-ups go both ways."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from adapters.telephony import tokens
from infra.settings import Settings
from tests.integration.test_bridge import Call, StandInAgent, running_bridge, tone, until
from tests.support.sip_stream import SipEmulator

pytestmark = pytest.mark.integration


def sip_call(settings: Settings) -> Call:
    """A room for a call whose stream token is for SIP streams."""
    call = Call(settings)
    grant = tokens.StreamGrant(
        call_id=call.call_id, space_id="bridge-tests", agent_id="agent-1",
        agent_config_version=1, room_name=call.room_name, channel="sip",
    )  # fmt: skip
    secret = settings.telephony.stream_secret.get_secret_value()
    call.parameters = {"call_id": call.call_id, "token": tokens.issue(grant, secret, 300)}
    return call


def sip_url(url: str) -> str:
    return url.replace("/streams/twilio", "/streams/sip")


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_sip_stream_is_heard_and_hears_the_agent(stack_settings, codec):
    async def scenario() -> dict[str, Any]:
        call = sip_call(stack_settings)
        await call.open()
        keys: list[str] = []
        call.listener.on("sip_dtmf_received", lambda dtmf: keys.append(dtmf.digit))
        agent = StandInAgent(stack_settings, call.room_name)
        out: dict[str, Any] = {}
        async with running_bridge(stack_settings) as (url, ctx):
            phone = SipEmulator(sip_url(url), call.parameters, codec=codec)
            await phone.connect()
            phone.keep_alive()
            await until(lambda: ctx.metrics.counters["streams_started"] == 1)
            # the caller speaks: the room hears it (the agent has said nothing yet)
            await phone.speak(tone(1.0), 8000)
            await until(lambda: call.loud_frames >= 20)
            await phone.dtmf("5")
            await until(lambda: keys == ["5"])
            # the agent replies, played in full: binary audio back, then a mark, echoed
            await agent.join()
            await agent.play(0.3, loud=False)
            await agent.play(0.6)
            await agent.say({"type": "played"})
            await agent.play(0.4, loud=False)
            await until(lambda: bool(phone.mark_echoes))
            await until(lambda: ctx.metrics.counters["marks_heard"] == 1)
            heard = phone.played().pcm
            out["loud_ms"] = int(np.sum(np.abs(heard) > 2000) / 8)
            # a long reply the caller talks over: cleared at once, its mark never sent
            marks_before = list(phone.marks_received)
            playing = asyncio.ensure_future(agent.play(3.0))
            await asyncio.sleep(1.0)
            await agent.say({"type": "clear", "id": 1})
            await until(lambda: phone.clears_received == 1)
            agent.cut = True
            await playing
            await until(lambda: bool(agent.heard))
            out["report"] = agent.heard[0]
            out["marks_after"] = phone.marks_received[len(marks_before) :]
            # the caller hangs up: the phone participant leaves the room
            await phone.stop()
            await until(lambda: any(i.startswith("phone-") for i in call.left))
            out["errors"] = phone.errors
            out["counters"] = dict(ctx.metrics.counters)
        await agent.room.disconnect()
        await call.close()
        return out

    out = asyncio.run(scenario())
    assert out["errors"] == [], "every frame the bridge sent was valid for sipd"
    assert out["loud_ms"] >= 400, "the agent's reply reached the caller as G.711"
    assert out["marks_after"] == [], "a cut reply gets no mark"
    assert out["report"]["type"] == "cleared" and out["report"]["heard_ms"] > 0, out["report"]
    counters = out["counters"]
    assert counters["dtmf"] == 1 and counters["clears"] == 1, counters
    assert counters["ended_stream_stopped"] == 1, counters
    assert not any(k.startswith("protocol_error") for k in counters), counters


def test_a_sip_stream_closes_when_the_call_ends_and_refuses_a_wrong_token(stack_settings):
    async def scenario() -> dict[str, Any]:
        call = sip_call(stack_settings)
        await call.open()
        out: dict[str, Any] = {}
        async with running_bridge(stack_settings) as (url, ctx):
            # a Twilio stream's token does not open a SIP stream
            twilio = Call(stack_settings)
            wrong = SipEmulator(sip_url(url), twilio.parameters)
            await wrong.connect()
            await until(lambda: wrong.server_closed)
            out["wrong"] = wrong.close_code
            await wrong.drop()
            async with SipEmulator(sip_url(url), call.parameters) as phone:
                phone.keep_alive()
                await until(lambda: ctx.metrics.counters["streams_started"] == 1)
                await call.close()  # the call ends on the platform's side: the room goes
                await until(lambda: phone.server_closed)
                out["closed"] = phone.close_code
            out["counters"] = dict(ctx.metrics.counters)
        return out

    out = asyncio.run(scenario())
    assert out["wrong"] == 4403 and out["counters"]["refused_wrong_channel"] == 1, out
    assert out["closed"] == 1000 and out["counters"]["ended_room_closed"] == 1, out
