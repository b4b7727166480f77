"""One clock for every stream's outbound audio: each tick (20 ms, on an absolute monotonic
schedule that never drifts) sends the next frame of every stream that has one. One task for
the whole process instead of one timer per stream keeps the cost per stream low and the
intervals even."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Paced(Protocol):
    async def tick(self, now: float) -> None: ...


class Pacer:
    def __init__(self, frame_ms: int = 20) -> None:
        self.period = frame_ms / 1000
        self.streams: set[Paced] = set()
        self.task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.resyncs = 0

    def add(self, stream: Paced) -> None:
        self.streams.add(stream)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name="bridge-pacer")

    def discard(self, stream: Paced) -> None:
        self.streams.discard(stream)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.streams:
            due += self.period
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 5 * self.period:  # the loop stalled: start a new schedule, no burst
                self.resyncs += 1
                due = loop.time()
            self.ticks += 1
            now = loop.time()
            for stream in tuple(self.streams):
                try:
                    await stream.tick(now)
                except Exception:  # noqa: BLE001 - one broken stream never stops the clock
                    log.exception("a stream failed while sending audio; dropping it")
                    self.streams.discard(stream)

    async def close(self) -> None:
        self.streams.clear()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
