"""The SIP service's media stream (bridge/protocols/sip.py) and the sipd emulator the bridge is
tested with: JSON events in text frames, G.711 audio in binary frames, both ways."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from bridge import codecs
from bridge.messages import (
    Dtmf,
    Ignored,
    MarkPlayed,
    Media,
    MediaFormat,
    ProtocolError,
    Started,
    Stopped,
)
from bridge.protocols.sip import SipStream
from tests.support.sip_stream import SipEmulator
from tests.unit.test_telephony_protocols import Loopback, tone

pytestmark = pytest.mark.unit

FRAME = bytes(range(160))  # 20 ms of G.711
START = {"event": "start", "call_id": "call-1", "token": "t0k", "codec": "PCMU",
         "sample_rate": 8000, "sip_call_id": "a84b4c76e66710@pc33"}  # fmt: skip


def started(**changes: Any) -> SipStream:
    stream = SipStream()
    stream.parse(json.dumps(START | changes))
    return stream


def test_start_names_the_call_token_codec_and_sip_call_id():
    message = SipStream().parse(json.dumps(START))
    assert isinstance(message, Started)
    assert message.parameters == {"call_id": "call-1", "token": "t0k"}
    assert message.media_format == MediaFormat("mulaw", 8000)
    assert message.provider_call_id == "a84b4c76e66710@pc33" and message.stream_id
    pcma = SipStream().parse(json.dumps(START | {"codec": "PCMA"}))
    assert isinstance(pcma, Started) and pcma.media_format == MediaFormat("alaw", 8000)


def test_audio_comes_in_binary_frames_as_sent():
    stream = started()
    assert stream.parse_binary(FRAME) == Media(FRAME)
    assert stream.parse_binary(b"\xff" * 80) == Media(b"\xff" * 80)  # any length is audio


@pytest.mark.parametrize(
    ("message", "expected"),
    [({"event": "dtmf", "digit": "5"}, Dtmf("5")), ({"event": "dtmf", "digit": "#"}, Dtmf("#")),
     ({"event": "mark", "name": "reply-1"}, MarkPlayed("reply-1")),
     ({"event": "stop", "reason": "hangup"}, Stopped()), ({"event": "stop"}, Stopped()),
     ({"event": "something-new"}, Ignored("something-new"))],
)  # fmt: skip
def test_events_map_to_bridge_messages(message, expected):
    assert started().parse(json.dumps(message)) == expected


def test_stop_says_why():
    stream = started()
    stream.parse(json.dumps({"event": "stop", "reason": "transfer"}))
    assert stream.stop_reason == "transfer"


@pytest.mark.parametrize(
    ("text", "code"),
    [("not json", "invalid_json"), ("[1]", "invalid_message"), ("{}", "missing_field"),
     (json.dumps({"event": 5}), "missing_field"),
     (json.dumps(START | {"codec": "G722"}), "unsupported_media_format"),
     (json.dumps(START | {"sample_rate": 16000}), "unsupported_media_format"),
     (json.dumps({k: v for k, v in START.items() if k != "token"}), "missing_field"),
     (json.dumps(START | {"call_id": 7}), "invalid_field"),
     (json.dumps({"event": "dtmf", "digit": "Z"}), "invalid_field"),
     (json.dumps({"event": "mark"}), "missing_field")],
)  # fmt: skip
def test_malformed_messages_are_refused_with_a_code(text, code):
    with pytest.raises(ProtocolError) as info:
        SipStream().parse(text)
    assert info.value.code == code


def test_audio_before_start_a_second_start_and_empty_frames_are_refused():
    with pytest.raises(ProtocolError) as info:
        SipStream().parse_binary(FRAME)
    assert info.value.code == "not_started"
    stream = started()
    with pytest.raises(ProtocolError) as info:
        stream.parse(json.dumps(START))
    assert info.value.code == "already_started"
    with pytest.raises(ProtocolError) as info:
        stream.parse_binary(b"")
    assert info.value.code == "bad_payload"


def test_what_the_bridge_sends_is_binary_audio_and_json_events():
    stream = started(codec="PCMA")
    assert stream.outbound_format() == MediaFormat("alaw", 8000)
    assert stream.media(FRAME) == FRAME
    assert json.loads(stream.mark("reply-1")) == {"event": "mark", "name": "reply-1"}
    assert json.loads(stream.clear()) == {"event": "clear"}
    assert json.loads(stream.close_outbound() or "") == {"event": "hangup"}
    assert stream.open_outbound() is None
    with pytest.raises(RuntimeError):
        SipStream().media(FRAME)
    with pytest.raises(RuntimeError):
        SipStream().outbound_format()


def test_emulator_streams_binary_audio_and_hears_marks_after_playback():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Media) and len(server.payloads) == 10:
            for payload in server.payloads:
                await server.send(server.protocol.media(payload))
            await server.send(server.protocol.mark("echoed"))

    async def scenario() -> tuple[Loopback, SipEmulator]:
        async with Loopback(SipStream, react) as server:
            phone = SipEmulator(server.url, {"call_id": "call-1", "token": "t0k"}, codec="PCMA")
            async with phone:
                await phone.dtmf("7")
                await phone.speak(tone(0.2), 16000)
                await phone.wait_for(lambda: server.of(MarkPlayed))
            await asyncio.sleep(0.05)
        return server, phone

    server, phone = asyncio.run(scenario())
    start = server.of(Started)[0]
    assert start.parameters == {"call_id": "call-1", "token": "t0k"}
    assert start.media_format == MediaFormat("alaw", 8000)
    assert start.provider_call_id == phone.sip_call_id
    assert server.of(Dtmf) == [Dtmf("7")]
    assert [len(m.payload) for m in server.of(Media)] == [160] * 10
    assert [(e.name, e.played_samples) for e in phone.mark_echoes] == [("echoed", 1600)]
    played = phone.played()
    assert np.array_equal(played.pcm[:1600], codecs.decode("alaw", b"".join(server.payloads)))
    assert len(phone.media_arrivals) == 10
    assert phone.errors == [] and server.errors == []
    assert server.of(Stopped) == [Stopped()] and server.protocol.stop_reason == "hangup"


def test_emulator_clear_drops_the_buffer_and_never_echoes_the_pending_marks():
    async def react(server: Loopback, message: Any) -> None:
        if isinstance(message, Started):  # a second of reply at once, then its mark
            frames = codecs.encode("mulaw", tone(1.0, 8000))
            for i in range(0, len(frames), 160):
                await server.send(server.protocol.media(frames[i : i + 160]))
            await server.send(server.protocol.mark("reply-1"))
        elif isinstance(message, Dtmf):  # barge-in
            await server.send(server.protocol.clear())

    async def scenario() -> tuple[Loopback, SipEmulator, int]:
        async with (
            Loopback(SipStream, react) as server,
            SipEmulator(server.url, {"call_id": "call-2", "token": "t0k"}) as phone,
        ):
            phone.keep_alive()
            await phone.wait_for(lambda: phone.played_samples >= 800)
            await phone.dtmf("5")
            await phone.wait_for(lambda: phone.clears_received == 1)
            heard = phone.played_samples
            await asyncio.sleep(0.1)
            assert phone.played_samples == heard  # nothing more plays after the clear
        return server, phone, heard

    server, phone, heard = asyncio.run(scenario())
    assert 800 <= heard < 8000
    assert phone.marks_dropped == ["reply-1"] and phone.mark_echoes == []
    assert server.of(MarkPlayed) == []
    assert phone.errors == [] and server.errors == []
