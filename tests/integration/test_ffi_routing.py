"""The FFI router on the real LiveKit server: with many rooms in one process, each room gets
its own events and each stream its own frames, and captures need no per-frame waiting."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import numpy as np
import pytest
from livekit import rtc

from adapters.livekit.ffi_routing import FfiRouter
from adapters.livekit.rooms import LiveKitRooms

pytestmark = pytest.mark.integration
RATE = 48_000


async def joined(settings, room_name: str, identity: str) -> rtc.Room:
    room = rtc.Room()
    token = LiveKitRooms(settings.livekit).join_token(
        room_name, identity, identity, timedelta(minutes=5)
    )
    await room.connect(settings.livekit.url, token)
    return room


def test_rooms_and_streams_get_only_their_own_events(stack_settings):
    async def scenario() -> dict:
        router = FfiRouter.install()
        names = [f"route-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        talkers = [await joined(stack_settings, n, "talker") for n in names]
        listeners = [await joined(stack_settings, n, "listener") for n in names]
        for room in (*talkers, *listeners):
            router.register_room(room)
        sources = [rtc.AudioSource(RATE, 1) for _ in names]
        for room, source in zip(talkers, sources, strict=True):
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            await room.local_participant.publish_track(track, rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_MICROPHONE))  # fmt: skip
        subscribed = [asyncio.get_running_loop().create_future() for _ in names]
        for listener, done in zip(listeners, subscribed, strict=True):
            for participant in listener.remote_participants.values():
                for publication in participant.track_publications.values():
                    if publication.track is not None and not done.done():
                        done.set_result(publication.track)
            listener.on("track_subscribed", lambda t, *_, d=done: d.done() or d.set_result(t))
        tracks = await asyncio.wait_for(asyncio.gather(*subscribed), 15)
        loud = [0, 0]

        async def listen(index: int, track: rtc.Track) -> None:
            stream = rtc.AudioStream.from_track(track=track, sample_rate=RATE, num_channels=1)
            router.register_stream(stream)
            try:
                async for event in stream:
                    if np.abs(np.frombuffer(event.frame.data, np.int16)).max() > 2000:
                        loud[index] += 1
            finally:
                router.unregister_stream(stream)

        readers = [asyncio.ensure_future(listen(i, t)) for i, t in enumerate(tracks)]
        t = np.arange(RATE // 50) / RATE
        frame = (12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        captured: list[str] = []
        for _ in range(100):  # 2 s of a tone into the first room only, paced, one at a time
            done = asyncio.get_running_loop().create_future()
            router.capture(sources[0], frame, RATE, lambda e, d=done: d.set_result(e))
            captured.append(await asyncio.wait_for(done, 5))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        for reader in readers:
            reader.cancel()
        pending = len(router.pending)
        for room in (*talkers, *listeners):
            router.unregister_room(room)
            await room.disconnect()
        return {"loud": loud, "pending": pending, "refused": [e for e in captured if e]}

    result = asyncio.run(scenario())
    assert result["loud"][0] > 50, "the first room hears its tone"
    assert result["loud"][1] == 0, "the second room hears nothing of it"
    assert result["pending"] == 0, "every capture's callback came back"
    assert result["refused"] == []
