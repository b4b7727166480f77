"""The bridge's resampler: exact 20 ms in, 20 ms out for phone rates, no aliasing, no images,
a few milliseconds of delay; soxr for other ratios."""

import numpy as np
import pytest
import soxr

from bridge.resampling import Resampler, _lowpass

pytestmark = pytest.mark.unit


def tone(freq, rate, seconds=1.0, amplitude=10000.0):
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def resample_in_frames(pcm, from_rate, to_rate, frame_ms=20):
    resampler = Resampler(from_rate, to_rate)
    step = from_rate * frame_ms // 1000
    chunks = [resampler.process(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    return np.concatenate([*chunks, resampler.flush()])


# --- Resampler ---------------------------------------------------------------------------

# The bridge's conversions (a polyphase FIR each) and the group delay each adds, in output
# samples: the filter's (taps - 1) / 2 at 48 kHz (291 and 175 taps) or 16 kHz (101 taps).
BRIDGE_CONVERSIONS = [(8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)]
CONVERSIONS = [*BRIDGE_CONVERSIONS, (8000, 16000), (16000, 8000)]
DELAY = {
    (8000, 48000): 145,  # 3.02 ms
    (48000, 8000): 24,  # 3.0 ms
    (16000, 48000): 87,  # 1.81 ms
    (48000, 16000): 29,  # 1.81 ms
    (8000, 16000): 50,  # 3.13 ms
    (16000, 8000): 25,  # 3.13 ms
}
ODD_CHUNKS = [1, 7, 13, 160, 999, 3, 480, 0, 5, 961]  # samples
CHUNKINGS = pytest.mark.parametrize("odd", [False, True], ids=["20ms", "odd"])


def noise(rate, seconds=1.0, scale=3000.0, seed=7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(rate * seconds)) * scale).astype(np.int16)


def resample_in_chunks(pcm, from_rate, to_rate, odd):
    """Through one resampler in 20 ms frames, or in ODD_CHUNKS sizes over and over."""
    sizes = ODD_CHUNKS if odd else [from_rate // 50]
    resampler = Resampler(from_rate, to_rate)
    chunks, start, i = [], 0, 0
    while start < len(pcm):
        chunks.append(resampler.process(pcm[start : start + sizes[i % len(sizes)]]))
        start += sizes[i % len(sizes)]
        i += 1
    return np.concatenate([*chunks, resampler.flush()])


def level_db(out, pcm, to_rate):
    """Output level against input level, the filter's start and end (100 ms each) left out."""
    edge = to_rate // 10
    return 20 * np.log10(rms(out[edge:-edge]) / rms(pcm))


@pytest.mark.parametrize(("from_rate", "to_rate"), CONVERSIONS)
def test_every_20ms_frame_gives_exactly_20ms_at_once(from_rate, to_rate):
    pcm = noise(from_rate)
    frame = from_rate // 50
    resampler = Resampler(from_rate, to_rate)
    outputs = [
        # read-only, like np.frombuffer over a WebSocket payload
        resampler.process(np.frombuffer(pcm[i : i + frame].tobytes(), dtype=np.int16))
        for i in range(0, len(pcm), frame)
    ]
    assert {len(out) for out in outputs} == {to_rate // 50}
    assert all(out.dtype == np.int16 for out in outputs)
    assert sum(map(len, outputs)) == len(pcm) * to_rate // from_rate
    # nothing more is owed: the total is exactly the ratio (the output runs one group delay
    # behind the input, so the last group delay of input stays in the filter)
    assert len(resampler.flush()) == 0


@pytest.mark.parametrize(("from_rate", "to_rate"), [(48000, 8000), (48000, 16000), (16000, 8000)])
def test_downsampling_carries_odd_samples_over_without_drift(from_rate, to_rate):
    pcm = noise(from_rate)  # more than is fed
    ratio = from_rate // to_rate
    resampler = Resampler(from_rate, to_rate)
    fed = made = 0
    for size in [7, 1, 160, 5, 961] * 10 + [1]:  # 11341 samples: one past a multiple of M
        made += len(resampler.process(pcm[fed : fed + size]))
        fed += size
        assert fed // ratio <= made <= -(-fed // ratio)  # on the ratio, to within a sample
    made += len(resampler.flush())
    assert made == -(-fed // ratio)  # a last, incomplete group of inputs gets its output too


@CHUNKINGS
@pytest.mark.parametrize(("from_rate", "to_rate"), CONVERSIONS)
def test_an_impulse_comes_out_after_the_group_delay(from_rate, to_rate, odd):
    impulse = np.zeros(from_rate // 10, dtype=np.int16)
    at = from_rate // 20  # a multiple of any downsampling ratio
    impulse[at] = 30000
    out = resample_in_chunks(impulse, from_rate, to_rate, odd)
    delay = np.argmax(out) - at * to_rate // from_rate
    assert delay == DELAY[from_rate, to_rate]
    assert delay / to_rate <= 0.004


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "freq", "tolerance_db"),
    [
        (8000, 48000, 1000, 0.5),
        (48000, 8000, 1000, 0.5),
        (8000, 48000, 3400, 1.0),
        (48000, 8000, 3400, 1.0),
        (16000, 48000, 1000, 0.5),
        (48000, 16000, 1000, 0.5),
        (16000, 48000, 7000, 1.0),
        (48000, 16000, 7000, 1.0),
    ],
)
def test_the_pass_band_keeps_its_level(from_rate, to_rate, freq, tolerance_db):
    pcm = tone(freq, from_rate)
    assert abs(level_db(resample_in_frames(pcm, from_rate, to_rate), pcm, to_rate)) < tolerance_db


def test_upsampling_keeps_frequency_and_amplitude():
    out = resample_in_frames(tone(1000, 8000), 8000, 48000)
    steady = out[4800:-4800].astype(np.float64)  # drop 100 ms at each end
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.fft.rfftfreq(len(steady), 1 / 48000)[np.argmax(spectrum)]
    assert abs(peak_hz - 1000) <= 48000 / len(steady)
    gain_db = 20 * np.log10(rms(steady) / (10000 / np.sqrt(2)))
    assert abs(gain_db) < 0.5


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "freq"),
    [(48000, 8000, 5000), (48000, 8000, 4600), (48000, 8000, 11000), (48000, 16000, 9000)],
)
def test_downsampling_removes_what_the_new_rate_cannot_carry(from_rate, to_rate, freq):
    pcm = tone(freq, from_rate)
    naive = pcm[:: from_rate // to_rate]  # plain decimation folds e.g. 5 kHz onto 3 kHz
    assert 20 * np.log10(rms(naive) / rms(pcm)) > -1
    assert level_db(resample_in_frames(pcm, from_rate, to_rate), pcm, to_rate) <= -60


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "freq"),
    [(8000, 48000, 1000), (8000, 48000, 3400), (16000, 48000, 1000), (16000, 48000, 7000)],
)
def test_upsampling_leaves_no_images(from_rate, to_rate, freq):
    # 1 kHz at 8 kHz, zero-stuffed to 48 kHz, also sits at 7, 9, 15, 17, 23 kHz
    out = resample_in_frames(tone(freq, from_rate, seconds=1.2), from_rate, to_rate)
    steady = out[to_rate // 10 : to_rate // 10 + to_rate].astype(np.float64)  # 1 s: 1 Hz bins
    power = np.abs(np.fft.rfft(steady)) ** 2  # whole periods: no window needed
    images = power[from_rate // 2 :].sum()  # everything above the old Nyquist
    assert 10 * np.log10(images / power[freq]) <= -60


@CHUNKINGS
@pytest.mark.parametrize(("from_rate", "to_rate"), CONVERSIONS)
def test_streaming_in_chunks_matches_one_shot(from_rate, to_rate, odd):
    pcm = noise(from_rate)
    one_shot = Resampler(from_rate, to_rate)
    whole = np.concatenate([one_shot.process(pcm), one_shot.flush()])
    streamed = resample_in_chunks(pcm, from_rate, to_rate, odd)
    assert len(streamed) == len(whole)
    assert np.max(np.abs(streamed.astype(np.int32) - whole)) <= 1  # float32 rounding only


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 48000), (48000, 8000)])
def test_output_clips_instead_of_wrapping_around(from_rate, to_rate):
    # a full-scale square wave: the filter rings past full scale at every edge
    half_period = from_rate // 160  # 80 Hz
    square = np.repeat(np.array([32767, -32768] * 40, dtype=np.int16), half_period)
    out = resample_in_frames(square, from_rate, to_rate).astype(np.int32)
    # the filter is linear: at half scale nothing clips, and twice that is the ideal output
    ideal = 2 * resample_in_frames(square // 2, from_rate, to_rate).astype(np.int32)
    assert ideal.max() > 35000 and ideal.min() < -35000
    assert np.max(np.abs(out - np.clip(ideal, -32768, 32767))) <= 2


def test_equal_rates_pass_samples_through_without_copying():
    resampler = Resampler(48000, 48000)
    pcm = tone(1000, 48000, seconds=0.02)
    assert resampler.process(pcm) is pcm
    assert len(resampler.flush()) == 0


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 48000), (48000, 8000), (22050, 16000)])
def test_flush_resets_the_stream_for_a_new_signal(from_rate, to_rate):
    resampler = Resampler(from_rate, to_rate)
    pcm = tone(1000, from_rate, seconds=0.2)
    first = np.concatenate([resampler.process(pcm), resampler.flush()])
    second = np.concatenate([resampler.process(pcm), resampler.flush()])
    assert np.array_equal(first, second)
    assert len(resampler.flush()) == 0  # nothing fed since: nothing owed


def test_an_empty_chunk_gives_nothing_and_changes_nothing():
    pcm = noise(8000, seconds=0.1)
    resampler = Resampler(8000, 48000)
    first = resampler.process(pcm[:160])
    assert len(resampler.process(pcm[:0])) == 0
    rest = resampler.process(pcm[160:])
    one_shot = Resampler(8000, 48000).process(pcm)
    assert np.array_equal(np.concatenate([first, rest]), one_shot)


def test_other_ratios_go_through_soxr():
    pcm = tone(1000, 22050)
    out = resample_in_frames(pcm, 22050, 16000)
    assert abs(len(out) - 16000) <= 2
    assert abs(level_db(out, pcm, 16000)) < 0.5
    stream = soxr.ResampleStream(22050, 16000, 1, dtype=np.float32, quality="MQ")
    step = 22050 // 50
    chunks = [
        stream.resample_chunk(pcm[i : i + step].astype(np.float32))
        for i in range(0, len(pcm), step)
    ]
    direct = np.concatenate([*chunks, stream.resample_chunk(np.zeros(0, np.float32), last=True)])
    assert np.array_equal(out, np.clip(np.rint(direct), -32768, 32767).astype(np.int16))


@pytest.mark.parametrize(
    ("high_rate", "low_rate", "passband"),
    [(48000, 8000, 3400), (48000, 16000, 7000), (16000, 8000, 3400)],
)
def test_the_filters_meet_their_specification(high_rate, low_rate, passband):
    taps = _lowpass(high_rate, low_rate)
    assert len(taps) % 2 == 1 and np.allclose(taps, taps[::-1])  # linear phase
    response = np.abs(np.fft.rfft(taps, 1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / high_rate)
    assert np.max(np.abs(20 * np.log10(response[freqs <= passband]))) < 0.05
    assert 20 * np.log10(response[freqs >= low_rate / 2].max()) <= -60
    assert (len(taps) - 1) / 2 / high_rate <= 0.004  # group delay


def test_resampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 48000)
    with pytest.raises(ValueError, match="quality"):
        Resampler(8000, 48000, quality="best")
    with pytest.raises(TypeError, match="int16"):
        Resampler(8000, 48000).process(np.zeros(160, dtype=np.float32))
