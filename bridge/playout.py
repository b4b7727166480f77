"""How far ahead of the room the caller's audio runs, and keeping that short.

LiveKit's audio source plays the caller's audio out in real time from its queue. Whatever fills
that queue stays there as latency: a provider's burst after a network stall, or our own event
loop catching up, adds its length to every later word the caller says, for the rest of the call,
because the queue drains only as fast as it fills. ``PlayoutDepth`` models the queue (audio
handed over, drained in real time from the moment it was handed) and, while it runs deeper than
a target, drops the caller's silent frames — only in a pause, never inside a word — until the
depth is back at the target. Speech is never dropped here; the backlog limit in the session
still bounds a stall that never meets a pause.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_SECONDS = 0.06  # enough for a provider's usual jitter (frames every 20 ms +- a few ms)
QUIET_RMS = 250.0  # int16 RMS below this is a pause (about -42 dBFS; speech is 10x louder)
PAUSE_FRAMES = 5  # this many quiet frames in a row before any is dropped (100 ms at 20 ms)


def rms(pcm: np.ndarray) -> float:
    if not len(pcm):
        return 0.0
    samples = pcm.astype(np.float32)
    return float(np.sqrt(np.dot(samples, samples) / len(samples)))


@dataclass
class PlayoutDepth:
    target: float = TARGET_SECONDS
    quiet_rms: float = QUIET_RMS
    pause_frames: int = PAUSE_FRAMES
    queued: float = 0.0  # seconds of audio ahead of the room at ``at``
    at: float | None = None  # when ``queued`` was last brought up to date (monotonic seconds)
    quiet_run: int = 0  # quiet frames in a row, up to the one being judged

    def depth(self, now: float) -> float:
        if self.at is None:
            return 0.0
        return max(self.queued - (now - self.at), 0.0)

    def admit(self, pcm: np.ndarray, rate: int, now: float) -> bool:
        """Whether ``pcm`` (one frame of the caller's audio at ``rate``, arriving at ``now``)
        goes to the room; a frame dropped here is a pause's silence while the queue is deep."""
        duration = len(pcm) / rate
        self.quiet_run = self.quiet_run + 1 if rms(pcm) < self.quiet_rms else 0
        depth = self.depth(now)
        if self.quiet_run > self.pause_frames and depth + duration > self.target:
            self.queued, self.at = depth, now
            return False
        self.queued, self.at = depth + duration, now
        return True

    def dropped(self, seconds: float) -> None:
        """Admitted audio was dropped before it reached the room (the session's backlog limit)."""
        self.queued = max(self.queued - seconds, 0.0)
