"""The media bridge against the real LiveKit server, no worker: what it does with bad input,
streams it must refuse, hang-ups in both directions, and that one stream's trouble stays its
own. The bridge runs in this process (its aiohttp app on a free port); a listener joins each
room to see what the bridge publishes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from livekit import api, rtc

from adapters.livekit.rooms import PLAYBACK_TOPIC, LiveKitRooms, http_url
from adapters.telephony import tokens
from bridge import codecs
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


class RawTwilio:
    """A Twilio Media Streams client written from Twilio's message reference alone: a steady
    20 ms of the caller's audio, and everything the bridge sends kept in arrival order. Marks
    are echoed only when the test says so, or at once on ``clear`` (as Twilio does)."""

    def __init__(self, url: str, parameters: dict[str, str]) -> None:
        self.url, self.parameters = url, parameters
        self.sid = "MZ" + uuid.uuid4().hex
        self.log: list[tuple[str, Any]] = []  # ("media", loud?), ("mark", name), ("clear", None)
        self.pending: list[str] = []  # marks received, not yet echoed
        self.voice: np.ndarray | None = None  # what the caller says on the next ticks
        self.sequence = 0

    async def __aenter__(self) -> RawTwilio:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "streamSid": self.sid,
                "start": {
                    "streamSid": self.sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": "CA" + "1" * 32,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self.tasks = [asyncio.ensure_future(self._talk()), asyncio.ensure_future(self._listen())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await self.ws.close()
        await self.session.close()

    async def _send(self, message: dict[str, Any]) -> None:
        self.sequence += 1
        if message["event"] != "connected":
            message["sequenceNumber"] = str(self.sequence)
        await self.ws.send_str(json.dumps(message))

    async def _talk(self) -> None:
        chunk = 0
        while True:
            frame = np.zeros(160, np.int16)
            if self.voice is not None and len(self.voice):
                frame, self.voice = self.voice[:160], self.voice[160:]
            chunk += 1
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(chunk),
                        "timestamp": str(chunk * 20),
                        "payload": base64.b64encode(codecs.encode("mulaw", frame)).decode(),
                    },
                }
            )
            await asyncio.sleep(0.02)

    async def _listen(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw.data)
            event = message["event"]
            if event == "media":
                pcm = codecs.decode("mulaw", base64.b64decode(message["media"]["payload"]))
                self.log.append(("media", bool(np.abs(pcm).max() > 2000)))
            elif event == "mark":
                self.log.append(("mark", message["mark"]["name"]))
                self.pending.append(message["mark"]["name"])
            elif event == "clear":
                self.log.append(("clear", None))
                await self.echo()  # Twilio echoes every pending mark at once on clear

    async def echo(self) -> None:
        while self.pending:
            name = self.pending.pop(0)
            await self._send({"event": "mark", "streamSid": self.sid, "mark": {"name": name}})

    def since(self, index: int, kind: str) -> list[Any]:
        return [value for k, value in self.log[index:] if k == kind]


class StandInAgent:
    """A participant playing the agent's part: a track of replies, and the worker's messages
    on the playback topic."""

    def __init__(self, settings: Settings, room_name: str) -> None:
        self.settings, self.room_name = settings, room_name
        self.room = rtc.Room()
        self.source = rtc.AudioSource(48_000, 1, queue_size_ms=100)
        self.heard: list[dict[str, Any]] = []
        self.cut = False

    async def join(self) -> None:
        token = LiveKitRooms(self.settings.livekit).join_token(
            self.room_name, "agent-stand-in", "agent", timedelta(minutes=10)
        )
        self.room.on("data_received", self._data)
        await self.room.connect(self.settings.livekit.url, token)
        track = rtc.LocalAudioTrack.create_audio_track("agent", self.source)
        await self.room.local_participant.publish_track(track)

    def _data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == PLAYBACK_TOPIC:
            self.heard.append(json.loads(packet.data))

    async def play(self, seconds: float, loud: bool = True) -> None:
        """Real time (the source's queue is short): 20 ms frames of a tone, or of silence."""
        frame = tone(0.02, 48_000) if loud else np.zeros(960, np.int16)
        self.cut = False
        for _ in range(round(seconds / 0.02)):
            if self.cut:  # the output stopped (a capture is never abandoned half-way)
                return
            await self.source.capture_frame(rtc.AudioFrame(frame.tobytes(), 48_000, 1, 960))

    async def say(self, message: dict[str, Any]) -> None:
        await self.room.local_participant.publish_data(
            json.dumps(message), reliable=True, topic=PLAYBACK_TOPIC
        )


def test_barge_in_clears_at_once_and_a_cut_reply_is_never_marked_as_heard(stack_settings):
    """A reply played in full is marked and its echo counts as heard. A reply the caller talks
    over is cleared the moment the agent yields: the provider gets ``clear`` while the caller
    is still talking, nothing more of that reply (not even what was still on its way from the
    room) and no mark for it; the worker learns how much of it went out. A mark still pending
    when a clear goes out comes back at once (Twilio's way) and is not counted as heard."""

    async def scenario() -> dict[str, Any]:
        call = Call(stack_settings)
        await call.create()
        agent = StandInAgent(stack_settings, call.room_name)
        out: dict[str, Any] = {}
        async with (
            running_bridge(stack_settings) as (url, ctx),
            RawTwilio(url, call.parameters) as phone,
        ):
            await agent.join()
            await until(lambda: ctx.metrics.counters["streams_started"] == 1)
            await agent.play(0.3, loud=False)
            # a greeting, played in full: the worker says so, the bridge marks it
            await agent.play(0.6)
            await agent.say({"type": "played"})
            await agent.play(0.4, loud=False)
            await until(lambda: bool(phone.pending))
            await phone.echo()  # the caller heard it
            await until(lambda: ctx.metrics.counters["marks_heard"] == 1)
            # a long reply; the caller talks over it and the agent yields mid-reply
            story = len(phone.log)
            playing = asyncio.ensure_future(agent.play(3.0))
            await until(lambda: phone.since(story, "media").count(True) >= 50)  # 1 s of it
            phone.voice = tone(2.0)
            await agent.say({"type": "clear", "id": 1})
            await until(lambda: bool(phone.since(story, "clear")))
            out["voice_left_at_clear"] = len(phone.voice)
            cleared = len(phone.log)
            await asyncio.sleep(0.2)  # LiveKit's queue still plays the tail out...
            agent.cut = True  # ...then the output stops
            await playing
            await agent.play(1.0, loud=False)
            out["tail_after_clear"] = phone.since(cleared, "media").count(True)
            out["story_marks"] = phone.since(story, "mark")
            await until(lambda: bool(agent.heard))
            out["report"] = agent.heard[0]
            # a short reply played in full, whose mark is still pending when the next barge-in
            # clears: Twilio echoes it at once, and that echo is no proof it was heard
            await agent.play(0.4)
            await agent.say({"type": "played"})
            await agent.play(0.4, loud=False)
            await until(lambda: bool(phone.pending))
            await agent.say({"type": "clear", "id": 2})
            await until(lambda: ctx.metrics.counters["marks_cleared"] == 1)
            out["counters"] = dict(ctx.metrics.counters)
        await agent.room.disconnect()
        await call.close()
        return out

    out = asyncio.run(scenario())
    assert out["voice_left_at_clear"] > 0, "clear reached the provider while the caller talked"
    assert out["tail_after_clear"] == 0, "nothing of the cut reply is played after the clear"
    assert out["story_marks"] == [], "a cut reply gets no mark"
    report = out["report"]
    assert report["type"] == "cleared" and report["id"] == 1, report
    assert 800 <= report["heard_ms"] <= 3000, "about what was sent of it before the clear"
    counters = out["counters"]
    assert counters["marks_heard"] == 1 and counters["marks_cleared"] == 1, counters
    assert counters["stale_frames_dropped"] > 0, counters
