"""Streaming sample-rate conversion of int16 mono audio for the media bridge: a polyphase
windowed-sinc FIR for the integer ratios phones need (8/16 kHz <-> 48 kHz), soxr for any
other ratio. See ``Resampler``."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import soxr
from numpy.lib.stride_tricks import as_strided

from bridge.codecs import as_samples

_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
_EMPTY_FLOAT = np.zeros(0, dtype=np.float32)


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


_INT16_MIN = np.float32(-32768)
_INT16_MAX = np.float32(32767)


def _round_to_int16(samples: np.ndarray) -> np.ndarray:
    """``_to_int16`` for a float32 array of our own, rounded and clipped in place (faster)."""
    np.rint(samples, out=samples)
    np.maximum(samples, _INT16_MIN, out=samples)
    np.minimum(samples, _INT16_MAX, out=samples)
    return samples.astype(np.int16)


# --- integer ratios: polyphase windowed-sinc FIR ----------------------------------------------
#
# One linear-phase lowpass at the higher rate, cut just below the lower rate's Nyquist: pass
# band to 3.4 kHz for 8 kHz (telephone band), 7 kHz for 16 kHz (wideband), 0.425 x the lower
# rate otherwise; stop band from the lower rate's Nyquist on, at least _STOPBAND_DB down.
# Kaiser window, tap count from Kaiser's formula, checked on a dense frequency grid (and
# lengthened if short: Kaiser's 99 taps for 8 kHz <-> 16 kHz reach only 59.4 dB).
# The group delay is (taps - 1) / 2 samples at the higher rate: 3.02 ms for 8 kHz <-> 48 kHz
# (291 taps), 1.81 ms for 16 kHz <-> 48 kHz (175), 3.13 ms for 8 kHz <-> 16 kHz (101).

_STOPBAND_DB = 60.0
_PASSBAND_HZ = {8000: 3400.0, 16000: 7000.0}
_BLOCK = 8  # filter steps per matrix row: fewer, wider rows make one faster matrix product
_DESIGN_GRID = 1 << 16  # frequency points for checking the stop band
_SLICE = 15360  # longest input taken in one pass: bounds the (copied) window matrix


def _stopband_db(taps: np.ndarray, stop: float) -> float:
    """Worst attenuation at or above ``stop`` (a fraction of the sampling rate), in dB."""
    response = np.abs(np.fft.rfft(taps, _DESIGN_GRID))
    worst = response[int(np.ceil(stop * _DESIGN_GRID)) :].max()
    return float(-20 * np.log10(worst))


@functools.cache
def _lowpass(high_rate: int, low_rate: int) -> np.ndarray:
    """Odd-length linear-phase lowpass at ``high_rate`` for ``low_rate`` audio; DC gain 1."""
    passband = _PASSBAND_HZ.get(low_rate, 0.425 * low_rate)
    stop = low_rate / 2 / high_rate
    cutoff = (passband / high_rate + stop) / 2
    width = 2 * np.pi * (stop - passband / high_rate)
    beta = 0.1102 * (_STOPBAND_DB - 8.7)
    count = int(np.ceil((_STOPBAND_DB - 8) / (2.285 * width))) + 1
    count += 1 - count % 2
    while True:
        n = np.arange(count) - (count - 1) / 2
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(count, beta)
        taps /= taps.sum()
        if _stopband_db(taps, stop) >= _STOPBAND_DB:
            return taps
        count += 2


def _blocked(unit: np.ndarray, step: int) -> np.ndarray:
    """The (window, outputs) matrix for _BLOCK consecutive filter steps, ``step`` inputs apart."""
    width, outputs = unit.shape
    matrix = np.zeros(((_BLOCK - 1) * step + width, _BLOCK * outputs), dtype=np.float32)
    for i in range(_BLOCK):
        matrix[i * step : i * step + width, i * outputs : (i + 1) * outputs] = unit
    return matrix


@dataclasses.dataclass(frozen=True)
class _Design:
    """Per-conversion constants, built once per (from_rate, to_rate)."""

    unit: np.ndarray  # (window, outputs): one filter step
    block: np.ndarray  # the same for _BLOCK steps
    step: int  # input samples per filter step
    initial: int  # zeros the stream starts with (the filter's history)
    delay: int  # group delay, in output samples
    reach: int  # downsampling: inputs past output k's own (input k * M) that its window takes


@functools.cache
def _design(from_rate: int, to_rate: int) -> _Design:
    if to_rate > from_rate:  # upsample by L: each input sample makes L outputs, one per phase
        up = to_rate // from_rate
        taps = _lowpass(to_rate, from_rate) * up
        per_phase = -(-len(taps) // up)
        padded = np.zeros(per_phase * up)
        padded[: len(taps)] = taps
        # row K-1-j, column p: tap j*L + p, applied to the input j samples before the newest
        unit = padded.reshape(per_phase, up)[::-1]
        step, initial, delay, reach = 1, per_phase - 1, (len(taps) - 1) // 2, 0
    else:  # downsample by M: one output per M inputs, from a window of all the taps
        down = from_rate // to_rate
        taps = _lowpass(from_rate, to_rate)
        half = (len(taps) - 1) // 2
        # output k's window ends at input k*M + (half mod M), so its centre is exactly input
        # (k - half // M) * M: a whole number of output samples of delay
        unit = taps[::-1, np.newaxis]
        step, delay, reach = down, half // down, half % down
        initial = len(taps) - 1 - reach
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    block = _blocked(unit, step)
    for matrix in (unit, block):
        matrix.flags.writeable = False
    return _Design(unit, block, step, initial, delay, reach)


class _Polyphase:
    """Streaming FIR resampler by an integer factor; see ``Resampler``.

    ``_buffer`` holds the input not yet fully used (the history the next window needs) followed
    by the current chunk; windows over it are strided views, fixed while the chunk size (and so
    the buffer's layout) stays the same, as it does for a stream of equal frames.
    """

    def __init__(self, design: _Design) -> None:
        self._design = design
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros(self._design.initial, dtype=np.float32)
        self._kept = self._design.initial
        self._layout: tuple[int, int] | None = None

    def _plan(self, size: int) -> None:
        design, kept = self._design, self._kept
        buffer = np.empty(kept + size, dtype=np.float32)
        buffer[:kept] = self._buffer[:kept]
        width, step = design.unit.shape[0], design.step
        steps = (len(buffer) - width) // step + 1 if len(buffer) >= width else 0
        blocks, rest = divmod(steps, _BLOCK)
        item = buffer.itemsize
        block_width, block_step = design.block.shape[0], _BLOCK * step
        self._windows = as_strided(
            buffer, (blocks, block_width), (block_step * item, item), writeable=False
        )
        self._rest = as_strided(
            buffer[blocks * block_step :], (rest, width), (step * item, item), writeable=False
        )
        self._buffer = buffer
        self._used = steps * step
        self._layout = (kept, size)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        size, kept = len(pcm), self._kept
        if size == 0:
            return _EMPTY_FLOAT
        if size > _SLICE:
            slices = [self.process(pcm[i : i + _SLICE]) for i in range(0, size, _SLICE)]
            return np.concatenate(slices)
        if self._layout != (kept, size):
            self._plan(size)
        buffer = self._buffer
        buffer[kept:] = pcm
        out = np.dot(self._windows, self._design.block).ravel()
        if len(self._rest):
            out = np.concatenate((out, np.dot(self._rest, self._design.unit).ravel()))
        left = kept + size - self._used
        buffer[:left] = buffer[self._used :]
        self._kept = left
        return out

    def tail(self) -> np.ndarray:
        """End of stream: the outputs still owed for an exact ratio, then reset.

        Upsampling owes none: every input sample has made its L outputs. Downsampling owes the
        output of a last, incomplete group of M inputs if its window reaches past the input.
        What the filter still holds (one group delay of input) never comes out: the output runs
        that far behind the input, and the total stays at exactly the ratio.
        """
        design, kept = self._design, self._kept
        width = design.unit.shape[0]
        # the next output's own input sample is buffer[width - 1 - reach]; the last is kept - 1
        owed = 0 if design.step == 1 else max(0, (kept - width + design.reach) // design.step + 1)
        out = _EMPTY_FLOAT
        if owed:
            zeros = np.zeros((owed - 1) * design.step + width - kept, dtype=np.float32)
            out = self.process(zeros)[:owed]
        self.reset()
        return out


class Resampler:
    """Streaming, stateful sample-rate conversion of int16 mono audio.

    Integer ratios (8 kHz <-> 48 kHz, 16 kHz <-> 48 kHz, 8 kHz <-> 16 kHz, ...) use a polyphase
    windowed-sinc FIR in numpy, built for the media bridge's 20 ms frames: every chunk in gives
    exactly its duration out (a chunk of n samples gives n * L when upsampling by L; when
    downsampling by M, n / M for n a multiple of M, else the odd samples carry over), at once,
    for a fixed delay of one filter group delay: 3.0 ms for 8 kHz <-> 48 kHz, 1.8 ms for
    16 kHz <-> 48 kHz, 3.1 ms for 8 kHz <-> 16 kHz. The filter passes 3.4 kHz (8 kHz audio) or
    7 kHz (16 kHz) within 0.01 dB and stops everything from the lower rate's Nyquist on by at
    least 60 dB (no aliasing, no images). About 5-6 us of CPU per 20 ms frame for each of the
    four bridge conversions, a little under soxr's cost; ``quality`` does not apply here.

    Other ratios (e.g. 22050 -> 16000) go through soxr.ResampleStream with ``quality`` (default
    "MQ": flat to 3.4 kHz, about 7 us per 20 ms frame; "LQ" attenuates 3.4 kHz by 8 dB, "QQ"
    does not filter at all; "HQ"/"VHQ" gain nothing audible on telephone audio). libsoxr
    filters in internal blocks, so its output comes in bursts (8k -> 48k through soxr held
    audio back 13-92 ms, mean 53, with 20 ms chunks) and ``process`` may return fewer samples
    than a frame, or none: callers of such ratios must re-frame the output. soxr runs in float32
    and we round and clip to int16 ourselves: libsoxr dithers its own int16 output, which would
    make results differ run to run.

    ``flush`` ends the stream. The FIR's total output is then exactly ``len(input) * L``, or
    ``ceil(len(input) / M)`` (``flush`` gives the one sample a last, incomplete group of M
    inputs is owed, if any): as every chunk's output is due at once, the output runs one group
    delay behind the input, starting with that much filter lead-in, and the last group delay of
    input (3 ms at most) stays in the filter. soxr's ``flush`` gives its tail, the total within
    a sample of ``len(input) * ratio``. After ``flush`` the stream is reset and can take a new,
    unrelated signal. Equal rates pass samples through untouched.
    """

    def __init__(self, from_rate: int, to_rate: int, quality: str = "MQ") -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        if quality.upper() not in _QUALITIES:
            raise ValueError(f"unknown resampler quality {quality!r}; expected one of {_QUALITIES}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self.quality = quality.upper()
        self._fir: _Polyphase | None = None
        self._stream: soxr.ResampleStream | None = None
        if from_rate != to_rate and max(from_rate, to_rate) % min(from_rate, to_rate) == 0:
            self._fir = _Polyphase(_design(from_rate, to_rate))
        elif from_rate != to_rate:
            self._stream = soxr.ResampleStream(
                from_rate, to_rate, 1, dtype=np.float32, quality=self.quality
            )

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Feed int16 samples, get the int16 output that is ready (clipped, never wrapped)."""
        pcm = as_samples(pcm)
        if self._fir is not None:
            return _round_to_int16(self._fir.process(pcm))
        if self._stream is None:
            return pcm
        return _to_int16(self._stream.resample_chunk(pcm.astype(np.float32)))

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still inside the filter, then reset."""
        if self._fir is not None:
            return _round_to_int16(self._fir.tail())
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._stream.resample_chunk(_EMPTY_FLOAT, last=True)
        self._stream.clear()
        return _to_int16(tail)
