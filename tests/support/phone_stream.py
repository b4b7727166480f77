"""What every provider emulator does alike: a WebSocket client that streams a caller's audio in
real time and plays back what the bridge sends, the way the provider would.

Sending: one transmitter task owns the clock. Frame ``n`` of the stream goes out at
``anchor + n * 20 ms`` (monotonic, never drifting; a stalled loop catches up instead of shifting
the schedule). ``speak`` and ``silence`` queue frames and return once their last frame is out, so
calls made back to back leave neither gap nor overlap; ``keep_alive()`` fills every tick nobody
queued audio for with silence, as a real phone stream never pauses. Without keep-alive an idle
stream simply stops sending and re-anchors when audio comes again (timestamps show the gap).

Receiving: outbound audio joins a playback buffer that drains in real time from its first
sample: a chunk plays once everything before it has played, or at once if the buffer ran dry.
``played()`` is that timeline (silence in the gaps), as one int16 array at the stream's rate.
Marks fall due when the audio before them has played; a clear cuts the timeline at that moment.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import numpy as np

from bridge import codecs
from bridge.resampling import Resampler


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class StreamEnded(Exception):
    """The stream stopped (or the socket closed) before this audio was sent."""


@dataclass(frozen=True)
class Playback:
    pcm: np.ndarray  # int16, ``rate`` Hz, from ``started_at``; zeros where nothing played
    started_at: float | None  # time.monotonic() of the first played sample
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate


@dataclass(frozen=True)
class MarkEcho:
    name: str
    at: float  # time.monotonic() the echo was sent
    played_samples: int  # audio samples (not gaps) played by then
    cleared: bool  # echoed early because of a clear


class PhoneStream:
    """Base of the provider emulators; subclasses write and read the provider's messages."""

    encoding: str  # ours: mulaw | alaw | pcm16
    rate: int
    frame_ms = 20
    buffer_limit_seconds: float | None = None  # audio queued beyond this is dropped

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        self.url, self.headers = url, headers or {}
        self.frame_samples = self.rate * self.frame_ms // 1000
        self.silent_frame = codecs.encode(self.encoding, np.zeros(self.frame_samples, np.int16))
        # what we sent
        self.frames_sent = 0
        self.frame_times: list[float] = []  # when each frame went out
        self.sent: list[dict[str, Any]] = []  # every message but media
        # what the bridge sent
        self.received: list[dict[str, Any]] = []  # every message but media
        self.media_arrivals: list[float] = []  # time.monotonic() of each media message (jitter)
        self.marks_received: list[str] = []  # marks the bridge sent
        self.mark_echoes: list[MarkEcho] = []
        self.clears_received = 0
        self.discarded_chunks = 0  # dropped: the playback buffer was full
        self.gaps: list[int] = []  # silence, in samples, each time the buffer ran dry and
        # audio came again (not counting after a clear): within a reply, an audible drop-out
        self.errors: list[str] = []  # what the provider would reject or ignore
        self.server_closed = False  # the bridge closed the socket before we hung up
        self.close_code: int | None = None
        # machinery
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._queue: deque[tuple[bytes, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        self._keep_alive = False
        self._next_due: float | None = None
        self._idle = True  # nothing was queued at the last tick: re-anchor on the next frame
        self._stream_start = 0.0
        self._send_lock = asyncio.Lock()
        self._sequence = 0
        self._closing = False
        self._stopped = False
        # playback, in samples since the first played sample
        self._t0: float | None = None
        self._ended_at: float | None = None  # playback freezes when the stream ends
        self._segments: list[tuple[int, np.ndarray]] = []
        self._end = 0  # where the buffered audio ends
        self._cleared = False  # a clear came after the last chunk
        self._marks: deque[tuple[int, str]] = deque()
        self._marks_changed = asyncio.Event()

    # -- provider specifics (subclasses) --------------------------------------------------
    def _opening(self) -> list[dict[str, Any] | Callable[[int], dict[str, Any]]]:
        raise NotImplementedError

    def _media_message(
        self, seq: int, payload: bytes, chunk: int, due: float
    ) -> dict[str, Any] | bytes:
        """A media message; bytes go out as a binary frame (SIP's audio)."""
        raise NotImplementedError

    def _stop_message(self, seq: int) -> dict[str, Any]:
        raise NotImplementedError

    async def _handle(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _handle_binary(self, data: bytes) -> None:
        """A binary frame from the bridge: only a protocol with binary audio takes one."""
        self.errors.append("a binary frame")

    # -- life -----------------------------------------------------------------------------
    async def connect(self) -> Self:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, headers=self.headers, autoping=True)
        self._stream_start = time.monotonic()
        for message in self._opening():
            await self._send(message)
        self._tasks = [
            asyncio.ensure_future(self._receive()),
            asyncio.ensure_future(self._transmit()),
            asyncio.ensure_future(self._mark_loop()),
        ]
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Hang up as the provider does: its stop message, then the socket closes."""
        await self._end_stream(send_stop=True)

    async def drop(self) -> None:
        """The socket goes away without a stop message (a network failure)."""
        await self._end_stream(send_stop=False)

    async def _end_stream(self, send_stop: bool) -> None:
        if self._closing:
            return
        self._closing = True
        send_stop = send_stop and not self._stopped  # not after the server hung up
        self._stopped = True
        self._ended_at = self._ended_at or time.monotonic()
        self._keep_alive = False
        self._fail_pending()
        for task in self._tasks[1:]:  # the transmitter and the mark timer
            task.cancel()
        ws = self._ws
        if ws is not None and not ws.closed and send_stop:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(self._stop_message)
        if ws is not None and not ws.closed:
            await ws.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    # -- sending --------------------------------------------------------------------------
    async def speak(self, pcm: np.ndarray, rate: int) -> None:
        """Send ``pcm`` (int16 mono at ``rate``) as the caller's voice, in real time."""
        pcm = np.asarray(pcm, dtype=np.int16)
        if rate != self.rate:
            resampler = Resampler(rate, self.rate)
            pcm = np.concatenate([resampler.process(pcm), resampler.flush()]).astype(np.int16)
        remainder = len(pcm) % self.frame_samples
        if remainder:
            pcm = np.concatenate([pcm, np.zeros(self.frame_samples - remainder, np.int16)])
        frames = [
            codecs.encode(self.encoding, pcm[i : i + self.frame_samples])
            for i in range(0, len(pcm), self.frame_samples)
        ]
        await self._enqueue(frames)

    async def silence(self, seconds: float) -> None:
        await self._enqueue([self.silent_frame] * round(seconds * 1000 / self.frame_ms))

    def keep_alive(self, on: bool = True) -> None:
        """Send silence on every tick with no queued audio (a phone stream never pauses)."""
        self._keep_alive = on
        self._wake.set()

    async def _enqueue(self, frames: list[bytes]) -> None:
        if self._stopped:
            raise StreamEnded("the stream has stopped")
        if not frames:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for frame in frames[:-1]:
            self._queue.append((frame, None))
        self._queue.append((frames[-1], done))
        self._wake.set()
        await done

    async def _transmit(self) -> None:
        period = self.frame_ms / 1000
        while True:
            if not self._queue and not self._keep_alive:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = time.monotonic()
            if self._next_due is None or (self._idle and now > self._next_due):
                self._next_due = now  # (re)anchor after a pause; a stall only catches up
            self._idle = False
            if self._next_due > now:
                await asyncio.sleep(self._next_due - now)
                if not self._queue and not self._keep_alive:  # keep-alive ended meanwhile
                    self._idle = True
                    continue
            due = self._next_due
            frame, done = self._queue.popleft() if self._queue else (self.silent_frame, None)
            chunk = self.frames_sent
            try:
                await self._send(
                    lambda seq, f=frame, c=chunk, d=due: self._media_message(seq, f, c, d)
                )
            except (ConnectionError, RuntimeError):  # the socket closed under us
                if done is not None and not done.done():
                    done.set_exception(StreamEnded("the socket closed"))
                self._stopped = True
                self._ended_at = self._ended_at or time.monotonic()
                self._fail_pending()
                return
            self.frames_sent += 1
            self.frame_times.append(time.monotonic())
            self._next_due = due + period
            if not self._queue and not self._keep_alive:
                self._idle = True
            if done is not None and not done.done():
                done.set_result(None)

    async def _send(
        self, message: dict[str, Any] | Callable[[int], dict[str, Any] | bytes]
    ) -> None:
        """One message; a callable gets the next sequence number (numbering is per socket).
        Bytes go out as a binary frame."""
        assert self._ws is not None
        async with self._send_lock:
            if callable(message):
                body = message(self._sequence)
                self._sequence += 1
            else:
                body = message
            if isinstance(body, bytes):
                await self._ws.send_bytes(body)
                return
            if body.get("event") != "media":
                self.sent.append(body)
            await self._ws.send_str(json.dumps(body))

    async def stall(self, seconds: float) -> None:
        """The network holds everything we send for ``seconds``; what the clock produced
        meanwhile then goes out in one burst (as a provider's media does after a stall)."""
        async with self._send_lock:
            await asyncio.sleep(seconds)

    async def send_raw(self, text: str) -> None:
        """Anything at all, as a text message (tests of what the bridge does with bad input)."""
        assert self._ws is not None
        async with self._send_lock:
            await self._ws.send_str(text)

    def _fail_pending(self) -> None:
        while self._queue:
            _, done = self._queue.popleft()
            if done is not None and not done.done():
                done.set_exception(StreamEnded("the stream stopped before this audio was sent"))

    # -- receiving ------------------------------------------------------------------------
    async def _receive(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            if raw.type == aiohttp.WSMsgType.TEXT:
                try:
                    message = json.loads(raw.data)
                except ValueError:
                    self.errors.append(f"not JSON: {raw.data[:60]!r}")
                    continue
                if type(message) is not dict:
                    self.errors.append(f"not a JSON object: {raw.data[:60]!r}")
                    continue
                if message.get("event") == "media":
                    self.media_arrivals.append(time.monotonic())
                else:
                    self.received.append(message)
                await self._handle(message)
            elif raw.type == aiohttp.WSMsgType.BINARY:
                await self._handle_binary(raw.data)
        self.close_code = self._ws.close_code
        if not self._closing:
            self.server_closed = True
            self._stopped = True
            self._ended_at = time.monotonic()
            self._fail_pending()

    @staticmethod
    def _decode_b64(value: Any) -> bytes | None:
        if type(value) is not str:
            return None
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except (binascii.Error, ValueError):
            return None

    # -- playback -------------------------------------------------------------------------
    def _now_samples(self) -> int:
        if self._t0 is None:
            return 0
        now = time.monotonic() if self._ended_at is None else self._ended_at
        elapsed = now - self._t0
        return int(elapsed * self.rate + 1e-3)

    def _play(self, pcm: np.ndarray) -> None:
        """Queue decoded audio behind what is still playing."""
        if not len(pcm):
            return
        if self._t0 is None:
            self._t0 = time.monotonic()
        now = self._now_samples()
        if self._segments and now > self._end and not self._cleared:
            self.gaps.append(now - self._end)
        self._cleared = False
        start = max(now, self._end)
        limit = self.buffer_limit_seconds
        if limit is not None and start + len(pcm) - now > limit * self.rate:
            self.discarded_chunks += 1
            return
        self._segments.append((start, pcm))
        self._end = start + len(pcm)

    def _queue_mark(self, name: str) -> None:
        self.marks_received.append(name)
        self._marks.append((max(self._now_samples(), self._end), name))
        self._marks_changed.set()

    async def _clear(self) -> list[str]:
        """Empty the playback buffer now; return the names of the marks it held."""
        self.clears_received += 1
        now = self._now_samples()
        kept = []
        for start, pcm in self._segments:
            if start >= now:
                continue
            kept.append((start, pcm[: now - start] if start + len(pcm) > now else pcm))
        self._segments = kept
        self._end = min(self._end, now)
        self._cleared = True
        pending = [name for _, name in self._marks]
        self._marks.clear()
        self._marks_changed.set()
        return pending

    async def _mark_loop(self) -> None:
        while True:
            if not self._marks:
                self._marks_changed.clear()
                await self._marks_changed.wait()
                continue
            due, name = self._marks[0]
            wait = (due - self._now_samples()) / self.rate
            if wait > 0:
                self._marks_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._marks_changed.wait(), wait)
                continue
            self._marks.popleft()
            await self._echo_mark(name, cleared=False)

    async def _echo_mark(self, name: str, cleared: bool) -> None:
        self.mark_echoes.append(MarkEcho(name, time.monotonic(), self.played_samples, cleared))

    @property
    def played_samples(self) -> int:
        """Audio samples played so far (gaps not counted)."""
        now = self._now_samples()
        return sum(max(0, min(len(pcm), now - start)) for start, pcm in self._segments)

    def played(self) -> Playback:
        """Everything played so far, as the caller heard it."""
        if self._t0 is None:
            return Playback(np.zeros(0, np.int16), None, self.rate)
        now = self._now_samples()
        end = min(now, max((s + len(p) for s, p in self._segments), default=0))
        timeline = np.zeros(end, np.int16)
        for start, pcm in self._segments:
            if start < end:
                piece = pcm[: end - start]
                timeline[start : start + len(piece)] = piece
        return Playback(timeline, self._t0, self.rate)

    # -- for tests ------------------------------------------------------------------------
    async def wait_for(self, condition: Callable[[], bool], timeout: float = 2.0) -> None:
        """Poll ``condition`` until it holds; TimeoutError says it never did."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.005)
