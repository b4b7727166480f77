"""The caller's playout depth: late audio is caught up by dropping pauses' silence only."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.playout import PlayoutDepth, rms

pytestmark = pytest.mark.unit
RATE = 8_000
FRAME = RATE // 50  # 20 ms


def silence(level: float = 40.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.standard_normal(FRAME) * level).astype(np.int16)


def speech() -> np.ndarray:
    t = np.arange(FRAME) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 6000).astype(np.int16)


def feed(depth: PlayoutDepth, frames: list[np.ndarray], at: float, every: float) -> list[bool]:
    return [depth.admit(f, RATE, at + i * every) for i, f in enumerate(frames)]


def test_rms_of_a_sine_and_of_nothing():
    assert rms(speech()) == pytest.approx(6000 / np.sqrt(2), rel=0.01)
    assert rms(np.zeros(0, dtype=np.int16)) == 0.0


def test_audio_in_real_time_is_never_dropped():
    depth = PlayoutDepth()
    frames = [speech()] * 20 + [silence()] * 50 + [speech()] * 20
    assert all(feed(depth, frames, at=100.0, every=0.02))
    assert depth.depth(100.0 + 90 * 0.02) <= 0.02 + 1e-9


def test_a_burst_of_silence_is_trimmed_back_to_the_target():
    depth = PlayoutDepth()
    kept = feed(depth, [silence()] * 20, at=100.0, every=0.0)  # 400 ms handed over at once
    assert kept[:5] == [True] * 5  # a pause's first 100 ms always go through
    assert not any(kept[5:])  # beyond them, while deeper than the target, dropped
    assert depth.depth(100.0) == pytest.approx(0.1)
    assert feed(depth, [silence()] * 3, at=100.1, every=0.02) == [True] * 3  # drained: kept
    assert kept.count(False) == 15


def test_speech_is_never_dropped_however_late():
    depth = PlayoutDepth()
    kept = feed(depth, [speech()] * 25, at=100.0, every=0.0)  # a 500 ms burst of words
    assert all(kept)
    assert depth.depth(100.0) == pytest.approx(0.5)


def test_a_late_stream_catches_up_in_the_next_pause_and_keeps_the_words():
    """A stall delivers 300 ms of speech at once; the words all go through, then the pause
    after them is shortened until the audio runs at the target depth again."""
    depth = PlayoutDepth()
    start = 100.0
    kept_words = feed(depth, [speech()] * 15, at=start, every=0.0)
    pause = feed(depth, [silence()] * 30, at=start + 0.02, every=0.02)
    assert all(kept_words)
    assert pause[:5] == [True] * 5  # the pause's first 100 ms, as it was said
    assert pause.count(False) >= 9  # ~250 ms of it dropped: the queue is back near the target
    assert depth.depth(start + 30 * 0.02) <= depth.target
    after = feed(depth, [speech()] * 10, at=start + 31 * 0.02, every=0.02)
    assert all(after)


def test_a_short_quiet_dip_inside_a_word_is_kept():
    depth = PlayoutDepth()
    frames = [speech(), silence(), silence(), speech()] * 6  # 40 ms dips, all in one burst
    assert all(feed(depth, frames, at=100.0, every=0.0))


def test_audio_dropped_after_admission_lowers_the_depth():
    depth = PlayoutDepth()
    feed(depth, [speech()] * 10, at=100.0, every=0.0)
    depth.dropped(0.1)
    assert depth.depth(100.0) == pytest.approx(0.1)
    depth.dropped(5.0)
    assert depth.depth(100.0) == 0.0
