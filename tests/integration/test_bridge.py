"""The media bridge against the real LiveKit server, no worker: what it does with bad input,
streams it must refuse, hang-ups in both directions, and that one stream's trouble stays its
own. The bridge runs in this process (its aiohttp app on a free port); a listener joins each
room to see what the bridge publishes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from livekit import api, rtc

from adapters.livekit.rooms import LiveKitRooms, http_url
from adapters.telephony import tokens
from bridge.server import build_app
from bridge.session import BridgeContext
from infra.settings import Settings
from tests.support.twilio_stream import TwilioEmulator

pytestmark = pytest.mark.integration


@asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[tuple[str, BridgeContext]]:
    ctx = BridgeContext(telephony=settings.telephony, livekit=settings.livekit)
    runner = web.AppRunner(build_app(ctx))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/streams/twilio", ctx
    finally:
        await runner.cleanup()


class Call:
    """A room for a call (no agent dispatched), its stream parameters, and a listener in it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.call_id = str(uuid.uuid4())
        self.room_name = f"call-{self.call_id}"
        grant = tokens.StreamGrant(
            call_id=self.call_id, space_id="bridge-tests", agent_id=str(uuid.uuid4()),
            agent_config_version=1, room_name=self.room_name, channel="twilio_media_streams",
        )  # fmt: skip
        secret = settings.telephony.stream_secret.get_secret_value()
        self.parameters = {"call_id": self.call_id, "token": tokens.issue(grant, secret, 300)}
        self.listener = rtc.Room()
        self.frames = 0
        self.loud_frames = 0
        self.left: list[str] = []

    def _lk(self) -> api.LiveKitAPI:
        lk = self.settings.livekit
        return api.LiveKitAPI(http_url(lk.url), lk.api_key, lk.api_secret.get_secret_value())

    async def open(self) -> None:
        await self.create()
        await self.listen()

    async def create(self) -> None:
        async with self._lk() as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=self.room_name))

    async def listen(self) -> None:
        self.listener.on("track_subscribed", self._subscribed)
        self.listener.on("participant_disconnected", lambda p: self.left.append(p.identity))
        token = LiveKitRooms(self.settings.livekit).join_token(
            self.room_name, f"listener-{self.call_id[:8]}", "listener", timedelta(minutes=10)
        )
        await self.listener.connect(self.settings.livekit.url, token)

    def _subscribed(self, track: rtc.Track, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            asyncio.ensure_future(self._count(track))

    async def _count(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48_000, num_channels=1):
            pcm = np.frombuffer(event.frame.data, dtype=np.int16)
            self.frames += 1
            if len(pcm) and np.abs(pcm).max() > 1000:
                self.loud_frames += 1

    async def close(self) -> None:
        await self.listener.disconnect()
        async with self._lk() as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=self.room_name))


def tone(seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def test_bad_messages_are_skipped_and_the_stream_goes_on(stack_settings):
    async def scenario() -> dict[str, Any]:
        call = Call(stack_settings)
        await call.open()
        async with running_bridge(stack_settings) as (url, ctx):
            async with TwilioEmulator(url, call.parameters) as phone:
                phone.keep_alive()
                await until(lambda: ctx.metrics.counters["streams_started"] == 1)
                for junk in ("not json", "[1, 2]", json.dumps({"event": "media"}),
                             json.dumps({"event": "media", "streamSid": phone.stream_sid,
                                         "media": {"payload": "%%% not base64"}}),
                             json.dumps({"event": "dtmf", "streamSid": phone.stream_sid,
                                         "dtmf": {"digit": "Z"}}),
                             json.dumps({"event": "something-new"})):  # fmt: skip
                    await phone.send_raw(junk)
                await phone.speak(tone(1.0), 8000)
                await until(lambda: call.loud_frames >= 20)
                alive = not phone.server_closed
            counters = dict(ctx.metrics.counters)
        await call.close()
        return {"alive": alive, "counters": counters}

    result = asyncio.run(scenario())
    assert result["alive"], "malformed messages do not end a stream"
    errors = {k: v for k, v in result["counters"].items() if k.startswith("protocol_error")}
    assert sum(errors.values()) == 5, errors  # the unknown event is ignored, not an error


def test_a_stream_of_garbage_is_closed_and_others_are_unaffected(stack_settings):
    async def scenario() -> dict[str, Any]:
        good, bad = Call(stack_settings), Call(stack_settings)
        await good.open()
        await bad.open()
        async with (
            running_bridge(stack_settings) as (url, ctx),
            TwilioEmulator(url, good.parameters) as steady,
            TwilioEmulator(url, bad.parameters) as noisy,
        ):
            steady.keep_alive()
            await until(lambda: ctx.metrics.counters["streams_started"] == 2)
            for _ in range(25):
                await noisy.send_raw("{oops")
            await until(lambda: noisy.server_closed)
            before = good.frames
            await steady.speak(tone(1.0), 8000)
            await until(lambda: good.loud_frames >= 20)
            result = {"noisy_closed": noisy.server_closed,
                          "steady_alive": not steady.server_closed,
                          "frames_after": good.frames - before,
                          "active": ctx.metrics.active}  # fmt: skip
        await good.close()
        await bad.close()
        return result

    result = asyncio.run(scenario())
    assert result["noisy_closed"] and result["steady_alive"], result
    assert result["frames_after"] > 0 and result["active"] == 1, result


def test_a_stall_is_caught_up_in_the_next_pause_without_losing_words(stack_settings):
    """A 400 ms stall on the way delivers the caller's words late and in a burst: every word
    still reaches the room, and the pause after them is shortened by about the stall, so later
    words are not held back by it for the rest of the call. Audio sent before anyone in the
    room subscribed to the caller is not kept either."""

    async def scenario() -> dict[str, Any]:
        call = Call(stack_settings)
        await call.create()
        async with (
            running_bridge(stack_settings) as (url, ctx),
            TwilioEmulator(url, call.parameters) as phone,
        ):
            phone.keep_alive()
            await until(lambda: ctx.metrics.counters["streams_started"] == 1)
            await until(lambda: ctx.metrics.counters["caller_frames_before_listener"] >= 5)
            await call.listen()  # the listener arrives after the caller
            await phone.speak(tone(0.3), 8000)
            await until(lambda: call.loud_frames >= 20)
            await phone.silence(1.0)
            in_time = ctx.metrics.counters["caller_silence_trimmed_ms"]
            before = call.loud_frames
            speaking = asyncio.ensure_future(phone.speak(tone(1.0), 8000))
            await asyncio.sleep(0.3)
            await phone.stall(0.4)
            await speaking
            await phone.silence(1.5)
            counters = dict(ctx.metrics.counters)
            heard = call.loud_frames - before
        await call.close()
        return {"in_time": in_time, "counters": counters, "heard": heard}

    result = asyncio.run(scenario())
    assert result["in_time"] == 0, "audio arriving in real time is never trimmed"
    trimmed = result["counters"]["caller_silence_trimmed_ms"]
    # about the stall: 400 ms (and the frame that ended it), less the 60 ms target depth
    assert 200 <= trimmed <= 600, result
    assert result["heard"] >= 90, result  # ~100 loud 10 ms frames: the words all arrived
    assert result["counters"].get("caller_frames_dropped", 0) == 0, result


def test_the_provider_is_heard_while_the_bridge_joins_a_slow_room(stack_settings, monkeypatch):
    """Joining LiveKit takes a while on a loaded machine; meanwhile the bridge keeps reading
    the provider's socket (its heartbeat and a hang-up are not left waiting): media and keys
    sent during the join are dropped, a stream that stops mid-join leaves no caller behind in
    the room, and one that goes on is heard once the bridge is in."""
    connect = rtc.Room.connect

    async def slow_connect(room: rtc.Room, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(1.5)
        await connect(room, *args, **kwargs)

    monkeypatch.setattr(rtc.Room, "connect", slow_connect)

    async def scenario() -> dict[str, Any]:
        gone, staying = Call(stack_settings), Call(stack_settings)
        await gone.open()
        await staying.open()
        async with running_bridge(stack_settings) as (url, ctx):
            hung_up = TwilioEmulator(url, gone.parameters)
            await hung_up.connect()
            hung_up.keep_alive()
            await hung_up.dtmf("5")
            await asyncio.sleep(0.5)
            await hung_up.stop()  # mid-join
            await until(lambda: ctx.metrics.active == 0)
            gone_counters = dict(ctx.metrics.counters)
            async with TwilioEmulator(url, staying.parameters) as phone:
                phone.keep_alive()
                await until(lambda: ctx.metrics.counters["streams_started"] == 1)
                await phone.speak(tone(0.5), 8000)
                await until(lambda: staying.loud_frames >= 20)
            phones = [p for p in gone.listener.remote_participants if p.startswith("phone-")]
            counters = dict(ctx.metrics.counters)
        await gone.close()
        await staying.close()
        return {"gone": gone_counters, "counters": counters, "phones_left": phones}

    result = asyncio.run(scenario())
    gone = result["gone"]
    assert gone["caller_frames_before_join"] > 0 and gone["dtmf_before_join"] == 1, result
    assert gone["ended_stream_stopped"] == 1 and "streams_started" not in gone, result
    assert not any(k.startswith("protocol_error") for k in result["counters"]), result
    assert result["phones_left"] == [], "the stream that stopped mid-join left no caller"
    assert result["counters"]["streams_started"] == 1


def test_refused_streams_and_hang_ups_both_ways(stack_settings):
    async def scenario() -> dict[str, Any]:
        call = Call(stack_settings)
        await call.open()
        out: dict[str, Any] = {}
        async with running_bridge(stack_settings) as (url, ctx):
            first = TwilioEmulator(url, call.parameters)
            await first.connect()
            first.keep_alive()
            await until(lambda: ctx.metrics.counters["streams_started"] == 1)
            async with TwilioEmulator(url, call.parameters) as second:  # the same call again
                await until(lambda: second.server_closed)
                out["second"] = second.close_code
            await first.stop()  # the caller hangs up: the participant leaves the room
            await until(lambda: any(i.startswith("phone-") for i in call.left))
            out["after_stop_active"] = ctx.metrics.active

            other = Call(stack_settings)
            await other.open()
            async with TwilioEmulator(url, other.parameters) as third:
                third.keep_alive()
                await until(lambda: ctx.metrics.counters["streams_started"] == 2)
                await other.close()  # the call ends on the platform's side: the room goes
                await until(lambda: third.server_closed)
                out["third"] = third.close_code
            out["counters"] = dict(ctx.metrics.counters)
        await call.close()
        return out

    out = asyncio.run(scenario())
    assert out["second"] == 4403, out
    assert out["counters"]["refused_call_streaming"] == 1
    assert out["after_stop_active"] == 0
    assert out["third"] == 1000, "the bridge closes the stream when the call's room closes"
    counters = out["counters"]
    assert counters["ended_room_closed"] == 1 and counters["ended_stream_stopped"] == 1


def test_a_stream_that_never_starts_is_closed(stack_settings, monkeypatch):
    monkeypatch.setattr(stack_settings.telephony, "start_timeout_seconds", 0.5)

    async def scenario() -> int | None:
        async with running_bridge(stack_settings) as (url, _ctx):
            silent = TwilioEmulator(url, {})
            silent._opening = lambda: []  # type: ignore[method-assign] - connects, says nothing
            await silent.connect()
            await until(lambda: silent.server_closed, timeout=5)
            code = silent.close_code
            await silent.drop()
            return code

    assert asyncio.run(scenario()) == 4403
