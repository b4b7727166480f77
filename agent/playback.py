"""The worker's side of the media bridge's playback topic (phone calls only).

LiveKit Agents yields to a caller who talks over a reply by *pausing* the reply's audio (it
resumes the reply if the caller said nothing: a false interruption) and interrupts the reply
only once the caller's turn has been understood, seconds later. A phone provider must drop the
audio it has buffered at the pause, not then, so ``YieldingAudioOutput`` wraps the session's
audio output and tells the bridge (``adapters.livekit.rooms.PLAYBACK_TOPIC``, reliable data):

- ``{"type": "clear", "id": n}`` the moment the agent yields (the output is paused, or its
  buffer cleared by an interruption), once per yield;
- ``{"type": "played"}`` when a stretch of speech has played out in full (the bridge marks it
  after its last audio; a reply that was cut off is never marked).

The bridge answers each clear with ``{"type": "cleared", "id": n, "heard_ms": ms}``: how much
of the reply it had sent to the caller. ``PlaybackLink.heard_text`` trims the interrupted
reply's text (LiveKit's synchronized transcript at LiveKit's own playout position, which is
ahead of the caller by the bridge's and the provider's buffers) to what the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents.voice import io

from adapters.livekit.rooms import PLAYBACK_TOPIC

log = logging.getLogger(__name__)
REPORT_WAIT_SECONDS = 1.0  # how long an interrupted reply's transcript waits for the bridge


def heard_part(text: str, played_seconds: float, heard_seconds: float) -> str:
    """The words of ``text`` (what played in ``played_seconds``) that fit in ``heard_seconds``,
    assuming an even speaking rate over its characters; whole words only."""
    if heard_seconds >= played_seconds or played_seconds <= 0:
        return text
    budget = int(len(text) * max(heard_seconds, 0.0) / played_seconds)
    if budget >= len(text):
        return text
    end = max(text.rfind(c, 0, budget + 1) for c in " \n\t")  # the last whole word's end
    return text[:end].rstrip(" ,;:-") if end > 0 else ""


@dataclass
class CutReply:
    """A stretch of speech that the caller interrupted, as LiveKit saw it."""

    played_seconds: float
    clears: list[int]


class PlaybackLink:
    """One call's conversation with its media bridge."""

    def __init__(self, room: rtc.Room, call_id: str) -> None:
        self.room, self.call_id = room, call_id
        self.clears = 0
        self.reports: dict[int, asyncio.Future[int]] = {}
        self.segment_open = False
        self.segment_clears: list[int] = []
        self.yielded_now = False  # a clear went out since the audio last (re)started
        self.cut: CutReply | None = None  # the last interrupted stretch of speech
        self.tasks: set[asyncio.Task[None]] = set()
        room.on("data_received", self._data_received)

    # -- from the audio output ------------------------------------------------------------
    def audio(self) -> None:
        if not self.segment_open:
            self.segment_open, self.segment_clears, self.yielded_now = True, [], False

    def yielded(self) -> None:
        """The agent stopped talking to let the caller speak: the provider drops its buffer."""
        if self.yielded_now or not self.segment_open:
            return  # already said, or nothing of this speech reached the output yet
        self.yielded_now = True
        self.clears += 1
        self.reports[self.clears] = asyncio.get_running_loop().create_future()
        self.segment_clears.append(self.clears)
        self._publish({"type": "clear", "id": self.clears})

    def resumed(self) -> None:
        self.yielded_now = False

    def finished(self, playback_position: float, interrupted: bool) -> None:
        if interrupted:
            self.cut = CutReply(playback_position, list(self.segment_clears))
        elif not self.yielded_now:
            self._publish({"type": "played"})
        self.segment_open, self.segment_clears = False, []

    # -- the transcript -------------------------------------------------------------------
    async def heard_text(self, text: str) -> str:
        """``text`` of the last interrupted reply, trimmed to what the bridge sent the caller
        (LiveKit's own cut when the bridge does not answer in time)."""
        cut, self.cut = self.cut, None
        if cut is None or not cut.clears:
            return text
        futures = [self.reports[n] for n in cut.clears if n in self.reports]
        done, _ = await asyncio.wait(futures, timeout=REPORT_WAIT_SECONDS) if futures else ((), ())
        for n in cut.clears:
            self.reports.pop(n, None)
        if len(done) < len(cut.clears):
            log.info("call %s: the bridge did not say what was heard; keeping LiveKit's cut",
                     self.call_id)  # fmt: skip
            return text
        heard_seconds = sum(f.result() for f in done) / 1000
        return heard_part(text, cut.played_seconds, heard_seconds)

    # -- the wire -------------------------------------------------------------------------
    def _publish(self, message: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._send(json.dumps(message).encode()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, payload: bytes) -> None:
        if not self.room.isconnected():
            return
        try:
            await self.room.local_participant.publish_data(
                payload, reliable=True, topic=PLAYBACK_TOPIC
            )
        except Exception as exc:  # noqa: BLE001 - the room may be closing
            log.info("call %s: could not reach the bridge: %r", self.call_id, exc)

    def _data_received(self, packet: Any) -> None:
        if packet.topic != PLAYBACK_TOPIC:
            return
        try:
            message = json.loads(packet.data)
        except ValueError:
            return
        if type(message) is not dict or message.get("type") != "cleared":
            return
        future = self.reports.get(message.get("id"))  # type: ignore[arg-type]
        heard = message.get("heard_ms")
        if future is not None and not future.done() and type(heard) is int and heard >= 0:
            future.set_result(heard)


class YieldingAudioOutput(io.AudioOutput):
    """Passes the session's audio through, telling the bridge when the agent yields and when
    a stretch of speech played out in full."""

    def __init__(self, inner: io.AudioOutput, link: PlaybackLink) -> None:
        super().__init__(
            label="PhonePlayback", next_in_chain=inner,
            capabilities=io.AudioOutputCapabilities(pause=True),
        )  # fmt: skip
        self.link = link

    @property
    def sample_rate(self) -> int | None:
        return self.next_in_chain.sample_rate if self.next_in_chain else None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        self.link.audio()
        if self.next_in_chain:
            await self.next_in_chain.capture_frame(frame)
        await super().capture_frame(frame)

    def flush(self) -> None:
        super().flush()
        if self.next_in_chain:
            self.next_in_chain.flush()

    def clear_buffer(self) -> None:
        if self.next_in_chain:
            self.next_in_chain.clear_buffer()
        with contextlib.suppress(RuntimeError):  # no running loop: the session is closing
            self.link.yielded()

    def pause(self) -> None:
        super().pause()
        self.link.yielded()

    def resume(self) -> None:
        super().resume()
        self.link.resumed()

    def on_playback_finished(
        self, *, playback_position: float, interrupted: bool,
        synchronized_transcript: str | None = None,
    ) -> None:  # fmt: skip
        if not self._pending_playback_count:  # a capture cancelled before we counted it
            return
        self.link.finished(playback_position, interrupted)
        super().on_playback_finished(
            playback_position=playback_position, interrupted=interrupted,
            synchronized_transcript=synchronized_transcript,
        )  # fmt: skip
