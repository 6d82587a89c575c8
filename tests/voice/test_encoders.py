"""The device encoders: every format decodes (PyAV) to the PCM's duration within one frame; raw Opus packets each
last exactly ``frame_ms``; the chunks' durations add up; the answer stage sends one event per chunk with ``seq``."""

from __future__ import annotations

import io
import math

import av
import numpy as np
import pytest

from protocol import AudioStreamData, OutputAudio
from qwen_gateway.voice.answer import DeviceAnswerEvents, SeedAnswerEvents
from qwen_gateway.voice.encoders import (
    OPUS_LOOKAHEAD_48K,
    AudioChunk,
    Mp3ChunkEncoder,
    OggOpusEncoder,
    OpusPacketEncoder,
    PcmEncoder,
    encoder_factory,
)


def tone(seconds: float, rate: int) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * 330 * t) * 9000).astype("<i2").tobytes()


def feed(encoder: object, pcm: bytes, piece: int = 4801) -> list[AudioChunk]:
    """Feed ``pcm`` in odd-sized pieces (TTS chunks do not respect frames or samples), then flush."""
    chunks: list[AudioChunk] = []
    for start in range(0, len(pcm), piece):
        chunks += encoder.encode_chunks(pcm[start : start + piece])  # type: ignore[attr-defined]
    chunks += encoder.flush_chunks()  # type: ignore[attr-defined]
    return chunks


def packet_ms(packet: bytes) -> float:
    """The duration of one raw Opus packet, decoded on its own (FFmpeg decodes Opus at 48 kHz)."""
    ctx = av.CodecContext.create("libopus", "r")
    ctx.layout = "mono"  # type: ignore[attr-defined]
    frames = ctx.decode(av.Packet(packet))  # type: ignore[attr-defined]
    return sum(f.samples * 1000 / f.sample_rate for f in frames)


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_raw_opus_packets_last_exactly_frame_ms(rate: int, frame_ms: int) -> None:
    pcm = tone(1.37, rate)
    encoder = OpusPacketEncoder(rate, out_rate=rate, frame_ms=frame_ms)
    chunks = feed(encoder, pcm)
    frame = rate * frame_ms // 1000
    assert chunks, "no packet"
    for chunk in chunks:
        assert packet_ms(chunk.data) == frame_ms
        assert chunk.duration_ms == frame_ms
    # The whole stream: the PCM plus libopus's lookahead, rounded up to a frame, no more.
    n = len(pcm) // 2
    lookahead = math.ceil(OPUS_LOOKAHEAD_48K * rate / 48000)
    assert len(chunks) == math.ceil((n + lookahead) / frame)
    decoded = len(chunks) * frame - lookahead
    assert n <= decoded < n + frame
    assert encoder.samples_in == n


@pytest.mark.parametrize("frame_ms", [20, 60])
def test_raw_opus_stream_decodes_in_one_decoder_to_the_duration(frame_ms: int) -> None:
    rate = 16000
    pcm = tone(2.0, rate)
    chunks = feed(OpusPacketEncoder(rate, out_rate=rate, frame_ms=frame_ms), pcm)
    ctx = av.CodecContext.create("libopus", "r")
    ctx.layout = "mono"  # type: ignore[attr-defined]
    seconds = 0.0
    for chunk in chunks:
        for f in ctx.decode(av.Packet(chunk.data)):  # type: ignore[attr-defined]
            seconds += f.samples / f.sample_rate
    # what a device plays: the PCM, the encoder's lookahead (6.5 ms), the last frame's padding
    assert 0 <= seconds - 0.0065 - len(pcm) / 2 / rate < frame_ms / 1000


def _ogg_samples(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data), format="ogg") as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        return samples, container.streams.audio[0].codec_context.sample_rate


@pytest.mark.parametrize("frame_ms", [20, 60])
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_ogg_opus_decodes_to_the_duration(rate: int, frame_ms: int) -> None:
    pcm = tone(1.37, rate)
    chunks = feed(OggOpusEncoder(rate, out_rate=rate, frame_ms=frame_ms), pcm)
    data = b"".join(c.data for c in chunks)
    assert data.startswith(b"OggS")
    assert len(chunks) > 3, "pages come out as they complete, not all at the end"
    samples, decoded_rate = _ogg_samples(data)  # Opus in Ogg decodes at 48 kHz
    seconds = len(pcm) / 2 / rate
    assert abs(samples / decoded_rate - seconds) < frame_ms / 1000
    assert abs(sum(c.duration_ms for c in chunks) - seconds * 1000) < frame_ms


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_pcm_is_the_pcm(rate: int) -> None:
    pcm = tone(0.9, rate)
    chunks = feed(PcmEncoder(rate, out_rate=rate), pcm)
    assert b"".join(c.data for c in chunks) == pcm
    assert sum(c.duration_ms for c in chunks) == pytest.approx(900, abs=0.1)


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_mp3_decodes_to_the_duration(rate: int) -> None:
    pcm = tone(1.3, rate)
    chunks = feed(Mp3ChunkEncoder(rate, out_rate=None, bitrate_kbps=64), pcm)
    data = b"".join(c.data for c in chunks)
    with av.open(io.BytesIO(data), format="mp3") as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    frame = 1152 if rate >= 32000 else 576
    # LAME's delay (576) and padding, without a Xing header to trim them (see voice/mp3.py): two frames at most
    assert 0 <= samples - len(pcm) // 2 <= 576 + 2 * frame
    assert sum(c.duration_ms for c in chunks) == pytest.approx(1300, abs=0.1)


def test_nothing_said_is_no_stream() -> None:
    for encoder in (
        OpusPacketEncoder(24000, out_rate=24000, frame_ms=60),
        OggOpusEncoder(24000, out_rate=24000, frame_ms=60),
        PcmEncoder(24000, out_rate=24000),
    ):
        assert encoder.flush_chunks() == []
        assert encoder.finished
        assert encoder.flush_chunks() == []


def test_encode_after_flush_is_an_error() -> None:
    encoder = OpusPacketEncoder(24000, out_rate=24000, frame_ms=20)
    encoder.flush_chunks()
    with pytest.raises(RuntimeError):
        encoder.encode_chunks(b"\x00\x00")


def test_the_bytes_face_joins_the_chunks() -> None:
    pcm = tone(0.5, 24000)
    a = PcmEncoder(24000, out_rate=24000)
    assert a.encode(pcm) + a.flush() == pcm


def test_factory_picks_the_format() -> None:
    new = encoder_factory(
        OutputAudio(format="opus", sample_rate=16000, frame_ms=40), mp3_bitrate_kbps=64
    )
    encoder = new(16000)
    assert isinstance(encoder, OpusPacketEncoder)
    assert (encoder.out_rate, encoder.frame_ms) == (16000, 40)
    mp3 = encoder_factory(OutputAudio(format="mp3"), mp3_bitrate_kbps=64)(24000)
    assert isinstance(mp3, Mp3ChunkEncoder) and mp3.out_rate == 24000


def test_device_events_describe_each_chunk_and_count() -> None:
    seed = SeedAnswerEvents(lambda d, s: None, turn_id=2)  # type: ignore[arg-type, return-value]
    events = DeviceAnswerEvents(
        seed, OutputAudio(format="opus", sample_rate=16000, frame_ms=60), 16000
    )
    first = events.audio_chunk(AudioChunk(b"\x01", 60.0))
    second = events.audio_chunk(AudioChunk(b"\x02", 60.0))
    assert isinstance(first, AudioStreamData) and isinstance(second, AudioStreamData)
    assert (first.seq, second.seq) == (1, 2)
    assert (first.format, first.sample_rate, first.frame_ms, first.duration_ms) == (
        "opus",
        16000,
        60,
        60.0,
    )
    assert first.turn_id == 2


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 16000), (24000, 48000), (22050, 8000)])
def test_resampled_formats_keep_the_duration(in_rate: int, out_rate: int) -> None:
    pcm = tone(1.1, in_rate)
    seconds = len(pcm) / 2 / in_rate
    chunks = feed(PcmEncoder(in_rate, out_rate=out_rate), pcm)
    out = b"".join(c.data for c in chunks)
    assert abs(len(out) / 2 / out_rate - seconds) < 2 / out_rate + 1e-9
    opus = feed(OpusPacketEncoder(in_rate, out_rate=out_rate, frame_ms=20), pcm)
    assert all(packet_ms(c.data) == 20 for c in opus)
    assert 0 <= len(opus) * 0.020 - 0.0065 - seconds < 0.020 + 1e-9
    ogg = b"".join(
        c.data for c in feed(OggOpusEncoder(in_rate, out_rate=out_rate, frame_ms=20), pcm)
    )
    samples, rate = _ogg_samples(ogg)
    assert abs(samples / rate - seconds) < 0.020
