"""Many rooms in one process without the rtc SDK's event fan-out.

The ``livekit`` rtc SDK (pinned: 1.1.21) hands every event from its native core to every
subscriber of one process-wide queue: each ``Room`` subscribes for all events but media
streams, each ``AudioStream`` for all audio-stream events, and each ``capture_frame`` call for
everything until its own callback arrives. With N rooms in a process, every captured frame's
callback is queued on N rooms' event loops and every agent frame offered to N streams: work
that grows with N squared (at 100 phone streams, ~500,000 cross-thread hand-offs a second).

``FfiRouter`` puts a dispatcher in front of that queue for the three kinds of event the media
bridge produces by the thousand: a room's events go to that room only, an audio stream's
frames to that stream only, and the callback of each ``capture`` goes straight to that
capture's own completion function instead of to every room and waiting capture. Everything
else — and every event of a room or stream not registered here — still takes the SDK's own
path, so the SDK keeps working unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import audio_frame_pb2 as proto_audio
from livekit.rtc._proto import ffi_pb2 as proto_ffi

log = logging.getLogger(__name__)
FIRST_ASYNC_ID = 1 << 48  # far above the native core's own counter (it starts at 1)


class FfiRouter:
    """The process's router; ``FfiRouter.install()`` once, then register rooms and streams."""

    _installed: FfiRouter | None = None

    def __init__(self) -> None:
        self.queue = FfiClient.instance.queue
        self.broadcast = self.queue.put
        self.rooms: dict[int, tuple[Any, Any]] = {}  # room handle -> (its queue, its loop)
        self.streams: dict[int, tuple[Any, Any]] = {}  # stream handle -> (queue, loop)
        # capture async id -> (the samples the core reads until its callback, done, loop)
        self.pending: dict[int, tuple[np.ndarray, Callable[[str], None], Any]] = {}
        self.ids = itertools.count(FIRST_ASYNC_ID)
        self.capture_errors = 0

    @classmethod
    def install(cls) -> FfiRouter:
        if cls._installed is None:
            router = cls()
            router.queue.put = router.put  # the native callback calls queue.put(event)
            cls._installed = router
        return cls._installed

    # -- the native core's thread ---------------------------------------------------------
    def put(self, event: Any) -> None:
        which = event.WhichOneof("message")
        if which == "capture_audio_frame":
            pending = self.pending.pop(event.capture_audio_frame.async_id, None)
            if pending is not None:
                error = event.capture_audio_frame.error
                if error:
                    self.capture_errors += 1
                pending[2].call_soon_threadsafe(pending[1], error)
                return
        elif which == "audio_stream_event":
            target = self.streams.get(event.audio_stream_event.stream_handle)
            if target is not None:
                target[1].call_soon_threadsafe(target[0].put_nowait, event)
                return
        elif which == "room_event":
            target = self.rooms.get(event.room_event.room_handle)
            if target is not None:
                target[1].call_soon_threadsafe(target[0].put_nowait, event)
                return
        self.broadcast(event)

    # -- registration (the event loop's thread) -------------------------------------------
    def _subscriber(self, ffi_queue: Any) -> tuple[Any, Any]:
        with self.queue._lock:
            for queue, loop, _ in self.queue._subscribers:
                if queue is ffi_queue:
                    return queue, loop
        raise LookupError("that queue is not subscribed to the FFI")

    def register_room(self, room: rtc.Room) -> None:
        """After ``connect``: the room's events go to it alone."""
        if room._ffi_handle is None:
            raise RuntimeError("the room is not connected")
        self.rooms[room._ffi_handle.handle] = self._subscriber(room._ffi_queue)

    def unregister_room(self, room: rtc.Room) -> None:
        handle = getattr(getattr(room, "_ffi_handle", None), "handle", None)
        if handle is not None:
            self.rooms.pop(handle, None)

    def register_stream(self, stream: rtc.AudioStream) -> None:
        """Right after creating the stream: its frames go to it alone."""
        self.streams[stream._ffi_handle.handle] = self._subscriber(stream._ffi_queue)

    def unregister_stream(self, stream: rtc.AudioStream) -> None:
        self.streams.pop(stream._ffi_handle.handle, None)

    # -- capture ----------------------------------------------------------------------------
    def capture(
        self, source: rtc.AudioSource, samples: np.ndarray, sample_rate: int,
        done: Callable[[str], None],
    ) -> None:  # fmt: skip
        """Hand mono int16 ``samples`` to ``source``; ``done(error)`` runs on this loop once the
        core has taken them (``error`` is "" on success). One capture at a time per source, as
        the SDK's own ``capture_frame`` does: the core runs captures as concurrent tasks, so
        overlapping ones may be refused or reordered."""
        samples = np.ascontiguousarray(samples, dtype=np.int16)
        async_id = next(self.ids)
        request = proto_ffi.FfiRequest()
        capture = request.capture_audio_frame
        capture.source_handle = source._ffi_handle.handle
        capture.request_async_id = async_id
        capture.buffer.CopyFrom(proto_audio.AudioFrameBufferInfo(
            data_ptr=samples.ctypes.data, sample_rate=sample_rate, num_channels=1,
            samples_per_channel=len(samples),
        ))  # fmt: skip
        self.pending[async_id] = (samples, done, asyncio.get_running_loop())
        try:
            FfiClient.instance.request(request)
        except Exception:
            self.pending.pop(async_id, None)
            raise
