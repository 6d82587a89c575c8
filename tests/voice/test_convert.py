"""voice/convert.py: wire formats, soxr resampling and G.711 through FFmpeg, checked on real signals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.voice.convert import (
    BETA_FORMATS,
    WIRE_FORMATS,
    G711Decoder,
    G711Encoder,
    InputConverter,
    OutputConverter,
    Resampler,
    WireEncoder,
    WireFormat,
    wire_bytes,
    wire_format,
    wire_ms,
)

PCM = WIRE_FORMATS["audio/pcm"]
PCMU = WIRE_FORMATS["audio/pcmu"]
PCMA = WIRE_FORMATS["audio/pcma"]
G711 = (PCMU, PCMA)
RATE_PAIRS = [(24000, 16000), (16000, 24000), (22050, 24000), (48000, 24000), (8000, 16000)]


def sine(freq: float, rate: int, seconds: float, amplitude: float = 9000.0) -> bytes:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).round().astype("<i2").tobytes()


def noise(n_samples: int, seed: int, sd: float = 4000.0) -> bytes:
    x = np.random.default_rng(seed).normal(0, sd, n_samples)
    return x.round().clip(-32768, 32767).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed: empty pieces too)."""
    points = sorted(c % (len(data) + 1) for c in cuts)
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def peak_hz(pcm: bytes, rate: int) -> float:
    x = samples(pcm).astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(samples(pcm).astype(float) ** 2)))


# ------------------------------------------------------------------ formats


def test_ga_and_beta_names() -> None:
    assert wire_format("audio/pcm") == WireFormat("audio/pcm", 24000, 2)
    assert wire_format("audio/pcmu") == WireFormat("audio/pcmu", 8000, 1)
    assert wire_format("audio/pcma") == WireFormat("audio/pcma", 8000, 1)
    assert wire_format("pcm16") == PCM
    assert wire_format("g711_ulaw") == PCMU
    assert wire_format("g711_alaw") == PCMA
    assert {BETA_FORMATS[n] for n in ("pcm16", "g711_ulaw", "g711_alaw")} == set(WIRE_FORMATS)
    assert wire_format("audio/pcm", 16000) == WireFormat("audio/pcm", 16000, 2)
    assert wire_format("g711_ulaw", 8000) == PCMU


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("audio/opus", None),
        ("pcm", None),
        ("", None),
        ("audio/pcm", 12345),
        ("audio/pcm", 0),
        ("audio/pcmu", 16000),
    ],
)
def test_unknown_formats_and_rates_are_value_errors(name: str, rate: int | None) -> None:
    with pytest.raises(ValueError):
        wire_format(name, rate)


@given(
    fmt=st.sampled_from(
        [PCM, PCMU, PCMA, wire_format("audio/pcm", 16000), wire_format("audio/pcm", 48000)]
    ),
    ms=st.integers(0, 10_000_000),
)
def test_wire_bytes_and_ms_are_inverse(fmt: WireFormat, ms: int) -> None:
    n = wire_bytes(fmt, ms)
    assert n % fmt.sample_width == 0
    assert wire_ms(fmt, n) == ms
    assert wire_ms(fmt, n + fmt.sample_width - 1) == ms  # a partial sample adds nothing


@given(ms=st.integers(0, 1_000_000))
def test_wire_ms_at_a_rate_with_fractional_samples_per_ms(ms: int) -> None:
    fmt = wire_format("audio/pcm", 22050)
    assert wire_ms(fmt, wire_bytes(fmt, ms)) in (ms - 1, ms)


# ------------------------------------------------------------------ resampling


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_a_sine_keeps_its_frequency_and_level(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    out = r.process(sine(1000, in_rate, 1.0)) + r.flush()
    assert abs(len(out) // 2 - out_rate) <= 2
    assert abs(peak_hz(out, out_rate) - 1000) <= 1.5  # FFT bins are 1 Hz wide
    assert rms(out) == pytest.approx(9000 / np.sqrt(2), rel=0.02)


def test_a_tone_above_the_new_nyquist_is_removed() -> None:
    """24 kHz -> 16 kHz: 10 kHz cannot exist at 16 kHz and must not fold down to 6 kHz."""
    r = Resampler(24000, 16000)
    out = r.process(sine(10000, 24000, 1.0)) + r.flush()
    assert rms(out[4000:-4000]) < 9000 / np.sqrt(2) / 100  # at least 40 dB down


@settings(max_examples=40, deadline=None)
@given(
    rates=st.sampled_from(RATE_PAIRS),
    n=st.integers(0, 6000),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(0, 20000), max_size=12),
)
def test_any_chunking_gives_the_one_call_output(
    rates: tuple[int, int], n: int, seed: int, cuts: list[int]
) -> None:
    """The same samples whatever the chunking (soxr runs in float32), the length as the rates say."""
    pcm = noise(n, seed)
    one = Resampler(*rates)
    whole = one.process(pcm) + one.flush()
    many = Resampler(*rates)
    pieces = b"".join(many.process(p) for p in split(pcm, cuts)) + many.flush()
    assert pieces == whole
    expected = n * rates[1] / rates[0]
    assert abs(len(whole) // 2 - expected) <= 2


@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 4000), max_size=10))
def test_equal_rates_are_the_identity_for_any_chunking(data: bytes, cuts: list[int]) -> None:
    r = Resampler(24000, 24000)
    out = b"".join(r.process(p) for p in split(data, cuts)) + r.flush()
    assert out == data[: len(data) // 2 * 2]


def test_flush_ends_one_stream_and_the_next_starts_fresh() -> None:
    pcm = sine(440, 24000, 0.3)
    r = Resampler(24000, 16000)
    first = r.process(pcm) + r.flush()
    second = r.process(pcm) + r.flush()
    assert first == second


@pytest.mark.parametrize(("in_rate", "out_rate"), [(0, 16000), (16000, -1), (16000, 10**7)])
def test_bad_rates_are_value_errors(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError):
        Resampler(in_rate, out_rate)


# ------------------------------------------------------------------ G.711


@pytest.mark.parametrize("fmt", G711)
def test_g711_round_trip_error_is_bounded_for_every_sample(fmt: WireFormat) -> None:
    """G.711 is logarithmic: the error grows with the level, at most ~1/16 of it, and is tiny near zero."""
    every = np.arange(-32768, 32768, dtype="<i2")
    coded = G711Encoder(fmt).encode(every.tobytes())
    assert len(coded) == len(every)
    back = samples(G711Decoder(fmt).decode(coded))
    err = np.abs(back - every.astype(np.int64))
    assert np.all(err <= np.abs(every.astype(np.int64)) // 16 + 132)
    quiet = np.abs(every.astype(np.int64)) < 256
    assert int(err[quiet].max()) <= 16


@pytest.mark.parametrize("fmt", G711)
def test_g711_keeps_a_speech_band_tone(fmt: WireFormat) -> None:
    pcm = sine(1000, 8000, 1.0)
    back = G711Decoder(fmt).decode(G711Encoder(fmt).encode(pcm))
    noise_power = np.mean((samples(back) - samples(pcm)).astype(float) ** 2)
    snr_db = 10 * np.log10(np.mean(samples(pcm).astype(float) ** 2) / noise_power)
    assert snr_db > 30  # G.711 gives ~38 dB on a loud tone
    assert peak_hz(back, 8000) == pytest.approx(1000, abs=1.5)


def test_mu_law_and_a_law_differ() -> None:
    pcm = sine(700, 8000, 0.1)
    assert G711Encoder(PCMU).encode(pcm) != G711Encoder(PCMA).encode(pcm)


def test_g711_codecs_refuse_pcm() -> None:
    with pytest.raises(ValueError):
        G711Encoder(PCM)
    with pytest.raises(ValueError):
        G711Decoder(PCM)


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from(G711),
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
)
def test_g711_input_any_chunking_is_identical(
    fmt: WireFormat, data: bytes, cuts: list[int]
) -> None:
    conv = InputConverter(fmt, 8000)
    pieces = b"".join(conv.feed(p) for p in split(data, cuts)) + conv.flush()
    assert pieces == G711Decoder(fmt).decode(data)
    assert len(pieces) == 2 * len(data)


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from(G711),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(0, 7000), max_size=10),
)
def test_g711_output_any_chunking_is_identical(
    fmt: WireFormat, n: int, seed: int, cuts: list[int]
) -> None:
    pcm = noise(n, seed)
    conv = OutputConverter(fmt)
    pieces = b"".join(conv.feed(p, 8000) for p in split(pcm, cuts)) + conv.flush()
    assert pieces == G711Encoder(fmt).encode(pcm)


# ------------------------------------------------------------------ converters end to end


@settings(max_examples=30, deadline=None)
@given(
    fmt=st.sampled_from(
        [PCM, PCMU, PCMA, wire_format("audio/pcm", 16000), wire_format("audio/pcm", 48000)]
    ),
    ms=st.integers(0, 3000),
    out_rate=st.sampled_from([16000, 8000, 24000]),
    chunk_ms=st.sampled_from([10, 20, 37, 100]),
)
def test_input_conversion_keeps_the_duration(
    fmt: WireFormat, ms: int, out_rate: int, chunk_ms: int
) -> None:
    wire = bytes(range(256)) * (wire_bytes(fmt, ms) // 256 + 1)
    wire = wire[: wire_bytes(fmt, ms)]
    conv = InputConverter(fmt, out_rate)
    step = max(1, wire_bytes(fmt, chunk_ms))
    out = b"".join(conv.feed(wire[i : i + step]) for i in range(0, len(wire), step)) + conv.flush()
    assert abs(len(out) // 2 - ms * out_rate / 1000) <= 2


@pytest.mark.parametrize("fmt", [PCM, PCMU, PCMA])
def test_client_tone_reaches_the_recogniser_at_16k(fmt: WireFormat) -> None:
    """24 kHz PCM or 8 kHz G.711 from the client -> 16 kHz for the recogniser, tone intact."""
    src = sine(1000, fmt.sample_rate, 1.0)
    wire = src if fmt.sample_width == 2 else G711Encoder(fmt).encode(src)
    conv = InputConverter(fmt, 16000)
    step = wire_bytes(fmt, 20)
    out = b"".join(conv.feed(wire[i : i + step]) for i in range(0, len(wire), step)) + conv.flush()
    assert abs(len(out) // 2 - 16000) <= 2
    assert peak_hz(out, 16000) == pytest.approx(1000, abs=1.5)
    assert rms(out) == pytest.approx(9000 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("fmt", [PCM, PCMU, PCMA])
def test_output_follows_a_change_of_tts_rate(fmt: WireFormat) -> None:
    """0.5 s at 24 kHz then 0.5 s at 16 kHz: 1 s on the wire, both tones at their own frequency."""
    conv = OutputConverter(fmt)
    wire = conv.feed(sine(600, 24000, 0.5), 24000)
    wire += conv.feed(sine(900, 16000, 0.5), 16000)
    wire += conv.flush()
    assert abs(wire_ms(fmt, len(wire)) - 1000) <= 1
    pcm = wire if fmt.sample_width == 2 else G711Decoder(fmt).decode(wire)
    half = len(pcm) // 4 * 2
    assert peak_hz(pcm[:half], fmt.sample_rate) == pytest.approx(600, abs=3)
    assert peak_hz(pcm[half:], fmt.sample_rate) == pytest.approx(900, abs=3)


def test_output_at_the_client_rate_is_passed_through() -> None:
    pcm = noise(2401, 3)
    conv = OutputConverter(PCM)
    assert conv.feed(pcm[:1001], 24000) + conv.feed(pcm[1001:], 24000) + conv.flush() == pcm


@pytest.mark.parametrize("fmt", [PCM, PCMU, PCMA])
def test_wire_encoder_is_an_audio_encoder_for_the_answer_stage(fmt: WireFormat) -> None:
    pcm = sine(440, 16000, 0.5)
    enc = WireEncoder(fmt, 16000)
    assert enc.sample_rate == 16000 and enc.samples_in == 0 and not enc.finished
    wire = enc.encode(pcm[:1001]) + enc.encode(pcm[1001:])
    assert enc.samples_in == len(pcm) // 2
    wire += enc.flush()
    assert enc.finished and enc.flush() == b""
    assert enc.bytes_out == len(wire)
    conv = OutputConverter(fmt)
    assert wire == conv.feed(pcm, 16000) + conv.flush()
    assert abs(wire_ms(fmt, len(wire)) - 500) <= 1
    with pytest.raises(RuntimeError):
        enc.encode(pcm)
