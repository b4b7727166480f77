"""Telephony audio codecs: G.711 mu-law/A-law and PCM16 (resampling: ``bridge.resampling``).

Replaces the ``audioop`` module removed in Python 3.13. Samples are mono ``int16`` numpy
arrays; encoded audio is ``bytes``. G.711 decoding is a 256-entry table lookup and encoding
a 65536-entry lookup indexed by the uint16 view of the samples; both tables are built once,
at import, from the G.711 formulas.

Mu-law encoding is the sign-magnitude reference (bias 0x84, clip 32635: Sun g711.c 16-bit,
Reese/Campbell), so ``encode(-x) == encode(x) ^ 0x80``. It matches ``audioop.lin2ulaw`` for
every non-negative sample; for negative samples audioop (Sun's 14-bit variant, which shifts
before taking the magnitude) can land one step further from zero, e.g. ``-1 -> 0x7E`` where
the reference gives ``0x7F``. A-law encoding and both decoders match audioop exactly.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ENCODINGS",
    "alaw_decode",
    "as_samples",
    "alaw_encode",
    "bytes_per_sample",
    "decode",
    "encode",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_decode",
    "pcm16_encode",
]

ENCODINGS = ("mulaw", "alaw", "pcm16")

_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _MULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _MULAW_BIAS - t, t - _MULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _all_samples() -> np.ndarray:
    """Every int16 value, ordered so that index ``i`` holds the sample whose uint16 view is i."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _mulaw_encode_table() -> np.ndarray:
    x = _all_samples()
    mag = np.minimum(np.abs(x), _MULAW_CLIP) + _MULAW_BIAS
    seg = np.searchsorted(np.array([(0x100 << s) - 1 for s in range(8)]), mag)  # first end >= mag
    mantissa = (mag >> (seg + 3)) & 0x0F
    sign = np.where(x < 0, 0x80, 0)
    return (~(sign | (seg << 4) | mantissa) & 0xFF).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    x = _all_samples()
    mag = np.where(x >= 0, x, ~x) >> 3  # 13-bit magnitude, one's complement for negatives
    seg = np.searchsorted(np.array([(0x20 << s) - 1 for s in range(8)]), mag)
    mantissa = (mag >> np.maximum(seg, 1)) & 0x0F
    mask = np.where(x >= 0, 0xD5, 0x55)
    return (((seg << 4) | mantissa) ^ mask).astype(np.uint8)


_MULAW_DECODE = _mulaw_decode_table()
_ALAW_DECODE = _alaw_decode_table()
_MULAW_ENCODE = _mulaw_encode_table()
_ALAW_ENCODE = _alaw_encode_table()
_EMPTY = np.zeros(0, dtype=np.int16)
for _table in (_MULAW_DECODE, _ALAW_DECODE, _MULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False


def as_samples(pcm: np.ndarray) -> np.ndarray:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        raise TypeError(f"expected an int16 numpy array, got {getattr(pcm, 'dtype', type(pcm))}")
    if pcm.ndim != 1:
        raise ValueError(f"expected mono (1-D) samples, got shape {pcm.shape}")
    return pcm


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 mono samples -> G.711 mu-law bytes, one byte per sample."""
    return _MULAW_ENCODE[as_samples(pcm).view(np.uint16)].tobytes()


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples."""
    return _MULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 mono samples -> G.711 A-law bytes, one byte per sample."""
    return _ALAW_ENCODE[as_samples(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_encode(pcm: np.ndarray) -> bytes:
    """int16 mono samples -> little-endian signed 16-bit bytes."""
    return as_samples(pcm).astype("<i2", copy=False).tobytes()


def pcm16_decode(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit bytes -> int16 samples (a fresh, writable array)."""
    if len(data) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


_ENCODERS = {"mulaw": mulaw_encode, "alaw": alaw_encode, "pcm16": pcm16_encode}
_DECODERS = {"mulaw": mulaw_decode, "alaw": alaw_decode, "pcm16": pcm16_decode}
_BYTES_PER_SAMPLE = {"mulaw": 1, "alaw": 1, "pcm16": 2}


def _check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown audio encoding {encoding!r}; expected one of {ENCODINGS}")
    return encoding


def encode(encoding: str, pcm: np.ndarray) -> bytes:
    """Encode int16 samples with one of ``ENCODINGS``."""
    return _ENCODERS[_check_encoding(encoding)](pcm)


def decode(encoding: str, data: bytes) -> np.ndarray:
    """Decode bytes in one of ``ENCODINGS`` to int16 samples."""
    return _DECODERS[_check_encoding(encoding)](data)


def bytes_per_sample(encoding: str) -> int:
    return _BYTES_PER_SAMPLE[_check_encoding(encoding)]
