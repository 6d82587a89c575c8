"""Transcoding uploads for recognisers that do not take them as they are (PyAV), on real files made here."""

from __future__ import annotations

import array
import io
import math
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.providers.dashscope.catalogue import asr_model
from qwen_gateway.voice.decode import PcmDecoder, UndecodableAudio, plan
from qwen_gateway.voice.formats import AudioFormatInfo, sniff

from .test_formats import av_encode, make_mp3


def tone(rate: int, seconds: float, channels: int = 1, freq: float = 440.0) -> bytes:
    n = int(rate * seconds)
    return array.array(
        "h",
        [
            int(9000 * math.sin(2 * math.pi * freq * i / rate))
            for i in range(n)
            for _ in range(channels)
        ],
    ).tobytes()


def wav(pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def decode(data: bytes, rate: int, step: int = 8192, info: AudioFormatInfo | None = None) -> bytes:
    decoder = PcmDecoder(info or sniff(data[:4096]), rate)
    out = bytearray()
    for start in range(0, len(data), step):
        out += decoder.feed(data[start : start + step])
    out += decoder.finish()
    return bytes(out)


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def rms(pcm: bytes) -> float:
    samples = array.array("h")
    samples.frombytes(pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


# ------------------------------------------------------------------------------------------ plan

REALTIME = asr_model("qwen3-asr-flash-realtime")
PARAFORMER_8K = asr_model("paraformer-realtime-8k-v2")
PARAFORMER = asr_model("paraformer-realtime-v2")


@pytest.mark.parametrize(
    ("info", "model", "expected"),
    [
        (AudioFormatInfo("mp3", 44100, 1), PARAFORMER, None),
        (AudioFormatInfo("wav", 44100, 2, 16), PARAFORMER, None),
        (AudioFormatInfo("mp3", 44100, 1), REALTIME, 16000),
        (AudioFormatInfo("mp3", 8000, 1), REALTIME, 8000),
        (AudioFormatInfo("wav", 16000, 1, 16), REALTIME, 16000),
        (AudioFormatInfo("pcm", 16000, 1, 16), REALTIME, None),
        (AudioFormatInfo("pcm", 16000, 2, 16), REALTIME, 16000),
        (AudioFormatInfo("pcm", 16000, 2, 16), PARAFORMER, 16000),
        # "opus" is documented without saying Ogg or raw frames: decoded to PCM, never passed through
        (AudioFormatInfo("opus", 16000, 1), REALTIME, 16000),
        (AudioFormatInfo("opus", 48000, 1), REALTIME, 16000),
        (AudioFormatInfo("mp3", 16000, 1), PARAFORMER_8K, 8000),
        (AudioFormatInfo("wav", 8000, 1, 16), PARAFORMER_8K, None),
    ],
)
def test_plan(info: AudioFormatInfo, model: object, expected: int | None) -> None:
    assert plan(info, model.accepts) == expected  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ decoding


def test_mp3_at_44k_becomes_16k_mono_pcm_while_it_arrives() -> None:
    mp3 = make_mp3(44100, 44100 * 2)
    decoder = PcmDecoder(sniff(mp3[:4096]), 16000)
    assert decoder.streaming
    early = decoder.feed(mp3[: len(mp3) // 2])
    assert seconds(early, 16000) > 0.5, "half the MP3 gives PCM before the upload is complete"
    pcm = early + decoder.feed(mp3[len(mp3) // 2 :]) + decoder.finish()
    # LAME adds its encoder delay and padding (a few frames of 1152 samples).
    assert 2.0 <= seconds(pcm, 16000) < 2.2
    assert rms(pcm) > 1000


def test_wav_stereo_44k_becomes_16k_mono() -> None:
    data = wav(tone(44100, 1.5, channels=2), 44100, channels=2)
    pcm = decode(data, 16000)
    assert seconds(pcm, 16000) == pytest.approx(1.5, abs=0.01)
    assert 5000 < rms(pcm) < 7000  # a 9000-peak sine, both channels alike: RMS ~ 6364


def test_wav_24_bit() -> None:
    samples = tone(16000, 1.0)
    as24 = b"".join(b"\x00" + samples[i : i + 2] for i in range(0, len(samples), 2))
    pcm = decode(wav(as24, 16000, width=3), 8000, step=1001)
    assert seconds(pcm, 8000) == pytest.approx(1.0, abs=0.01)
    assert rms(pcm) > 5000


def test_declared_raw_pcm_at_48k() -> None:
    data = tone(48000, 1.0)
    pcm = decode(data, 16000, step=777, info=AudioFormatInfo("pcm", 48000, 1, 16))
    assert seconds(pcm, 16000) == pytest.approx(1.0, abs=0.01)


def test_ogg_opus_is_decoded_once_complete() -> None:
    data = av_encode("libopus", "ogg", 48000, 48000 * 2)
    decoder = PcmDecoder(sniff(data[:4096]), 16000)
    assert not decoder.streaming
    assert decoder.feed(data) == b""
    pcm = decoder.finish()
    assert seconds(pcm, 16000) == pytest.approx(2.0, abs=0.05)


async def test_container_decoding_runs_off_the_loop() -> None:
    data = av_encode("libopus", "ogg", 16000, 16000)
    decoder = PcmDecoder(sniff(data[:4096]), 16000)
    decoder.feed(data)
    assert seconds(await decoder.finish_async(), 16000) == pytest.approx(1.0, abs=0.05)


def test_a_broken_container_is_undecodable() -> None:
    data = av_encode("libopus", "ogg", 16000, 16000)
    decoder = PcmDecoder(sniff(data[:4096]), 16000)
    decoder.feed(data[:200])
    with pytest.raises(UndecodableAudio) as info:
        decoder.finish()
    assert info.value.code == "unsupported_audio_format"


def test_a_wav_without_data_chunk_is_undecodable() -> None:
    data = wav(tone(16000, 0.1), 16000)
    header_only = data[:36]
    decoder = PcmDecoder(sniff(data[:4096]), 8000)
    assert decoder.feed(header_only) == b""
    with pytest.raises(UndecodableAudio):
        decoder.finish()


@settings(max_examples=15, deadline=None)
@given(step=st.integers(min_value=1, max_value=9000))
def test_chunking_does_not_change_the_pcm(step: int) -> None:
    assert decode(_MP3, 16000, step=step) == _MP3_PCM
    assert decode(_WAV, 16000, step=step) == _WAV_PCM


_MP3 = make_mp3(22050, 22050)
_MP3_PCM = decode(_MP3, 16000, step=len(_MP3))
_WAV = wav(tone(44100, 0.5, channels=2), 44100, channels=2)
_WAV_PCM = decode(_WAV, 16000, step=len(_WAV))
