import hashlib

import numpy as np
import pytest

from bridge.codecs import (
    ENCODINGS,
    alaw_decode,
    alaw_encode,
    bytes_per_sample,
    decode,
    encode,
    mulaw_decode,
    mulaw_encode,
    pcm16_decode,
    pcm16_encode,
)

pytestmark = pytest.mark.unit

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_BYTES = bytes(range(256))

# Reference values, derived once on Python 3.11 (audioop is gone in 3.13, so they are literals):
# - decode tables, A-law encode, and mu-law encode of non-negative samples: sha256 of the output
#   of audioop.ulaw2lin / alaw2lin (int16 little-endian) / lin2alaw / lin2ulaw.
# - mu-law encode of all samples: a per-sample port of the sign-magnitude C reference (Sun
#   g711.c 16-bit, Reese/Campbell: bias 0x84, clip 32635). audioop's 14-bit variant differs on
#   381 negative samples by one code (e.g. -1 -> 0x7E instead of 0x7F), hence no audioop hash.
SHA256_MULAW_DECODE = "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
SHA256_ALAW_DECODE = "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174"
SHA256_ALAW_ENCODE = "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"
SHA256_MULAW_ENCODE = "5ee7cf5f273f842d2234121e4cb0c98d6b20a99ac29026f94e05b36955b195be"
SHA256_MULAW_ENCODE_NON_NEGATIVE = (
    "912062bf9c931c7ebc1dc1fd1d74faf0cfefcd47e8408a3ed4d07aa59f0f1c20"
)

# Segment boundaries (last value of one segment, first of the next) and the extremes.
MULAW_ENCODE_CASES = [
    (-32768, 0x00), (-16252, 0x0F), (-8060, 0x1F), (-3964, 0x2F), (-1916, 0x3F), (-892, 0x4F),
    (-380, 0x5F), (-124, 0x6F), (-4, 0x7E), (-3, 0x7F), (-1, 0x7F), (0, 0xFF), (3, 0xFF),
    (4, 0xFE), (123, 0xF0), (124, 0xEF), (379, 0xE0), (380, 0xDF), (891, 0xD0), (892, 0xCF),
    (1915, 0xC0), (1916, 0xBF), (3963, 0xB0), (3964, 0xAF), (8059, 0xA0), (8060, 0x9F),
    (16251, 0x90), (16252, 0x8F), (32635, 0x80), (32767, 0x80),
]  # fmt: skip
ALAW_ENCODE_CASES = [
    (-32768, 0x2A), (-16385, 0x25), (-16384, 0x3A), (-8193, 0x35), (-8192, 0x0A), (-4097, 0x05),
    (-4096, 0x1A), (-2049, 0x15), (-2048, 0x6A), (-1025, 0x65), (-1024, 0x7A), (-513, 0x75),
    (-512, 0x4A), (-257, 0x45), (-256, 0x5A), (-17, 0x54), (-16, 0x55), (-1, 0x55), (0, 0xD5),
    (15, 0xD5), (16, 0xD4), (255, 0xDA), (256, 0xC5), (511, 0xCA), (512, 0xF5), (1023, 0xFA),
    (1024, 0xE5), (2047, 0xEA), (2048, 0x95), (4095, 0x9A), (4096, 0x85), (8191, 0x8A),
    (8192, 0xB5), (16383, 0xBA), (16384, 0xA5), (32767, 0xAA),
]  # fmt: skip
MULAW_DECODE_CASES = [
    (0x00, -32124), (0x0F, -16764), (0x10, -15996), (0x7E, -8), (0x7F, 0), (0x80, 32124),
    (0x8F, 16764), (0xEF, 132), (0xF0, 120), (0xFE, 8), (0xFF, 0),
]  # fmt: skip
ALAW_DECODE_CASES = [
    (0x2A, -32256), (0x55, -8), (0x54, -24), (0xD5, 8), (0xD4, 24), (0xC5, 264), (0xC4, 280),
    (0xF5, 528), (0xAA, 32256), (0xA5, 16896), (0x80, 5504), (0x00, -5504),
]  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tone(freq, rate, seconds=1.0, amplitude=10000.0):
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --- G.711 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("sample", "code"), MULAW_ENCODE_CASES)
def test_mulaw_encodes_segment_boundaries(sample, code):
    assert mulaw_encode(np.array([sample], dtype=np.int16)) == bytes([code])


@pytest.mark.parametrize(("sample", "code"), ALAW_ENCODE_CASES)
def test_alaw_encodes_segment_boundaries(sample, code):
    assert alaw_encode(np.array([sample], dtype=np.int16)) == bytes([code])


@pytest.mark.parametrize(("code", "sample"), MULAW_DECODE_CASES)
def test_mulaw_decodes_reference_values(code, sample):
    assert mulaw_decode(bytes([code])).tolist() == [sample]


@pytest.mark.parametrize(("code", "sample"), ALAW_DECODE_CASES)
def test_alaw_decodes_reference_values(code, sample):
    assert alaw_decode(bytes([code])).tolist() == [sample]


def test_decode_tables_match_the_reference_fingerprints():
    assert sha256(mulaw_decode(ALL_BYTES).astype("<i2").tobytes()) == SHA256_MULAW_DECODE
    assert sha256(alaw_decode(ALL_BYTES).astype("<i2").tobytes()) == SHA256_ALAW_DECODE


def test_encoders_match_the_reference_fingerprints_over_every_sample():
    assert sha256(alaw_encode(ALL_SAMPLES)) == SHA256_ALAW_ENCODE
    assert sha256(mulaw_encode(ALL_SAMPLES)) == SHA256_MULAW_ENCODE
    assert sha256(mulaw_encode(ALL_SAMPLES[32768:])) == SHA256_MULAW_ENCODE_NON_NEGATIVE


def test_mulaw_is_sign_magnitude_symmetric():
    positive = np.frombuffer(mulaw_encode(ALL_SAMPLES[32769:]), dtype=np.uint8)
    negative = np.frombuffer(mulaw_encode(-ALL_SAMPLES[32769:]), dtype=np.uint8)
    assert np.array_equal(negative, positive ^ 0x80)


@pytest.mark.parametrize(("enc", "dec"), [(mulaw_encode, mulaw_decode), (alaw_encode, alaw_decode)])
def test_every_code_survives_a_round_trip(enc, dec):
    decoded = dec(ALL_BYTES)
    assert np.array_equal(dec(enc(decoded)), decoded)


def test_mulaw_error_is_within_half_a_step_of_its_segment():
    codes = np.frombuffer(mulaw_encode(ALL_SAMPLES), dtype=np.uint8)
    error = np.abs(mulaw_decode(codes.tobytes()).astype(np.int32) - ALL_SAMPLES)
    segment = (((~codes) & 0x70) >> 4).astype(np.int32)
    unclipped = np.abs(ALL_SAMPLES.astype(np.int32)) <= 32635
    assert np.all(error[unclipped] <= 4 << segment[unclipped])  # step is 8 << segment
    assert error.max() == 32768 - 32124  # beyond the clip level the error is the clipping


def test_alaw_error_is_within_half_a_step_of_its_segment():
    codes = np.frombuffer(alaw_encode(ALL_SAMPLES), dtype=np.uint8)
    error = np.abs(alaw_decode(codes.tobytes()).astype(np.int32) - ALL_SAMPLES)
    segment = (((codes ^ 0x55) & 0x70) >> 4).astype(np.int32)
    assert np.all(error <= 4 << np.maximum(segment, 1))  # step is 16 in segments 0 and 1


def test_encoders_make_one_byte_per_sample_and_decoders_return_int16():
    pcm = tone(440, 8000, seconds=0.02)
    for name in ENCODINGS:
        data = encode(name, pcm)
        assert len(data) == len(pcm) * bytes_per_sample(name)
        decoded = decode(name, data)
        assert decoded.dtype == np.int16
        assert decoded.shape == pcm.shape


def test_decoders_accept_any_bytes_like():
    data = mulaw_encode(tone(440, 8000, seconds=0.02))
    assert np.array_equal(mulaw_decode(bytearray(data)), mulaw_decode(data))
    assert np.array_equal(mulaw_decode(memoryview(data)), mulaw_decode(data))


# --- PCM16 and dispatch ------------------------------------------------------------------


def test_pcm16_is_little_endian_and_lossless():
    assert pcm16_encode(np.array([1, -2, 0x1234], dtype=np.int16)) == b"\x01\x00\xfe\xff\x34\x12"
    assert pcm16_decode(b"\x01\x00\xfe\xff\x34\x12").tolist() == [1, -2, 0x1234]
    assert np.array_equal(pcm16_decode(pcm16_encode(ALL_SAMPLES)), ALL_SAMPLES)


def test_pcm16_decode_returns_a_writable_array():
    decoded = pcm16_decode(b"\x01\x00")
    decoded[0] = 7
    assert decoded.tolist() == [7]


def test_pcm16_decode_rejects_an_odd_byte_count():
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_decode(b"\x00\x01\x02")


def test_encoders_reject_anything_but_mono_int16():
    with pytest.raises(TypeError, match="int16"):
        mulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        alaw_encode([0, 1])
    with pytest.raises(ValueError, match="mono"):
        pcm16_encode(np.zeros((4, 2), dtype=np.int16))


def test_dispatch_names_an_unknown_encoding():
    with pytest.raises(ValueError, match="'opus'"):
        encode("opus", np.zeros(1, dtype=np.int16))
    with pytest.raises(ValueError, match="'g722'"):
        decode("g722", b"")
    with pytest.raises(ValueError, match="'ulaw'"):
        bytes_per_sample("ulaw")


def test_bytes_per_sample():
    assert [bytes_per_sample(name) for name in ENCODINGS] == [1, 1, 2]
