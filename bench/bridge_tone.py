"""The agent side of ``bench/bridge.py --agent tone``: one process (so that its CPU is not the
bridge's) that joins rooms as an ordinary participant and publishes a continuous speech-like
48 kHz signal into each, all on one shared clock.

It also observes (``probe``): in the rooms it is asked to, it subscribes to the phone
caller's track (the bridge's) and notes when each loud marker the load generator put in the
caller's audio comes out of LiveKit: the monotonic time (system-wide, the same clock as the
load generator's) of the marker's first sample above ``THRESHOLD``, one onset per burst.

Driven over stdin/stdout, one JSON object a line:
``{"join": ["room", ...], "publish": true}`` -> ``{"joined": n, "failed": [...], "seconds": s}``
(``publish`` false: join as a silent observer); ``{"probe": ["room", ...]}`` -> ``{"probing":
n}``; ``{"onsets": true}`` -> ``{"room": [t, ...]}`` (since the last call);
``{"reference": "room"}`` -> the path without the bridge, timed in ``onsets`` under that
room's name (``reference_markers``: when its markers were captured);
``{"stats": true}`` -> ``{"rooms": n, "captures": n, "capture_errors": n, "late_p99_ms": x}``;
``{"leave": true}`` (or EOF) -> ``{"left": n}``, then it exits.

Lean on purpose, so that hundreds of rooms cost this process little:

* it subscribes to the phone caller in every room, as an agent does (the bridge sends a
  caller's audio only once someone listens), but reads the audio only in the probed rooms
  (``auto_subscribe=False`` otherwise: WebRTC decodes it natively, no Python per frame);
* it captures ``--frame-ms`` (default 100 ms) at a time into a 1 s native queue, prefilled by
  two frames, without awaiting each capture's completion. The SDK's ``capture_frame`` would
  subscribe a queue to every FFI event of the process for each call, and every ``Room`` gets
  every completion too: N^2 work per frame in this process. Here the completions are dropped
  before the SDK fans them out (failures are counted). The native source still hands WebRTC
  10 ms at a time in real time, so the bridge receives ordinary 20 ms Opus packets.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi

from adapters.livekit.rooms import LiveKitRooms
from infra.settings import Settings

RATE = 48_000
CYCLE_SECONDS = 1.0
THRESHOLD = 4000  # a marker peaks near 16,000; the probes' background stays under 300


def speech_like(seconds: float = CYCLE_SECONDS) -> np.ndarray:
    """A voiced-speech stand-in: a 140 Hz harmonic series shaped by two formants, its level
    following a 4 Hz syllable envelope (never silent, so no DTX pause), about -18 dBFS RMS."""
    t = np.arange(int(RATE * seconds)) / RATE
    signal = np.zeros_like(t)
    for k in range(1, 25):
        f = 140 * k
        weight = np.exp(-(((f - 500) / 250) ** 2)) + 0.6 * np.exp(-(((f - 1500) / 400) ** 2))
        signal += (weight + 0.05) / k**0.5 * np.sin(2 * np.pi * f * t + k)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    signal *= envelope / np.sqrt(np.mean((signal * envelope) ** 2)) * 0.125 * 32767
    return np.clip(signal, -32768, 32767).astype(np.int16)


class ToneRooms:
    def __init__(self, settings: Settings, frame_ms: int) -> None:
        self.settings, self.frame_ms = settings, frame_ms
        self.rooms = LiveKitRooms(settings.livekit)
        pcm = speech_like()
        n = RATE * frame_ms // 1000
        self.frames = [  # kept alive for the process's life: the native side reads them
            rtc.AudioFrame(pcm[i : i + n].tobytes(), RATE, 1, n) for i in range(0, len(pcm), n)
        ]
        self.infos = [frame._proto_info() for frame in self.frames]
        self.joined: list[tuple[rtc.Room, int, int]] = []  # (room, source handle, phase)
        self.rooms_by_name: dict[str, rtc.Room] = {}
        self.onsets: dict[str, list[float]] = defaultdict(list)
        self.readers: set[asyncio.Task[None]] = set()
        self.probed: dict[str, rtc.RemoteTrackPublication] = {}
        self.reference_room: rtc.Room | None = None
        self.reference_markers: list[float] = []
        self.sources: list[rtc.AudioSource] = []
        self.captures = 0
        self.errors = [0]
        self.late: list[float] = []
        self.clock: asyncio.Task[None] | None = None

    def drop_capture_completions(self) -> None:
        queue = FfiClient.instance.queue
        fan_out, errors = queue.put, self.errors

        def put(event: proto_ffi.FfiEvent) -> None:  # runs on the SDK's callback thread
            if event.HasField("capture_audio_frame"):
                if event.capture_audio_frame.error:
                    errors[0] += 1
                return
            fan_out(event)

        queue.put = put  # type: ignore[method-assign]

    def capture(self, handle: int, index: int) -> None:
        req = proto_ffi.FfiRequest()
        req.capture_audio_frame.source_handle = handle
        req.capture_audio_frame.buffer.CopyFrom(self.infos[index % len(self.infos)])
        FfiClient.instance.request(req)
        self.captures += 1

    async def join(self, name: str, semaphore: asyncio.Semaphore, publish: bool) -> str | None:
        async with semaphore:
            token = self.rooms.join_token(name, f"tone-{name}", "Tone agent", timedelta(hours=2))
            room = rtc.Room()
            try:
                await room.connect(
                    self.settings.livekit.url, token, rtc.RoomOptions(auto_subscribe=False)
                )
                self.rooms_by_name[name] = room
                self.subscribe_callers(room)
                if not publish:
                    return None
                source = rtc.AudioSource(RATE, 1, queue_size_ms=1000)
                track = rtc.LocalAudioTrack.create_audio_track("agent", source)
                options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                await room.local_participant.publish_track(track, options)
            except Exception as exc:  # noqa: BLE001 - reported to the driver
                await room.disconnect()
                return f"{name}: {exc!r}"[:200]
            phase = len(self.joined) * 7
            handle = source._ffi_handle.handle
            for k in range(2):  # prefill: the queue never runs dry between ticks
                self.capture(handle, phase + k)
            self.sources.append(source)
            self.joined.append((room, handle, phase + 2))
            if self.clock is None:
                self.clock = asyncio.create_task(self.run_clock())
            return None

    @staticmethod
    def subscribe_callers(room: rtc.Room, prefix: str = "phone-") -> None:
        def published(publication: rtc.RemoteTrackPublication, participant: object) -> None:
            if getattr(participant, "identity", "").startswith(prefix):
                publication.set_subscribed(True)

        room.on("track_published", published)

    async def probe(self, name: str, prefix: str = "phone-") -> None:
        """Subscribe to the audio of the participant whose identity starts with ``prefix``
        (the phone caller: the bridge) in ``name`` and note the markers' onsets. Probed
        already: unsubscribe and subscribe again (a fresh jitter buffer)."""
        if name in self.probed:
            self.probed[name].set_subscribed(False)
            await asyncio.sleep(0.5)
            self.probed[name].set_subscribed(True)
            return
        room = self.rooms_by_name[name]

        def published(publication: rtc.RemoteTrackPublication, participant: object) -> None:
            if getattr(participant, "identity", "").startswith(prefix):
                publication.set_subscribed(True)
                self.probed[name] = publication

        def subscribed(track: rtc.Track, *_: object) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                task = asyncio.create_task(self.listen(name, track))
                self.readers.add(task)
                task.add_done_callback(self.readers.discard)

        room.on("track_published", published)
        room.on("track_subscribed", subscribed)
        for participant in room.remote_participants.values():
            for publication in participant.track_publications.values():
                published(publication, participant)

    async def listen(self, name: str, track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=RATE, num_channels=1)
        loud = False
        async for event in stream:
            now = time.monotonic()
            pcm = np.frombuffer(event.frame.data, dtype=np.int16)
            above = np.flatnonzero(np.abs(pcm.astype(np.int32)) > THRESHOLD)
            if len(above) and not loud:
                self.onsets[name].append(now - (len(pcm) - above[0]) / RATE)
            loud = bool(len(above))

    async def reference(self, name: str) -> None:
        """The path without the bridge, for comparison: a second participant in ``name``
        publishes the probes' kind of audio (noise, a 20 ms 1 kHz marker a second) straight
        from this process in 10 ms captures with no source queue (the SDK hands each to WebRTC
        at once), and the observer times its markers like the bridge's."""
        await self.join(name, asyncio.Semaphore(1), publish=False)
        await self.probe(name, prefix="ref-")
        token = self.rooms.join_token(name, f"ref-{name}", "Reference", timedelta(hours=2))
        room = rtc.Room()
        await room.connect(self.settings.livekit.url, token, rtc.RoomOptions(auto_subscribe=False))
        source = rtc.AudioSource(RATE, 1, queue_size_ms=0)
        track = rtc.LocalAudioTrack.create_audio_track("reference", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        self.reference_room = room
        n = RATE // 100
        rng = np.random.default_rng(3)
        noise = [(rng.standard_normal(n) * 60).astype(np.int16) for _ in range(98)]
        tone = (np.sin(2 * np.pi * 1000 * np.arange(2 * n) / RATE) * 16000).astype(np.int16)
        pcm = [tone[:n], tone[n:], *noise]
        frames = [rtc.AudioFrame(p.tobytes(), RATE, 1, n) for p in pcm]
        self.frames += frames  # alive for the process's life
        infos = [frame._proto_info() for frame in frames]
        handle = source._ffi_handle.handle
        loop = asyncio.get_running_loop()
        due, beat = loop.time(), 0
        while True:
            due += 0.01
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if beat == 0:
                self.reference_markers.append(time.monotonic())
            req = proto_ffi.FfiRequest()
            req.capture_audio_frame.source_handle = handle
            req.capture_audio_frame.buffer.CopyFrom(infos[beat])
            FfiClient.instance.request(req)
            beat = (beat + 1) % len(infos)

    async def run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.frame_ms / 1000
        due, tick = loop.time(), 0
        while True:
            due += period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.late.append(max(0.0, loop.time() - due) * 1000)
            for _, handle, phase in self.joined:
                self.capture(handle, phase + tick)
            tick += 1

    def stats(self) -> dict[str, object]:
        late = sorted(self.late[-3000:])
        p99 = round(late[int(0.99 * (len(late) - 1))], 2) if late else None
        return {"rooms": len(self.rooms_by_name), "captures": self.captures,
                "capture_errors": self.errors[0], "late_p99_ms": p99}  # fmt: skip

    async def leave(self) -> int:
        if self.clock is not None:
            self.clock.cancel()
        for task in tuple(self.readers):
            task.cancel()
        rooms = list(self.rooms_by_name.values())
        if self.reference_room is not None:
            rooms.append(self.reference_room)
        await asyncio.gather(*(room.disconnect() for room in rooms), return_exceptions=True)
        return len(rooms)


async def serve(frame_ms: int) -> None:
    tone = ToneRooms(Settings(), frame_ms)
    tone.drop_capture_completions()
    semaphore = asyncio.Semaphore(8)

    def answer(obj: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        command = json.loads(line) if line.strip() else {"leave": True}
        if "join" in command:
            started = time.monotonic()
            publish = command.get("publish", True)
            failed = await asyncio.gather(*(tone.join(n, semaphore, publish)
                                            for n in command["join"]))  # fmt: skip
            answer({"joined": len(tone.rooms_by_name), "failed": [f for f in failed if f],
                    "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
        elif "probe" in command:
            await asyncio.gather(*(tone.probe(name) for name in command["probe"]))
            answer({"probing": len(command["probe"])})
        elif "reference" in command:
            task = asyncio.create_task(tone.reference(command["reference"]))
            tone.readers.add(task)
            answer({"reference": command["reference"]})
        elif "onsets" in command:
            answer({**tone.onsets, "reference_markers": tone.reference_markers})
            tone.onsets.clear()
            tone.reference_markers = []
        elif "stats" in command:
            answer(tone.stats())
        else:
            answer({"left": await tone.leave()})
            return


if __name__ == "__main__":
    frame = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    asyncio.run(serve(frame))
