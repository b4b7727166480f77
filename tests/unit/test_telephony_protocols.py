"""The providers' wire formats (bridge/protocols) and the emulators the bridge is tested with.

Fixtures follow the examples in Twilio's and VoxImplant's documentation (see
docs/telephony-protocols.md), with real base64 in place of their abbreviated payloads.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from bridge import codecs
from bridge.messages import (
    Connected,
    Dtmf,
    Ignored,
    MarkPlayed,
    Media,
    MediaFormat,
    ProtocolError,
    Started,
    Stopped,
)
from bridge.protocols import PROTOCOLS, SipStream, TwilioMediaStreams, VoxImplantStream
from domain.calls import CHANNELS
from tests.support.phone_stream import StreamEnded
from tests.support.twilio_stream import TwilioEmulator
from tests.support.voximplant_stream import VoxImplantEmulator

pytestmark = pytest.mark.unit

MZ, CA, AC = "MZ" + "a" * 32, "CA" + "b" * 32, "AC" + "c" * 32
FRAME = bytes(range(160))  # 20 ms of mu-law
FRAME_B64 = base64.b64encode(FRAME).decode()


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message)


# -- Twilio: what Twilio sends ----------------------------------------------------------------
TWILIO_CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
TWILIO_START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": AC,
        "streamSid": MZ,
        "callSid": CA,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"call_id": "call-1", "token": "t0k"},
    },
    "streamSid": MZ,
}
TWILIO_MEDIA = {
    "event": "media",
    "sequenceNumber": "4",
    "media": {"track": "inbound", "chunk": "2", "timestamp": "25", "payload": FRAME_B64},
    "streamSid": MZ,
}
TWILIO_DTMF = {
    "event": "dtmf",
    "streamSid": MZ,
    "sequenceNumber": "5",
    "dtmf": {"track": "inbound_track", "digit": "1"},
}
TWILIO_MARK = {
    "event": "mark",
    "sequenceNumber": "6",
    "streamSid": MZ,
    "mark": {"name": "my label"},
}
TWILIO_STOP = {
    "event": "stop",
    "sequenceNumber": "7",
    "stop": {"accountSid": AC, "callSid": CA},
    "streamSid": MZ,
}


def started_twilio() -> TwilioMediaStreams:
    protocol = TwilioMediaStreams()
    protocol.parse(dumps(TWILIO_CONNECTED))
    protocol.parse(dumps(TWILIO_START))
    return protocol


def test_twilio_connected_opens_the_stream():
    assert TwilioMediaStreams().parse(dumps(TWILIO_CONNECTED)) == Connected()


def test_twilio_start_names_the_stream_call_format_and_parameters():
    protocol = TwilioMediaStreams()
    assert protocol.parse(dumps(TWILIO_START)) == Started(
        stream_id=MZ, provider_call_id=CA, media_format=MediaFormat("mulaw", 8000),
        parameters={"call_id": "call-1", "token": "t0k"}, tracks=("inbound",),
    )  # fmt: skip
    assert (protocol.stream_sid, protocol.call_sid, protocol.account_sid) == (MZ, CA, AC)
    assert protocol.sequence_number == 1


def test_twilio_start_without_custom_parameters_has_none():
    message = json.loads(dumps(TWILIO_START))
    del message["start"]["customParameters"]
    assert TwilioMediaStreams().parse(dumps(message)).parameters == {}


def test_twilio_media_carries_the_decoded_payload_chunk_and_timestamp():
    protocol = started_twilio()
    assert protocol.parse(dumps(TWILIO_MEDIA)) == Media(FRAME, chunk=2, timestamp_ms=25)
    assert protocol.sequence_number == 4


def test_twilio_media_of_the_outbound_track_is_ignored():
    message = json.loads(dumps(TWILIO_MEDIA))
    message["media"]["track"] = "outbound"
    assert started_twilio().parse(dumps(message)) == Ignored("media")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (TWILIO_DTMF, Dtmf("1")),
        (TWILIO_MARK, MarkPlayed("my label")),
        (TWILIO_STOP, Stopped()),
        ({"event": "speech", "streamSid": MZ, "sequenceNumber": "8"}, Ignored("speech")),
    ],
)
def test_twilio_events_map_to_bridge_messages(fixture, expected):
    assert started_twilio().parse(dumps(fixture)) == expected


def test_twilio_stop_before_start_still_ends_the_stream():
    assert TwilioMediaStreams().parse(dumps(TWILIO_STOP)) == Stopped()


def _variant(base: dict[str, Any], path: str, value: Any) -> str:
    """``base`` with the field at dotted ``path`` set to ``value`` (deleted for ...)."""
    message = json.loads(dumps(base))
    *parents, last = path.split(".")
    node = message
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return dumps(message)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"sequenceNumber": "1"}', "missing_field"),
        ('{"event": 7}', "missing_field"),
        (_variant(TWILIO_START, "start", ...), "missing_field"),
        (_variant(TWILIO_START, "start.callSid", ...), "missing_field"),
        (_variant(TWILIO_START, "start.callSid", 12), "invalid_field"),
        (_variant(TWILIO_START, "start.mediaFormat", ...), "missing_field"),
        (
            _variant(TWILIO_START, "start.mediaFormat.encoding", "audio/x-alaw"),
            "unsupported_media_format",
        ),  # fmt: skip
        (_variant(TWILIO_START, "start.mediaFormat.sampleRate", 16000), "unsupported_media_format"),
        (_variant(TWILIO_START, "start.mediaFormat.channels", 2), "unsupported_media_format"),
        (_variant(TWILIO_START, "start.tracks", "inbound"), "invalid_field"),
        (_variant(TWILIO_START, "start.customParameters", {"a": {"b": "c"}}), "invalid_field"),
        (_variant(TWILIO_START, "start.customParameters", ["a"]), "invalid_field"),
        (_variant(TWILIO_START, "sequenceNumber", "one"), "invalid_field"),
    ],
)
def test_twilio_malformed_messages_are_refused_with_a_code(text, code):
    with pytest.raises(ProtocolError) as caught:
        TwilioMediaStreams().parse(text)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (_variant(TWILIO_MEDIA, "media", ...), "missing_field"),
        (_variant(TWILIO_MEDIA, "media.payload", ...), "missing_field"),
        (_variant(TWILIO_MEDIA, "media.payload", "not base64!"), "bad_payload"),
        (_variant(TWILIO_MEDIA, "media.payload", "AAA"), "bad_payload"),  # bad padding
        (_variant(TWILIO_MEDIA, "media.payload", ""), "bad_payload"),
        (_variant(TWILIO_MEDIA, "media.payload", 42), "invalid_field"),
        (_variant(TWILIO_MEDIA, "media.chunk", "-1"), "invalid_field"),
        (_variant(TWILIO_MEDIA, "media.timestamp", "1.5"), "invalid_field"),
        (_variant(TWILIO_MEDIA, "streamSid", "MZ" + "0" * 32), "stream_mismatch"),
        (dumps(TWILIO_START), "already_started"),
        (_variant(TWILIO_DTMF, "dtmf.digit", "x"), "invalid_field"),
        (_variant(TWILIO_DTMF, "dtmf.digit", "12"), "invalid_field"),
        (_variant(TWILIO_DTMF, "dtmf", ...), "missing_field"),
        (_variant(TWILIO_MARK, "mark.name", ...), "missing_field"),
        (_variant(TWILIO_MARK, "mark", "my label"), "invalid_field"),
    ],
)
def test_twilio_malformed_messages_mid_stream_are_refused_with_a_code(text, code):
    with pytest.raises(ProtocolError) as caught:
        started_twilio().parse(text)
    assert caught.value.code == code


def test_twilio_media_before_start_is_refused():
    with pytest.raises(ProtocolError) as caught:
        TwilioMediaStreams().parse(dumps(TWILIO_MEDIA))
    assert caught.value.code == "not_started"


# -- Twilio: what we send ---------------------------------------------------------------------
def test_twilio_outbound_messages_are_shaped_as_documented():
    protocol = started_twilio()
    assert protocol.outbound_format() == MediaFormat("mulaw", 8000)
    assert protocol.open_outbound() is None and protocol.close_outbound() is None
    assert json.loads(protocol.media(FRAME)) == {
        "event": "media", "streamSid": MZ, "media": {"payload": FRAME_B64},
    }  # fmt: skip
    assert json.loads(protocol.mark("reply-1")) == {
        "event": "mark", "streamSid": MZ, "mark": {"name": "reply-1"},
    }  # fmt: skip
    assert json.loads(protocol.clear()) == {"event": "clear", "streamSid": MZ}


def test_twilio_sends_nothing_before_its_start_message():
    with pytest.raises(RuntimeError):
        TwilioMediaStreams().media(FRAME)


def test_protocols_are_keyed_by_call_channel():
    assert set(PROTOCOLS) <= set(CHANNELS)
    assert PROTOCOLS["twilio_media_streams"] is TwilioMediaStreams
    assert PROTOCOLS["voximplant"] is VoxImplantStream
    assert PROTOCOLS["sip"] is SipStream and SipStream.supports_marks
    assert TwilioMediaStreams.supports_marks and not VoxImplantStream.supports_marks
    assert TwilioMediaStreams.frame_ms == VoxImplantStream.frame_ms == 20


# -- VoxImplant: what it sends ----------------------------------------------------------------
VOX_START = {  # call.sendMediaTo(webSocket) with no parameters, as documented
    "event": "start",
    "sequenceNumber": 0,
    "start": {"mediaFormat": {"encoding": "PCM16", "sampleRate": 16000}},
}
PCM_FRAME = np.arange(-160, 160, dtype=np.int16).tobytes()  # 20 ms at 16 kHz


def vox_start(encoding: str, rate: int | None = None, **start: Any) -> str:
    media_format: dict[str, Any] = {"encoding": encoding}
    if rate is not None:
        media_format["sampleRate"] = rate
    return dumps(
        {"event": "start", "sequenceNumber": 0, "start": {"mediaFormat": media_format, **start}}
    )


def vox_media(chunk: int, timestamp: int, payload: bytes = PCM_FRAME, **extra: Any) -> str:
    media = {"chunk": chunk, "timestamp": timestamp, "payload": base64.b64encode(payload).decode()}
    return dumps({"event": "media", "sequenceNumber": chunk + 1, "media": {**media, **extra}})


def test_voximplant_default_start_is_pcm16_at_16khz():
    started = VoxImplantStream().parse(dumps(VOX_START))
    assert isinstance(started, Started)
    assert started.media_format == MediaFormat("pcm16", 16000)
    assert started.parameters == {} and started.provider_call_id is None


@pytest.mark.parametrize(
    ("encoding", "rate", "expected"),
    [
        ("PCM8", 8000, MediaFormat("pcm16", 8000)),
        ("PCM8", None, MediaFormat("pcm16", 8000)),
        ("PCM16", 8000, MediaFormat("pcm16", 8000)),
        ("PCM16", None, MediaFormat("pcm16", 16000)),
        ("ULAW", 8000, MediaFormat("mulaw", 8000)),
        ("ALAW", 8000, MediaFormat("alaw", 8000)),
        ("audio/x-mulaw", 8000, MediaFormat("mulaw", 8000)),
    ],
)
def test_voximplant_encodings_map_to_ours(encoding, rate, expected):
    assert VoxImplantStream().parse(vox_start(encoding, rate)).media_format == expected


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [("OPUS", 48000), ("ULAW", 16000), ("PCM8", 16000), ("PCM16", 48000), ("MP3", 8000)],
)
def test_voximplant_unsupported_formats_are_refused(encoding, rate):
    with pytest.raises(ProtocolError) as caught:
        VoxImplantStream().parse(vox_start(encoding, rate))
    assert caught.value.code == "unsupported_media_format"


def test_voximplant_start_with_tag_and_parameters_names_the_stream():
    parameters = {"call_id": "call-1", "token": "t0k"}
    as_object = VoxImplantStream().parse(
        vox_start("ULAW", 8000, tag="in", customParameters=parameters)
    )
    as_json = VoxImplantStream().parse(
        vox_start("ULAW", 8000, tag="in", customParameters=json.dumps(parameters))
    )
    assert as_object == as_json == Started(
        stream_id="in", provider_call_id=None, media_format=MediaFormat("mulaw", 8000),
        parameters=parameters,
    )  # fmt: skip


def test_voximplant_media_counts_chunks_from_one_and_time_in_ms():
    protocol = VoxImplantStream()
    protocol.parse(dumps(VOX_START))
    first = protocol.parse(vox_media(chunk=1000, timestamp=48_000))
    second = protocol.parse(vox_media(chunk=1001, timestamp=48_320))
    assert first == Media(PCM_FRAME, chunk=1, timestamp_ms=0)
    assert second == Media(PCM_FRAME, chunk=2, timestamp_ms=20)
    assert protocol.sequence_number == 1002


def test_voximplant_media_of_another_tag_is_ignored():
    protocol = VoxImplantStream()
    protocol.parse(vox_start("PCM16", 16000, tag="in"))
    assert protocol.parse(vox_media(0, 0, tag="other")) == Ignored("media")
    assert isinstance(protocol.parse(vox_media(0, 0, tag="in")), Media)


def test_voximplant_stop_ends_the_stream_and_a_new_one_may_start():
    protocol = VoxImplantStream()
    protocol.parse(dumps(VOX_START))
    stop = {
        "event": "stop",
        "sequenceNumber": 5,
        "stop": {"mediaInfo": {"bytesSent": 21100, "duration": 124}},
    }
    assert protocol.parse(dumps(stop)) == Stopped()
    assert isinstance(protocol.parse(vox_start("ULAW", 8000)), Started)


def test_voximplant_custom_events_are_ignored_by_name():
    assert VoxImplantStream().parse('{"customEvent": "call_info"}') == Ignored("call_info")


@pytest.mark.parametrize(
    ("setup", "text", "code"),
    [
        (False, vox_media(0, 0), "not_started"),
        (False, "{", "invalid_json"),
        (False, '{"sequenceNumber": 0}', "missing_field"),
        (False, vox_start("ULAW", 8000, customParameters="{oops"), "invalid_field"),
        (False, vox_start("ULAW", 8000, tag=5), "invalid_field"),
        (False, dumps({"event": "start", "sequenceNumber": 0, "start": {}}), "missing_field"),
        (True, dumps(VOX_START), "already_started"),
        (True, vox_media(0, 0, payload=b"\x01\x02\x03"), "bad_payload"),
        (True, vox_media(0, 0, payload=b""), "bad_payload"),
        (
            True,
            dumps({"event": "media", "sequenceNumber": 1, "media": {"chunk": 0}}),
            "missing_field",
        ),  # fmt: skip
        (
            True,
            dumps(
                {
                    "event": "media",
                    "sequenceNumber": 1,
                    "media": {"chunk": "zero", "payload": "AAAAAA=="},
                }
            ),
            "invalid_field",
        ),  # fmt: skip
    ],
)
def test_voximplant_malformed_messages_are_refused_with_a_code(setup, text, code):
    protocol = VoxImplantStream()
    if setup:
        protocol.parse(dumps(VOX_START))
    with pytest.raises(ProtocolError) as caught:
        protocol.parse(text)
    assert caught.value.code == code


# -- VoxImplant: what we send -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("inbound", "announced", "frame", "samples"),
    [
        (vox_start("PCM16", 16000), "PCM16", PCM_FRAME, 320),
        (vox_start("PCM16", 8000), "PCM8", PCM_FRAME[:320], 160),
        (vox_start("ULAW", 8000), "ULAW", FRAME, 160),
        (vox_start("ALAW", 8000), "ALAW", FRAME, 160),
    ],
)
def test_voximplant_outbound_stream_answers_in_the_callers_format(
    inbound, announced, frame, samples
):
    protocol = VoxImplantStream()
    started = protocol.parse(inbound)
    assert protocol.outbound_format() == started.media_format
    start = json.loads(protocol.open_outbound())
    rate = started.media_format.sample_rate
    assert start == {
        "event": "start", "sequenceNumber": 0,
        "start": {"mediaFormat": {"encoding": announced, "sampleRate": rate}},
    }  # fmt: skip
    first, second = json.loads(protocol.media(frame)), json.loads(protocol.media(frame))
    payload = base64.b64encode(frame).decode()
    assert first == {"event": "media", "sequenceNumber": 1,
                     "media": {"chunk": 0, "timestamp": 0, "payload": payload}}  # fmt: skip
    assert second["sequenceNumber"] == 2
    assert second["media"] == {"chunk": 1, "timestamp": samples, "payload": payload}
    stop = json.loads(protocol.close_outbound())
    assert stop["event"] == "stop" and stop["sequenceNumber"] == 3
    assert stop["stop"]["mediaInfo"]["bytesSent"] == 2 * len(frame)
    assert protocol.close_outbound() is None


def test_voximplant_has_no_marks_and_clears_through_the_scenario():
    protocol = VoxImplantStream()
    protocol.parse(dumps(VOX_START))
    assert protocol.mark("reply-1") is None
    assert json.loads(protocol.clear()) == {"customEvent": "clear"}


def test_voximplant_tags_every_outbound_message_when_asked():
    protocol = VoxImplantStream(outbound_tag="reply")
    protocol.parse(dumps(VOX_START))
    assert json.loads(protocol.open_outbound())["start"]["tag"] == "reply"
    assert json.loads(protocol.media(PCM_FRAME))["media"]["tag"] == "reply"
    assert json.loads(protocol.clear()) == {"customEvent": "clear", "tag": "reply"}
    assert json.loads(protocol.close_outbound())["stop"]["tag"] == "reply"


def test_voximplant_media_needs_the_outbound_start_first():
    protocol = VoxImplantStream()
    with pytest.raises(RuntimeError):
        protocol.outbound_format()
    protocol.parse(dumps(VOX_START))
    with pytest.raises(RuntimeError):
        protocol.media(PCM_FRAME)


# -- the emulators against a tiny bridge stand-in ---------------------------------------------
React = Callable[["Loopback", Any], Awaitable[None]]


class Loopback:
    """One WebSocket route that parses with a protocol class and lets the test react."""

    def __init__(self, protocol: type, react: React) -> None:
        self.protocol_class, self.react = protocol, react
        self.protocol: Any = None
        self.ws: web.WebSocketResponse | None = None
        self.messages: list[tuple[float, Any]] = []  # (arrival, parsed message)
        self.errors: list[ProtocolError] = []
        self.payloads: list[bytes] = []  # media payloads received, in order

    async def __aenter__(self) -> Loopback:
        app = web.Application()
        app.router.add_get("/stream", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self.runner.addresses[0][1]}/stream"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws, self.protocol = ws, self.protocol_class()
        async for raw in ws:
            try:
                if raw.type == WSMsgType.BINARY:  # SIP's audio
                    message = self.protocol.parse_binary(raw.data)
                else:
                    message = self.protocol.parse(raw.data)
            except ProtocolError as exc:
                self.errors.append(exc)
                continue
            self.messages.append((asyncio.get_running_loop().time(), message))
            if isinstance(message, Media):
                self.payloads.append(message.payload)
            await self.react(self, message)
        return ws

    def of(self, kind: type) -> list[Any]:
        return [m for _, m in self.messages if isinstance(m, kind)]

    def arrivals(self, kind: type) -> list[float]:
        return [t for t, m in self.messages if isinstance(m, kind)]

    async def send(self, text: str | bytes | None) -> None:
        assert self.ws is not None
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        elif text is not None:
            await self.ws.send_str(text)


def tone(seconds: float, rate: int = 16000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_twilio_emulator_paces_frames_and_hears_marks_after_playback():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Media) and len(server.payloads) == 10:  # echo, then mark
            for payload in server.payloads:
                await server.send(server.protocol.media(payload))
            await server.send(server.protocol.mark("echoed"))

    async def scenario() -> tuple[Loopback, TwilioEmulator]:
        async with Loopback(TwilioMediaStreams, react) as server:
            phone = TwilioEmulator(server.url, {"call_id": "call-1", "token": "t0k"})
            async with phone:
                await phone.speak(tone(0.2), 16000)
                await phone.wait_for(lambda: server.of(MarkPlayed))
            await asyncio.sleep(0.05)
        return server, phone

    server, phone = asyncio.run(scenario())
    started = server.of(Started)[0]
    assert started.parameters == {"call_id": "call-1", "token": "t0k"}
    assert started.stream_id.startswith("MZ") and len(started.stream_id) == 34
    assert started.provider_call_id.startswith("CA") and len(started.provider_call_id) == 34
    media = server.of(Media)
    assert [m.chunk for m in media] == list(range(1, 11))
    assert [m.timestamp_ms - media[0].timestamp_ms for m in media] == [20 * k for k in range(10)]
    arrivals = server.arrivals(Media)
    for k, at in enumerate(arrivals):  # never ahead of the 20 ms clock: no bunching
        assert at - arrivals[0] >= k * 0.020 - 0.005
    assert (arrivals[-1] - arrivals[0]) / 9 < 0.060
    # the mark came back once all ten echoed frames had played, and they played as sent
    assert [(e.name, e.played_samples, e.cleared) for e in phone.mark_echoes] == [
        ("echoed", 1600, False)
    ]
    assert server.of(MarkPlayed) == [MarkPlayed("echoed")]
    played = phone.played()
    assert np.array_equal(played.pcm[:1600], codecs.mulaw_decode(b"".join(server.payloads)))
    assert phone.marks_received == ["echoed"] and phone.clears_received == 0
    assert phone.gaps == []  # sent in one burst, played without a drop-out
    assert len(phone.media_arrivals) == 10
    assert phone.errors == [] and server.errors == []
    assert server.of(Stopped) == [Stopped()] and not phone.server_closed


def test_twilio_emulator_clear_drops_the_buffer_and_echoes_pending_marks():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Started):  # a whole second of reply at once, then a mark
            frames = codecs.mulaw_encode(tone(1.0, 8000))
            for i in range(0, len(frames), 160):
                await server.send(server.protocol.media(frames[i : i + 160]))
            await server.send(server.protocol.mark("reply-1"))
        elif isinstance(message, Dtmf):  # the caller interrupts: barge-in
            await server.send(server.protocol.clear())

    async def scenario() -> tuple[Loopback, TwilioEmulator, int]:
        async with (
            Loopback(TwilioMediaStreams, react) as server,
            TwilioEmulator(server.url) as phone,
        ):
            phone.keep_alive()
            await phone.wait_for(lambda: phone.played_samples >= 800)
            await phone.dtmf("5")
            await phone.wait_for(lambda: server.of(MarkPlayed))
            heard = phone.played_samples
            await asyncio.sleep(0.06)
            assert phone.played_samples == heard  # nothing more plays after the clear
        return server, phone, heard

    server, phone, heard = asyncio.run(scenario())
    assert server.of(Dtmf) == [Dtmf("5")]
    assert phone.clears_received == 1
    [echo] = phone.mark_echoes
    assert echo.name == "reply-1" and echo.cleared and echo.played_samples == heard
    assert 800 <= heard < 8000
    assert server.of(MarkPlayed) == [MarkPlayed("reply-1")]
    assert phone.errors == [] and server.errors == []


def test_twilio_emulator_speech_silence_and_keep_alive_leave_no_gaps():
    async def scenario() -> Loopback:
        async def react(server: Loopback, message: Any) -> None:
            return None

        async with Loopback(TwilioMediaStreams, react) as server:
            async with TwilioEmulator(server.url) as phone:
                await phone.speak(tone(0.1), 16000)
                await phone.silence(0.06)
                phone.keep_alive()
                await asyncio.sleep(0.1)
                await phone.speak(tone(0.1, 8000), 8000)
                phone.keep_alive(False)
            await asyncio.sleep(0.05)
        return server

    server = asyncio.run(scenario())
    media = server.of(Media)
    assert len(media) >= 5 + 3 + 5
    assert [m.chunk for m in media] == list(range(1, len(media) + 1))
    steps = {b.timestamp_ms - a.timestamp_ms for a, b in zip(media, media[1:], strict=False)}
    assert steps <= {19, 20, 21}  # one frame every 20 ms of stream time, ms rounding aside


def test_emulator_notices_when_the_bridge_closes_the_socket():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Started):  # as the bridge refuses a bad token
            assert server.ws is not None
            await server.ws.close(code=4403, message=b"invalid_token")

    async def scenario() -> TwilioEmulator:
        async with (
            Loopback(TwilioMediaStreams, react) as server,
            TwilioEmulator(server.url) as phone,
        ):
            await phone.wait_for(lambda: phone.server_closed)
            with pytest.raises(StreamEnded):
                await phone.speak(tone(0.1), 16000)
        return phone

    phone = asyncio.run(scenario())
    assert phone.server_closed and phone.close_code == 4403
    assert [m["event"] for m in phone.sent] == ["connected", "start"]  # no stop after it


@pytest.mark.parametrize(
    ("encoding", "rate", "as_json"), [("PCM16", 8000, False), ("ULAW", None, True)]
)
def test_voximplant_emulator_plays_the_bridge_stream_and_obeys_clear(encoding, rate, as_json):
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Media) and len(server.payloads) == 10:
            await server.send(server.protocol.open_outbound())
            for payload in server.payloads:  # echo, then a long reply, then a barge-in
                await server.send(server.protocol.media(payload))
            fmt = server.protocol.outbound_format()
            long_reply = codecs.encode(fmt.encoding, tone(1.0, fmt.sample_rate))
            step = len(server.payloads[0])
            for i in range(0, len(long_reply), step):
                await server.send(server.protocol.media(long_reply[i : i + step]))
            await asyncio.sleep(0.3)
            await server.send(server.protocol.clear())
        elif isinstance(message, Stopped):
            await server.send(server.protocol.close_outbound())

    async def scenario() -> tuple[Loopback, VoxImplantEmulator]:
        async with Loopback(VoxImplantStream, react) as server:
            phone = VoxImplantEmulator(
                server.url, {"call_id": "call-1", "token": "t0k"}, encoding=encoding,
                sample_rate=rate, parameters_as_json=as_json,
            )  # fmt: skip
            async with phone:
                phone.keep_alive()
                await phone.speak(tone(0.2), 16000)
                await phone.wait_for(lambda: phone.clears_received == 1)
                heard = phone.played_samples
                await asyncio.sleep(0.05)
                assert phone.played_samples == heard
            await asyncio.sleep(0.05)
        return server, phone

    server, phone = asyncio.run(scenario())
    started = server.of(Started)[0]
    assert started.parameters == {"call_id": "call-1", "token": "t0k"}
    assert started.media_format == MediaFormat(phone.encoding, phone.rate)
    assert [m.chunk for m in server.of(Media)][:10] == list(range(1, 11))
    echoed = codecs.decode(phone.encoding, b"".join(server.payloads[:10]))
    assert np.array_equal(phone.played().pcm[: len(echoed)], echoed)
    assert len(echoed) < phone.played_samples < len(echoed) + phone.rate  # cut by the clear
    assert phone.custom_events == [{"customEvent": "clear"}]
    assert phone.outbound_starts == 1 and phone.marks_received == [] and phone.gaps == []
    assert phone.errors == [] and server.errors == []
    assert server.of(Stopped) == [Stopped()]


def test_voximplant_emulator_keeps_at_most_ten_seconds_buffered():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Started):
            await server.send(server.protocol.open_outbound())
            frame = codecs.mulaw_encode(np.zeros(160, np.int16))
            for _ in range(11 * 50):  # eleven seconds at once
                await server.send(server.protocol.media(frame))

    async def scenario() -> VoxImplantEmulator:
        async with (
            Loopback(VoxImplantStream, react) as server,
            VoxImplantEmulator(server.url, encoding="ULAW") as phone,
        ):
            await phone.wait_for(lambda: len(phone.media_arrivals) == 550)
        return phone

    phone = asyncio.run(scenario())
    assert 0 < phone.discarded_chunks <= 50
    assert phone.errors == []


def test_voximplant_keys_come_as_our_scenarios_custom_event():
    protocol = VoxImplantStream()
    assert protocol.parse('{"customEvent": "dtmf", "digit": "5"}') == Dtmf("5")
    assert protocol.parse('{"customEvent": "dtmf", "digit": "#"}') == Dtmf("#")
    for bad in ('{"customEvent": "dtmf", "digit": "55"}', '{"customEvent": "dtmf"}'):
        with pytest.raises(ProtocolError):
            protocol.parse(bad)
