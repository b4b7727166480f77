"""One provider stream, bridged into its call's LiveKit room as the caller.

In: the provider's media (mu-law/A-law/PCM16 at 8 or 16 kHz) is decoded, resampled to 48 kHz
and published as the caller's microphone track; DTMF keys go into the room as DTMF. Out: the
agent's track is resampled to the provider's rate, encoded, and sent in 20 ms frames by the
process-wide pacer. The worker speaks to the bridge on the room's playback topic
(``voxagent.playback``): ``played`` when a reply has played out in full, and the bridge then
sends a mark after the reply's last audio (to learn when the caller heard it); ``clear`` the
moment the agent yields to the caller (barge-in), and ``barge_in`` then drops the unsent audio
and what is still on its way from the room, withdraws the reply's mark, voids the marks the
provider has not echoed yet (Twilio echoes them at once on ``clear``: they were not heard),
tells the provider to drop what it has buffered, and answers ``cleared`` with how much of the
reply went out to the caller. Hang-ups go both ways: the provider's ``stop`` (or a
closed socket) takes the caller out of the room, the room closing (the agent hung up) closes
the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from livekit import rtc

from adapters.livekit.ffi_routing import FfiRouter
from adapters.livekit.rooms import PLAYBACK_TOPIC, LiveKitRooms
from adapters.telephony import tokens
from bridge import codecs
from bridge.messages import (
    Dtmf,
    MarkPlayed,
    Media,
    MediaFormat,
    ProtocolError,
    Started,
    Stopped,
)
from bridge.metrics import BridgeMetrics
from bridge.pacer import Pacer
from bridge.playout import QUIET_RMS, PlayoutDepth, rms
from bridge.resampling import Resampler

log = logging.getLogger(__name__)
ROOM_RATE = 48_000  # what LiveKit's Opus tracks carry
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14,
              "D": 15}  # fmt: skip  # RFC 4733 event codes
MAX_BAD_MESSAGES = 20  # this many malformed messages in a row close the stream
CATCH_UP_FRAMES = 2  # more than this buffered: two frames per tick (a standing queue is latency)
MARK_DELAY_SECONDS = 0.15  # the end of a reply reaches us after the worker's "played"
# After a clear, what the room still delivers of the interrupted reply (LiveKit's own queue and
# the audio in flight) is dropped until the agent's track goes quiet, or for at most this long.
STALE_AUDIO_SECONDS = 0.6
STALE_QUIET_FRAMES = 5  # this many quiet 20 ms frames in a row end the stale audio
JOIN_WAIT_SECONDS = 30.0  # a stream that ends mid-join waits this long for the join to end
# LiveKit's source plays caller audio out in real time from a queue of this size; captures
# wait while it is full. Audio waiting here beyond the backlog limit (a stalled source) is
# dropped, oldest first.
SOURCE_QUEUE_MS = 200
BACKLOG_LIMIT = ROOM_RATE * 500 // 1000  # samples


@dataclass
class BridgeContext:
    """What every stream of a bridge process shares."""

    telephony: Any  # infra.settings.TelephonySettings
    livekit: Any  # infra.settings.LiveKitSettings
    metrics: BridgeMetrics = field(default_factory=BridgeMetrics)
    pacer: Pacer = field(default_factory=Pacer)
    calls: set[str] = field(default_factory=set)  # calls with a live stream here
    router: FfiRouter = field(default_factory=FfiRouter.install)

    @property
    def rooms(self) -> LiveKitRooms:
        return LiveKitRooms(self.livekit)


class StreamClosed(Exception):
    """End this stream now (the reason is logged; the socket closes cleanly)."""


class StreamSession:
    def __init__(self, ws: web.WebSocketResponse, protocol: Any, ctx: BridgeContext) -> None:
        self.ws, self.protocol, self.ctx = ws, protocol, ctx
        self.metrics = ctx.metrics
        self.room: rtc.Room | None = None
        self.source: rtc.AudioSource | None = None
        self.grant: tokens.StreamGrant | None = None
        self.started: Started | None = None
        self.inbound_format: MediaFormat | None = None
        self.outbound_format: MediaFormat | None = None
        self.up: Resampler | None = None
        self.down: Resampler | None = None  # the agent's audio, to the provider's rate
        self.last_chunk = 0
        self.arrived = 0  # perf_counter_ns of the media message being handled
        # The provider's messages are read while we join the room (a socket left unread would
        # miss its heartbeat); media that arrives meanwhile is dropped: handed over in one
        # burst it would stay in front of the agent as latency for the rest of the call.
        self.joining: asyncio.Task[None] | None = None
        self.listener = False  # the agent has subscribed to the caller's track
        self.backlog: list[tuple[np.ndarray, int]] = []  # caller audio waiting for LiveKit
        self.capturing = False
        self.backlog_samples = 0
        self.playout = PlayoutDepth()  # drops pauses' silence while the caller's audio runs late
        self.bad_messages = 0
        # outbound: encoded bytes waiting for the pacer, and when each frame's audio arrived
        self.out = bytearray()
        self.out_arrivals: deque[tuple[int, int]] = deque()  # (bytes, perf_counter_ns)
        self.frame_bytes = 0
        self.last_send = 0.0
        self.mark_at: float | None = None
        self.marks_sent = 0
        self.marks_heard = 0
        self.marks_pending: set[str] = set()  # sent, not yet echoed
        self.marks_void: set[str] = set()  # pending when we cleared: their echo is no hearing
        # the reply being played: bytes of it sent to the provider since its first sound
        self.reply_open = False
        self.reply_bytes = 0
        self.stale_until: float | None = None  # dropping the interrupted reply's tail until then
        self.stale_quiet = 0
        self.outbound_open = False  # VoxImplant: our own stream's start has been sent
        self.binary_media = callable(getattr(protocol, "parse_binary", None))
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = asyncio.Event()
        self.ending = False
        self.close_reason = "stream_stopped"

    # -- the stream's life ----------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._start()
            await self._pump()
        except StreamClosed as exc:
            self.close_reason = str(exc)
        except tokens.StreamRefused as exc:
            self.metrics.counters[f"refused_{exc.code}"] += 1
            log.warning("stream refused (%s): %s", exc.code, exc.message)
            self.close_reason = exc.code
            await self.ws.close(code=4403, message=exc.code.encode()[:120])
        finally:
            await self._finish()

    async def _start(self) -> None:
        timeout = self.ctx.telephony.start_timeout_seconds
        try:
            started = await asyncio.wait_for(self._until_started(), timeout)
        except TimeoutError:
            raise tokens.StreamRefused("no_start", f"no start message in {timeout:g} s") from None
        grant = tokens.verify(
            started.parameters.get("token"),
            self.ctx.telephony.stream_secret.get_secret_value(), self.protocol.channel,
        )  # fmt: skip
        if started.parameters.get("call_id", grant.call_id) != grant.call_id:
            raise tokens.StreamRefused("wrong_call", "the token is for another call")
        if grant.call_id in self.ctx.calls:
            raise tokens.StreamRefused("call_streaming", "the call already has a stream")
        if not await self.ctx.rooms.exists(grant.room_name):
            raise tokens.StreamRefused("call_not_active", "the call has ended or never began")
        self.ctx.calls.add(grant.call_id)
        self.grant, self.started = grant, started
        self.inbound_format = started.media_format
        self.outbound_format = self.protocol.outbound_format()
        self.frame_bytes = (
            self.outbound_format.sample_rate * self.protocol.frame_ms // 1000
            * codecs.bytes_per_sample(self.outbound_format.encoding)
        )  # fmt: skip
        self.up = Resampler(self.inbound_format.sample_rate, ROOM_RATE)

    async def _until_started(self) -> Started:
        while True:
            message = await self._next()
            if isinstance(message, Started):
                return message
            if isinstance(message, Media):
                self._bad(ProtocolError("media_before_start", "media before the start message"))
            elif isinstance(message, Stopped):
                raise StreamClosed("stopped_before_start")

    async def _join(self) -> None:
        assert self.grant is not None and self.started is not None
        started = self.started
        room = rtc.Room()
        room.on("track_subscribed", self._track_subscribed)
        room.on("data_received", self._data_received)
        room.on("participant_disconnected", self._participant_left)
        room.on("disconnected", self._room_closed)
        identity = f"phone-{started.stream_id}"[:128]
        token = self.ctx.rooms.join_token(
            self.grant.room_name, identity, "Phone caller", timedelta(hours=6)
        )
        await room.connect(self.ctx.livekit.url, token, rtc.RoomOptions(auto_subscribe=True))
        self.ctx.router.register_room(room)
        self.room = room
        self.source = rtc.AudioSource(ROOM_RATE, 1, queue_size_ms=SOURCE_QUEUE_MS)
        track = rtc.LocalAudioTrack.create_audio_track("phone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        published = await room.local_participant.publish_track(track, options)
        # Nobody hears the caller until the agent has subscribed; audio captured before that
        # reaches the agent in one burst when its subscription starts, which its jitter buffer
        # then keeps as delay.
        self._spawn(self._until_listened(published), "listener")
        for participant in room.remote_participants.values():  # the agent may be there first
            for publication in participant.track_publications.values():
                if publication.track is not None and publication.subscribed:
                    self._track_subscribed(publication.track, publication, participant)
        if self.ending:
            return  # the provider went away while we joined: _finish leaves the room again
        self.metrics.counters["streams_started"] += 1
        assert self.inbound_format is not None
        log.info("stream %s bridged into call %s (%s, %s %d Hz)", started.stream_id,
                 self.grant.call_id, self.protocol.channel, self.inbound_format.encoding,
                 self.inbound_format.sample_rate)  # fmt: skip

    async def _until_listened(self, publication: rtc.LocalTrackPublication) -> None:
        await publication.wait_for_subscription()
        self.listener = True

    async def _pump(self) -> None:
        """The provider's messages, from while we join the room until it stops or the room
        closes; a failed join ends the stream."""
        reader = asyncio.ensure_future(self._read_loop())
        closed = asyncio.ensure_future(self.closing.wait())
        self.joining = joining = asyncio.ensure_future(self._join())
        waiting: set[asyncio.Future[Any]] = {reader, closed, joining}
        try:
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if joining in done:
                    joining.result()
                if done - {joining}:
                    break
        finally:
            reader.cancel()
            closed.cancel()
        if reader in done and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]

    async def _read_loop(self) -> None:
        while True:
            message = await self._next()
            if isinstance(message, Media):
                self._caller_audio(message)
            elif isinstance(message, Dtmf):
                await self._dtmf(message.digit)
            elif isinstance(message, MarkPlayed):
                self._mark_echoed(message.name)
            elif isinstance(message, Stopped):
                raise StreamClosed("stream_stopped")
            elif isinstance(message, Started):
                self._bad(ProtocolError("duplicate_start", "a second start message"))

    async def _next(self) -> Any:
        """The next parsed message; malformed ones are logged and skipped (too many in a row
        close the stream); a closed socket ends the stream. Binary frames are audio for a
        protocol that has ``parse_binary`` (SIP), a protocol error for the others."""
        while True:
            raw = await self.ws.receive()
            arrived = time.perf_counter_ns()
            binary = raw.type == WSMsgType.BINARY and self.binary_media
            if raw.type == WSMsgType.TEXT or binary:
                try:
                    if binary:
                        message = self.protocol.parse_binary(raw.data)
                    else:
                        message = self.protocol.parse(raw.data)
                except ProtocolError as exc:
                    self._bad(exc)
                    continue
                self.bad_messages = 0
                if isinstance(message, Media):
                    self.arrived = arrived
                return message
            if raw.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                raise StreamClosed("socket_closed")
            if raw.type == WSMsgType.ERROR:
                raise StreamClosed(f"socket_error: {self.ws.exception()!r}")
            self._bad(ProtocolError("unexpected_frame", f"a {raw.type.name} WebSocket frame"))

    def _bad(self, exc: ProtocolError) -> None:
        self.bad_messages += 1
        self.metrics.counters[f"protocol_error_{exc.code}"] += 1
        log.warning("stream of call %s: %s", self._call(), exc)
        if self.bad_messages >= MAX_BAD_MESSAGES:
            raise StreamClosed(f"{MAX_BAD_MESSAGES} malformed messages in a row")

    # -- caller -> room -------------------------------------------------------------------
    def _caller_audio(self, media: Media) -> None:
        if media.chunk is not None:
            if media.chunk <= self.last_chunk:
                self.metrics.counters["media_out_of_order"] += 1
                return  # late or repeated audio is worse than none
            self.last_chunk = media.chunk
        if self.source is None:
            self.metrics.counters["caller_frames_before_join"] += 1
            return  # sent while we joined the room: nobody could hear it yet
        if not self.listener:
            self.metrics.counters["caller_frames_before_listener"] += 1
            return
        assert self.inbound_format is not None and self.up is not None
        try:
            pcm = codecs.decode(self.inbound_format.encoding, media.payload)
        except ValueError as exc:
            self._bad(ProtocolError("invalid_media", str(exc)))
            return
        if not self.playout.admit(pcm, self.inbound_format.sample_rate, self.arrived / 1e9):
            self.metrics.counters["caller_silence_trimmed_ms"] += round(
                len(pcm) * 1000 / self.inbound_format.sample_rate
            )
            return
        samples = self.up.process(pcm)
        if len(samples):
            self.backlog.append((samples, self.arrived))
            self.backlog_samples += len(samples)
            while self.backlog_samples > BACKLOG_LIMIT and len(self.backlog) > 1:
                dropped, _ = self.backlog.pop(0)
                self.backlog_samples -= len(dropped)
                self.playout.dropped(len(dropped) / ROOM_RATE)
                self.metrics.counters["caller_frames_dropped"] += 1
            if not self.capturing:
                self._capture_next()

    def _capture_next(self) -> None:
        """The next captured audio into LiveKit: one capture in flight per source; frames that
        arrive meanwhile go together in the next one."""
        if not self.backlog or self.source is None or self.ending:
            self.capturing = False
            return
        frames, self.backlog, self.backlog_samples = self.backlog, [], 0
        samples = frames[0][0] if len(frames) == 1 else np.concatenate([f for f, _ in frames])
        self.capturing = True
        handed = time.perf_counter_ns()
        self.ctx.router.capture(self.source, samples, ROOM_RATE, self._captured)
        for _, arrived in frames:
            self.metrics.inbound.add((handed - arrived) / 1e6)

    def _captured(self, error: str) -> None:
        if error:
            self.metrics.counters["capture_refused"] += 1
            log.warning("call %s: LiveKit refused caller audio: %s", self._call(), error)
        self._capture_next()

    async def _dtmf(self, digit: str) -> None:
        code = DTMF_CODES.get(digit)
        if code is None:
            self._bad(ProtocolError("invalid_dtmf", f"{digit!r} is not a DTMF key"))
            return
        if self.source is None:  # still joining: nobody in the room to hear it
            self.metrics.counters["dtmf_before_join"] += 1
            return
        assert self.room is not None
        await self.room.local_participant.publish_dtmf(code=code, digit=digit)
        self.metrics.counters["dtmf"] += 1

    # -- room -> caller -------------------------------------------------------------------
    def _track_subscribed(self, track: Any, publication: Any, participant: Any) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or self._spawned("agent-audio"):
            return
        self._spawn(self._agent_audio(track), "agent-audio")

    def _spawn(self, work: Any, name: str) -> None:
        """A task of this stream's (cancelled when the stream ends)."""
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _spawned(self, name: str) -> bool:
        return any(task.get_name() == name for task in self.tasks)

    async def _agent_audio(self, track: Any) -> None:
        assert self.outbound_format is not None
        fmt = self.outbound_format
        self.down = Resampler(ROOM_RATE, fmt.sample_rate)
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=ROOM_RATE, num_channels=1, frame_size_ms=20
        )
        self.ctx.router.register_stream(stream)
        self.ctx.pacer.add(self)
        try:
            async for event in stream:
                arrived = time.perf_counter_ns()
                pcm = np.frombuffer(event.frame.data, dtype=np.int16)
                if self.stale_until is not None and self._stale(pcm):
                    self.metrics.counters["stale_frames_dropped"] += 1
                    continue
                if not self.reply_open and rms(pcm) >= QUIET_RMS:
                    self.reply_open = True  # the reply's first sound: count what goes out
                encoded = codecs.encode(fmt.encoding, self.down.process(pcm))
                if encoded:
                    self.out += encoded
                    self.out_arrivals.append((len(encoded), arrived))
        finally:
            self.ctx.pacer.discard(self)
            self.ctx.router.unregister_stream(stream)
            await stream.aclose()

    async def tick(self, now: float) -> None:
        """The pacer's 20 ms: send the next frame (two when behind), then a due mark. A socket
        that closes under us ends the stream quietly (its reader sees the close)."""
        try:
            await self._send_due(now)
        except ConnectionResetError:
            self.ctx.pacer.discard(self)
            self.metrics.counters["send_on_closed_socket"] += 1

    async def _send_due(self, now: float) -> None:
        frames = 2 if len(self.out) > CATCH_UP_FRAMES * self.frame_bytes else 1
        for n in range(frames):
            if len(self.out) < self.frame_bytes or self.ws.closed:
                break
            if not self.outbound_open:
                self.outbound_open = True
                opening = self.protocol.open_outbound()
                if opening is not None:
                    await self.ws.send_str(opening)
            chunk = bytes(self.out[: self.frame_bytes])
            del self.out[: self.frame_bytes]
            await self._send(self.protocol.media(chunk))
            if self.reply_open:
                self.reply_bytes += len(chunk)
            self._sent(len(chunk), paced=n == 0)
        if self.mark_at is not None and now >= self.mark_at and not self.ws.closed:
            self.mark_at = None  # the reply played in full: its mark follows its last audio
            self.reply_open, self.reply_bytes = False, 0
            self.marks_sent += 1
            name = f"reply-{self.marks_sent}"
            mark = self.protocol.mark(name)
            if mark is not None:
                self.marks_pending.add(name)
                await self.ws.send_str(mark)
            else:  # no marks (VoxImplant): paced in real time, the reply is out as it is sent
                self.marks_heard += 1
                self.metrics.counters["marks_heard"] += 1

    async def _send(self, frame: str | bytes) -> None:
        """A protocol's frame: text (JSON) or, for audio in binary frames (SIP), bytes."""
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    def _sent(self, size: int, paced: bool) -> None:
        sent = time.perf_counter_ns()
        if self.last_send and paced:
            interval_ms = (sent - self.last_send) / 1e6
            if interval_ms < 3 * self.protocol.frame_ms:  # continuous audio: pacing jitter
                self.metrics.pacing.add(abs(interval_ms - self.protocol.frame_ms))
        self.last_send = sent
        while size > 0 and self.out_arrivals:
            left, arrived = self.out_arrivals[0]
            if left > size:
                self.out_arrivals[0] = (left - size, arrived)
                return
            size -= left
            self.out_arrivals.popleft()
            self.metrics.outbound.add((sent - arrived) / 1e6)

    def _stale(self, pcm: np.ndarray) -> bool:
        """Whether this frame of the agent's track is still the interrupted reply's tail."""
        self.stale_quiet = self.stale_quiet + 1 if rms(pcm) < QUIET_RMS else 0
        assert self.stale_until is not None
        if self.stale_quiet >= STALE_QUIET_FRAMES or time.monotonic() >= self.stale_until:
            self.stale_until = None  # the track went quiet: what follows is a new reply
            return False
        return True

    def _data_received(self, packet: Any) -> None:
        if packet.topic != PLAYBACK_TOPIC:
            return
        try:
            message = json.loads(packet.data)
            kind = message.get("type")
        except (ValueError, AttributeError):
            return
        if kind == "clear":
            sender = getattr(packet.participant, "identity", None)
            asyncio.ensure_future(self.barge_in(message.get("id"), sender))
        elif kind == "played":  # a reply played out in full: mark it after its last audio
            self.mark_at = asyncio.get_running_loop().time() + MARK_DELAY_SECONDS

    async def barge_in(self, clear_id: Any = None, reply_to: str | None = None) -> None:
        """The agent yielded to the caller: nothing more of the interrupted reply reaches them.

        The one place every protocol's barge-in goes through: the unsent audio and the reply's
        tail still coming from the room are dropped, the reply's mark is withdrawn (it was not
        heard in full), marks the provider has not echoed yet are void (Twilio echoes them at
        once on ``clear``), the protocol's ``clear()`` goes out (Twilio ``clear``, VoxImplant
        ``{"customEvent": "clear"}``, SIP's ``clear`` frame), and the worker hears back how
        much of the reply was sent to the caller."""
        heard_ms = self.reply_bytes * 1000 // self._bytes_per_second() if self.reply_open else 0
        self.out.clear()
        self.out_arrivals.clear()
        self.mark_at = None
        self.reply_open, self.reply_bytes = False, 0
        self.stale_until, self.stale_quiet = time.monotonic() + STALE_AUDIO_SECONDS, 0
        if self.down is not None and self.outbound_format is not None:
            self.down = Resampler(ROOM_RATE, self.outbound_format.sample_rate)  # no cut samples
        self.marks_void |= self.marks_pending
        self.marks_pending.clear()
        self.metrics.counters["clears"] += 1
        message = self.protocol.clear()
        if message is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(message)
        if clear_id is not None and reply_to and self.room is not None:
            report = {"type": "cleared", "id": clear_id, "heard_ms": heard_ms}
            with contextlib.suppress(Exception):  # the room may be closing
                await self.room.local_participant.publish_data(
                    json.dumps(report), reliable=True, topic=PLAYBACK_TOPIC,
                    destination_identities=[reply_to],
                )  # fmt: skip

    def _bytes_per_second(self) -> int:
        fmt = self.outbound_format
        assert fmt is not None
        return fmt.sample_rate * codecs.bytes_per_sample(fmt.encoding)

    def _mark_echoed(self, name: str) -> None:
        if name in self.marks_void:  # echoed because we cleared: the caller did not hear it all
            self.marks_void.discard(name)
            self.metrics.counters["marks_cleared"] += 1
            log.debug("call %s: %s was cleared, not heard", self._call(), name)
            return
        self.marks_pending.discard(name)
        self.marks_heard += 1
        self.metrics.counters["marks_heard"] += 1
        log.debug("call %s: the caller heard %s", self._call(), name)

    def _participant_left(self, participant: Any) -> None:
        if self.ending:
            return
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.close_reason = "agent_left"
            self.closing.set()

    def _room_closed(self, reason: Any = None) -> None:
        if self.ending:  # our own disconnect
            return
        self.close_reason = "room_closed"
        self.closing.set()

    # -- the end --------------------------------------------------------------------------
    async def _finish(self) -> None:
        self.ending = True
        self.ctx.pacer.discard(self)
        if self.joining is not None and not self.joining.done():
            # the provider went away mid-join: let the join end, so that the room it joins is
            # left again below (a join cut short would leave a caller in the room)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.joining), JOIN_WAIT_SECONDS)
            self.joining.cancel()  # still joining after that: give up on it
        for task in tuple(self.tasks):
            task.cancel()
        if self.grant is not None:
            self.ctx.calls.discard(self.grant.call_id)
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.disconnect()
            self.ctx.router.unregister_room(self.room)
        if self.source is not None:
            with contextlib.suppress(Exception):
                await self.source.aclose()
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                closing = self.protocol.close_outbound() if self.outbound_open else None
                if closing is not None:
                    await self.ws.send_str(closing)
                await self.ws.close()
        if self.grant is not None:
            self.metrics.counters[f"ended_{self.close_reason.split(':')[0]}"] += 1
            log.info("stream of call %s ended: %s (bridge counters: %s)", self.grant.call_id,
                     self.close_reason, dict(self.metrics.counters))  # fmt: skip

    def _call(self) -> str:
        return self.grant.call_id if self.grant is not None else "(not started)"
