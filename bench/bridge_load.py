"""The load generator of ``bench/bridge.py``: many Twilio Media Streams from one asyncio process.

Each stream speaks Twilio's wire format exactly as ``tests/support/twilio_stream.py`` does
(``connected``, ``start`` with the custom parameters, then a ``media`` message every 20 ms with
160 bytes of 8 kHz mu-law, every counter a string, ``stop`` at the end), but lean: the
payloads are encoded once for all streams, each message is one string format, and one clock
task sends every open stream's next frame on each 20 ms tick (an absolute schedule; a stall
catches up by at most 5 ticks, then re-anchors and is counted). A stream whose socket has
more than ~2.5 s of media the bridge has not read gets no more until it reads (counted as
skipped): one stalled socket never holds up the others. One reader task per socket
counts the bridge's ``media`` frames and times their arrivals (client-side pacing jitter:
|interval - 20 ms|, intervals over 60 ms are gaps, counted apart); every 250th is parsed in
full and checked (this stream's SID, 160 bytes of mu-law).

Probe streams (``open(..., probe=True)``) send faint noise with a loud 20 ms marker once a
second instead of speech, and note when each marker went out (``time.monotonic()``, the
system-wide clock), so that an observer in the room can time the caller's audio end to end.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from bridge import codecs
from bridge.metrics import Histogram

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
MEDIA = ('{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
         '"timestamp":"%d","payload":"%s"},"streamSid":"%s"}')  # fmt: skip
BRIDGE_MEDIA = '{"event":"media"'  # how the bridge's media messages begin
CHECK_EVERY = 250
BACKLOG_BYTES = 32 * 1024  # ~2.5 s of media unread by the bridge: skip frames, never block


def caller_payloads(seconds: float = 1.0) -> list[str]:
    """One second of a speech-like caller signal (harmonics of 120 Hz, a 3 Hz syllable
    envelope) as base64 mu-law frames, shared by every stream (each starts at its own phase)."""
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = sum(np.sin(2 * np.pi * 120 * k * t + k) / k for k in range(1, 20))
    pcm = pcm * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    pcm = (pcm / np.max(np.abs(pcm)) * 8000).astype(np.int16)
    encoded = codecs.mulaw_encode(pcm)
    return [
        binascii.b2a_base64(encoded[i : i + FRAME_BYTES], newline=False).decode()
        for i in range(0, len(encoded), FRAME_BYTES)
    ]


MARKER_EVERY = 50  # frames: a probe stream's marker once a second


def probe_payloads() -> tuple[list[str], str]:
    """A probe stream's audio: faint noise (never digital silence), and a marker frame (20 ms
    of 1 kHz near -6 dBFS) that stands out by 30 dB once through Opus."""
    rng = np.random.default_rng(7)
    quiet = [codecs.mulaw_encode((rng.standard_normal(FRAME_BYTES) * 60).astype(np.int16))
             for _ in range(MARKER_EVERY)]  # fmt: skip
    t = np.arange(FRAME_BYTES) / 8000
    marker = codecs.mulaw_encode((np.sin(2 * np.pi * 1000 * t) * 16000).astype(np.int16))
    b64 = [binascii.b2a_base64(f, newline=False).decode() for f in (*quiet, marker)]
    return b64[:-1], b64[-1]


@dataclass(eq=False)
class Stream:
    index: int
    ws: aiohttp.ClientWebSocketResponse
    sid: str
    call_sid: str
    account_sid: str
    seq: int = 2  # "connected" has none, "start" is 1
    chunk: int = 0
    frames_in: int = 0
    gaps_in: int = 0
    last_in: float = 0.0
    other_in: int = 0  # marks, clears
    bad_in: int = 0
    open: bool = True
    media_from: float = 0.0  # loop time of its first media message
    opened_at: float = 0.0
    first_in_at: float = 0.0  # the bridge's first media frame back (tone: bridged and hearing)
    skipped: int = 0  # frames not sent: the bridge was not reading (socket backlog)
    transport: Any = None
    probe: bool = False  # noise and a marker a second instead of speech, for ``markers``
    markers: list[float] = field(default_factory=list)  # time.monotonic() of each marker sent
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None


@dataclass
class Load:
    """Open streams, the clock that feeds them, and what came back."""

    url: str
    media_delay: float = 0.0  # seconds from ``start`` to the first media (Twilio: none)
    payloads: list[str] = field(default_factory=caller_payloads)
    probe_audio: tuple[list[str], str] = field(default_factory=probe_payloads)
    streams: list[Stream] = field(default_factory=list)
    jitter: Histogram = field(default_factory=Histogram)  # client side, bridge -> us
    late: Histogram = field(default_factory=Histogram)  # our clock's lateness per tick
    resyncs: int = 0
    send_errors: int = 0
    session: aiohttp.ClientSession | None = None
    clock: asyncio.Task[None] | None = None

    async def open(self, index: int, parameters: dict[str, str], probe: bool = False) -> Stream:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        ws = await self.session.ws_connect(self.url, autoping=True, max_msg_size=1 << 16)
        s = Stream(index, ws, "MZ" + secrets.token_hex(16), "CA" + secrets.token_hex(16),
                   "AC" + secrets.token_hex(16), probe=probe)  # fmt: skip
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call",
                                      "version": "1.0.0"}))  # fmt: skip
        await ws.send_str(json.dumps({
            "event": "start", "sequenceNumber": "1",
            "start": {
                "accountSid": s.account_sid, "streamSid": s.sid, "callSid": s.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
            "streamSid": s.sid,
        }))  # fmt: skip
        s.opened_at = asyncio.get_running_loop().time()
        s.media_from = s.opened_at + self.media_delay
        s.transport = getattr(getattr(ws, "_writer", None), "transport", None)
        s.reader = asyncio.create_task(self._read(s))
        self.streams.append(s)
        if self.clock is None:
            self.clock = asyncio.create_task(self._run_clock())
        return s

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        payloads, n = self.payloads, len(self.payloads)
        quiet, marker = self.probe_audio
        due = loop.time()
        while True:
            due += period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 5 * period:
                self.resyncs += 1
                due = loop.time()
            self.late.add(max(0.0, loop.time() - due) * 1000)
            now = loop.time()
            for s in self.streams:
                if not s.open or s.media_from > now:
                    continue
                if s.transport is not None and s.transport.get_write_buffer_size() > BACKLOG_BYTES:
                    s.skipped += 1  # one stalled socket must not hold up the shared clock
                    continue
                chunk = s.chunk + 1
                if s.probe:
                    beat = s.chunk % MARKER_EVERY
                    payload = marker if beat == MARKER_EVERY - 1 else quiet[beat]
                else:
                    payload = payloads[(s.index * 7 + s.chunk) % n]
                text = MEDIA % (s.seq, chunk, s.chunk * FRAME_MS, payload, s.sid)
                s.seq += 1
                s.chunk = chunk
                if s.probe and payload is marker:
                    s.markers.append(time.monotonic())
                try:
                    await s.ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self.send_errors += 1
                    s.open = False

    async def _read(self, s: Stream) -> None:
        clock = time.perf_counter
        try:
            async for raw in s.ws:
                if raw.type != aiohttp.WSMsgType.TEXT:
                    s.bad_in += 1
                    continue
                data: str = raw.data
                if not data.startswith(BRIDGE_MEDIA):
                    s.other_in += 1
                    continue
                now = clock()
                if not s.first_in_at:
                    s.first_in_at = asyncio.get_running_loop().time()
                if s.last_in:
                    interval = (now - s.last_in) * 1000
                    if interval < 3 * FRAME_MS:
                        self.jitter.add(abs(interval - FRAME_MS))
                    else:
                        s.gaps_in += 1
                s.last_in = now
                s.frames_in += 1
                if s.frames_in % CHECK_EVERY == 1 and not self._well_formed(s, data):
                    s.bad_in += 1
        finally:
            s.open = False
            s.close_code = s.ws.close_code

    @staticmethod
    def _well_formed(s: Stream, data: str) -> bool:
        try:
            message = json.loads(data)
            payload = binascii.a2b_base64(message["media"]["payload"], strict_mode=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return False
        return message.get("streamSid") == s.sid and len(payload) == FRAME_BYTES

    def reset_window(self) -> None:
        self.jitter, self.late = Histogram(), Histogram()

    async def stop(self, s: Stream) -> None:
        """Twilio's ``stop`` (the caller hung up), then close the socket."""
        if s.open:
            s.open = False
            with contextlib.suppress(ConnectionError, RuntimeError):
                await s.ws.send_str(json.dumps({
                    "event": "stop", "sequenceNumber": str(s.seq),
                    "stop": {"accountSid": s.account_sid, "callSid": s.call_sid},
                    "streamSid": s.sid,
                }))  # fmt: skip
        await s.ws.close()
        if s.reader is not None:
            await asyncio.gather(s.reader, return_exceptions=True)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(s) for s in self.streams), return_exceptions=True)
        self.streams.clear()
        if self.clock is not None:
            self.clock.cancel()
            await asyncio.gather(self.clock, return_exceptions=True)
            self.clock = None
        if self.session is not None:
            await self.session.close()
            self.session = None
