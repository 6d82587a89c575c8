"""Mp3Encoder: the concatenated output is one MP3 stream that decodes to the PCM's duration."""

from __future__ import annotations

import array
import io
import itertools
import math
import random

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.voice.mp3 import ENCODER_DELAY, MPEG_SAMPLE_RATES, Mp3Encoder, allowed_bitrates

#: LAME's stream = its encoder delay + the PCM + at least one granule (576 samples) of end padding, rounded
#: up to whole frames. Our stream has no Xing/LAME header, so decoders play all of it.
LEAD_AND_MIN_TAIL = ENCODER_DELAY + 576


def tone(n: int, rate: int, freq: float = 440.0, channels: int = 1) -> bytes:
    """``n`` samples (per channel) of a sine at ``freq`` Hz, 16-bit little-endian, interleaved."""
    out = array.array("h")
    for i in range(n):
        v = int(9000 * math.sin(2 * math.pi * freq * i / rate))
        out.extend([v] * channels)
    return out.tobytes()


def decode(mp3: bytes) -> tuple[int, int, int, array.array[int]]:
    """(samples per channel, sample rate, channels, mono s16 samples) as PyAV/ffmpeg decodes ``mp3``."""
    samples = array.array("h")
    total = 0
    rate = channels = 0
    with av.open(io.BytesIO(mp3), mode="r", format="mp3") as container:
        resampler = av.AudioResampler(format="s16", layout="mono")
        for frame in container.decode(audio=0):
            total += frame.samples
            rate = frame.sample_rate
            channels = len(frame.layout.channels)
            for out in resampler.resample(frame):
                samples.frombytes(bytes(out.planes[0])[: out.samples * 2])
    return total, rate, channels, samples


def zero_crossings_per_second(samples: array.array[int], rate: int) -> float:
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings * rate / len(samples)


def encode_in_pieces(enc: Mp3Encoder, pcm: bytes, sizes: list[int]) -> tuple[bytes, list[int]]:
    out = bytearray()
    emitted = []
    i = 0
    k = 0
    while i < len(pcm):
        size = sizes[k % len(sizes)]
        chunk = enc.encode(pcm[i : i + size])
        emitted.append(len(chunk))
        out += chunk
        i += size
        k += 1
    out += enc.flush()
    return bytes(out), emitted


@pytest.mark.parametrize("rate", sorted(MPEG_SAMPLE_RATES))
def test_decoded_duration_matches_pcm_within_one_frame(rate: int) -> None:
    n = rate * 2 + 317
    enc = Mp3Encoder(rate)
    mp3 = enc.encode(tone(n, rate)) + enc.flush()
    decoded, decoded_rate, channels, _ = decode(mp3)
    assert decoded_rate == rate
    assert channels == 1
    assert enc.samples_in == n
    assert enc.duration == pytest.approx(n / rate)
    assert enc.bytes_out == len(mp3)
    # Decoded = lead-in + PCM + tail; what is left after the fixed part is under one frame.
    assert 0 <= decoded - n - LEAD_AND_MIN_TAIL < enc.frame_samples


def test_tone_survives_encoding() -> None:
    rate = 24000
    enc = Mp3Encoder(rate)
    mp3 = enc.encode(tone(rate, rate, freq=440.0)) + enc.flush()
    _, _, _, samples = decode(mp3)
    body = samples[ENCODER_DELAY + 1000 : ENCODER_DELAY + 1000 + rate // 2]
    assert zero_crossings_per_second(body, rate) == pytest.approx(880, rel=0.02)
    assert max(body) > 6000


def test_odd_sized_chunks_give_the_same_stream() -> None:
    rate = 24000
    pcm = tone(rate + 1001, rate)
    whole_enc = Mp3Encoder(rate)
    whole = whole_enc.encode(pcm) + whole_enc.flush()
    pieces_enc = Mp3Encoder(rate)
    pieces, _ = encode_in_pieces(pieces_enc, pcm, [1, 3, 7, 333, 4097, 2, 9999])
    assert pieces_enc.samples_in == whole_enc.samples_in == rate + 1001
    assert pieces == whole
    assert decode(pieces)[0] == decode(whole)[0]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=20000),
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=8),
    rate=st.sampled_from([16000, 24000, 44100]),
)
def test_any_chunking_decodes_to_the_pcm_duration(n: int, sizes: list[int], rate: int) -> None:
    rng = random.Random(n)
    pcm = array.array("h", (rng.randint(-8000, 8000) for _ in range(n))).tobytes()
    enc = Mp3Encoder(rate)
    mp3, _ = encode_in_pieces(enc, pcm, sizes)
    assert enc.samples_in == n
    decoded = decode(mp3)[0]
    assert 0 <= decoded - n - LEAD_AND_MIN_TAIL < enc.frame_samples


def test_output_is_emitted_before_flush() -> None:
    rate = 24000
    enc = Mp3Encoder(rate)
    chunk = tone(rate // 10, rate)  # 100 ms, as TTS sends it
    emitted = [len(enc.encode(chunk)) for _ in range(10)]
    assert sum(emitted[:3]) > 0  # within 300 ms of audio, MP3 is already out
    assert sum(1 for e in emitted if e) >= 8
    before_flush = enc.bytes_out
    tail = enc.flush()
    assert before_flush > len(tail)
    # 1 s at 64 kbps is about 8000 bytes.
    assert 7000 < enc.bytes_out < 10000


def test_dangling_byte_is_kept_for_the_next_call() -> None:
    enc = Mp3Encoder(24000)
    pcm = tone(3000, 24000)
    enc.encode(pcm[:1001])
    assert enc.samples_in == 500
    enc.encode(pcm[1001:1002])
    assert enc.samples_in == 501
    enc.encode(pcm[1002:])
    assert enc.samples_in == 3000


def test_stereo() -> None:
    rate = 44100
    n = rate + 5
    enc = Mp3Encoder(rate, bitrate_kbps=128, channels=2)
    pcm = tone(n, rate, channels=2)
    mp3, _ = encode_in_pieces(enc, pcm, [3, 4095])  # splits inside stereo frames
    assert enc.samples_in == n
    decoded, decoded_rate, channels, _ = decode(mp3)
    assert (decoded_rate, channels) == (rate, 2)
    assert 0 <= decoded - n - LEAD_AND_MIN_TAIL < enc.frame_samples


def test_bitrate_sets_the_size() -> None:
    rate = 24000
    sizes = {}
    for kbps in (32, 64, 128):
        enc = Mp3Encoder(rate, bitrate_kbps=kbps)
        sizes[kbps] = len(enc.encode(tone(rate * 2, rate)) + enc.flush())
    # constant bitrate: size ~ kbps * 1000 / 8 * seconds (plus the delay/padding frames)
    for kbps, size in sizes.items():
        assert kbps * 250 <= size <= kbps * 125 * 2.2


def test_empty_stream_and_flush_twice() -> None:
    enc = Mp3Encoder(24000)
    assert enc.encode(b"") == b""
    assert enc.encode(b"\x01") == b""
    assert enc.flush() == b""
    assert enc.flush() == b""
    assert enc.samples_in == 0
    with pytest.raises(RuntimeError):
        enc.encode(b"\x00\x00")


def test_flush_twice_after_audio() -> None:
    enc = Mp3Encoder(16000)
    first = enc.encode(tone(16000, 16000)) + enc.flush()
    assert first
    assert enc.flush() == b""
    assert enc.finished


def test_accepts_buffers() -> None:
    enc = Mp3Encoder(24000)
    pcm = tone(4000, 24000)
    out = enc.encode(bytearray(pcm[:4000])) + enc.encode(memoryview(pcm)[4000:]) + enc.flush()
    assert enc.samples_in == 4000
    assert decode(out)[0] >= 4000


@pytest.mark.parametrize(
    ("rate", "kwargs"),
    [
        (24001, {}),
        (96000, {}),
        (24000, {"bitrate_kbps": 320}),  # MPEG-2 tops out at 160
        (44100, {"bitrate_kbps": 8}),  # MPEG-1 starts at 32
        (24000, {"channels": 3}),
        (24000, {"quality": 10}),
    ],
)
def test_rejects_bad_parameters(rate: int, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Mp3Encoder(rate, **kwargs)


def test_allowed_bitrates() -> None:
    assert 64 in allowed_bitrates(24000)
    assert 320 not in allowed_bitrates(24000)
    assert 320 in allowed_bitrates(48000)
    with pytest.raises(ValueError):
        allowed_bitrates(12345)
