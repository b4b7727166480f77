"""A test caller on a real LiveKit room (the rtc SDK): publishes speech, records what the agent
says, and tells apart speech from silence in what it heard. Audio is mono int16 at 16 kHz on
our side; the SDK resamples to and from the room's rates."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

RATE = 16_000
FRAME = RATE // 100  # 10 ms


def speak(text: str, voice: str = "en-us", rate: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, as int16 PCM at 16 kHz."""
    binary = shutil.which("espeak-ng")
    assert binary, "espeak-ng is installed by `voxagent stack up`"
    wav = subprocess.run(  # noqa: S603 - a fixed program, text as an argument
        [binary, "--stdout", "-v", voice, "-s", str(rate), text], capture_output=True, check=True
    ).stdout
    data = wav[44:]  # espeak-ng writes a canonical 44-byte header; 22050 Hz mono s16
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.int16)
    resampler = rtc.AudioResampler(22_050, RATE, num_channels=1)
    frames = resampler.push(rtc.AudioFrame(pcm.tobytes(), 22_050, 1, len(pcm))) + resampler.flush()
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


@dataclass
class Heard:
    """What the caller received from the agent: (arrival time, frame) pairs."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def audio(self, since: float = 0.0) -> np.ndarray:
        parts = [c for t, c in self.chunks if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def voiced_since(self, since: float, threshold: int = 500) -> float:
        """Seconds of voiced audio (10 ms frames above an RMS threshold) since ``since``."""
        return sum(0.01 for t, c in self.chunks if t >= since and _rms(c) > threshold)

    def last_voice_at(self, threshold: int = 500) -> float | None:
        times = [t for t, c in self.chunks if _rms(c) > threshold]
        return times[-1] if times else None

    def first_voice_after(self, since: float, threshold: int = 500) -> float | None:
        return next((t for t, c in self.chunks if t >= since and _rms(c) > threshold), None)


def _rms(chunk: np.ndarray) -> float:
    return float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) if len(chunk) else 0.0


class Caller:
    def __init__(self) -> None:
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=200)
        self.heard = Heard()
        self.disconnected = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._mic = asyncio.Lock()  # one capture at a time: the SDK refuses overlapping ones

    async def join(self, url: str, token: str) -> None:
        @self.room.on("track_subscribed")
        def _subscribed(track: rtc.Track, *_: object) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                self._readers.append(asyncio.ensure_future(self._read(track)))

        self.room.on("disconnected", lambda *_: self.disconnected.set())
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=True))
        track = rtc.LocalAudioTrack.create_audio_track("caller-mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, dtx=False)
        await self.room.local_participant.publish_track(track, options)
        asyncio.ensure_future(self._silence_forever())

    async def _read(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            data = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            self.heard.chunks.append((time.monotonic(), data))

    async def _silence_forever(self) -> None:
        """A live microphone: silence whenever nothing is being said (keeps VAD fed)."""
        self._talking = False
        zero = np.zeros(FRAME, dtype=np.int16).tobytes()
        while not self.disconnected.is_set():
            if not self._talking:
                async with self._mic:
                    if not self._talking:  # say() may have started while we waited
                        await self.source.capture_frame(rtc.AudioFrame(zero, RATE, 1, FRAME))
            else:
                await asyncio.sleep(0.01)

    async def say(self, pcm: np.ndarray) -> float:
        """Speak ``pcm`` in real time; returns when the last sample was sent (monotonic)."""
        self._talking = True
        try:
            for start in range(0, len(pcm), FRAME):
                chunk = pcm[start : start + FRAME]
                if len(chunk) < FRAME:
                    chunk = np.pad(chunk, (0, FRAME - len(chunk)))
                async with self._mic:
                    frame = rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME)
                    await self.source.capture_frame(frame)
        finally:
            self._talking = False
        return time.monotonic()

    async def wait_quiet(self, seconds: float, timeout: float) -> None:
        """Until the agent has been silent for ``seconds`` (after saying something)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.heard.last_voice_at()
            if last is not None and time.monotonic() - last >= seconds:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the agent did not go quiet for {seconds}s within {timeout}s")

    async def leave(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self.room.disconnect()
