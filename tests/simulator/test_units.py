"""Pure parts of the simulator: audio clocks, synthesis, tokenizer, transcript timelines, fault specs."""

from __future__ import annotations

import io
import struct

import av
import lameenc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen_gateway.simulator import Fault, parse_fault
from qwen_gateway.simulator.audio import (
    duration_of,
    make_clock,
    sniff_format,
    speech_seconds,
    synthesize,
    wav_header,
)
from qwen_gateway.simulator.corpus import pick_reply, tokenize
from qwen_gateway.simulator.errors import find_family
from qwen_gateway.simulator.faults import FaultSet
from qwen_gateway.simulator.transcripts import TranscriptRegistry, plan_transcript

from .conftest import pcm_tone


def _mp3(pcm: bytes, rate: int) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(48)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(7)
    return bytes(encoder.encode(pcm)) + bytes(encoder.flush())


def _ogg_opus(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        pcm = pcm_tone(seconds, 48000)
        step = 960 * 2  # 20 ms frames
        for pts, start in enumerate(range(0, len(pcm), step)):
            piece = pcm[start : start + step]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(piece) // 2)
            frame.planes[0].update(piece)
            frame.sample_rate = 48000
            frame.pts = pts * 960
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_pcm_and_wav_clocks() -> None:
    pcm = pcm_tone(1.5)
    assert duration_of(pcm, "pcm", 16000) == pytest.approx(1.5)
    wav = wav_header(8000, len(pcm)) + pcm
    assert sniff_format(wav) == "wav"
    clock = make_clock("wav", 16000)
    for start in range(0, len(wav), 7):  # header split across feeds
        clock.feed(wav[start : start + 7])
    assert clock.seconds == pytest.approx(3.0)


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_mp3_clock_counts_frames(rate: int) -> None:
    mp3 = _mp3(pcm_tone(2.0, rate), rate)
    assert sniff_format(mp3) == "mp3"
    clock = make_clock("mp3", rate)
    for start in range(0, len(mp3), 333):
        clock.feed(mp3[start : start + 333])
    assert clock.seconds == pytest.approx(2.0, abs=0.1)
    tagged = b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\0" * 10 + mp3
    assert duration_of(tagged, "mp3") == pytest.approx(clock.seconds)


def test_ogg_opus_clock_uses_granules() -> None:
    ogg = _ogg_opus(1.2)
    assert sniff_format(ogg) == "opus"
    clock = make_clock("opus", 16000)
    for start in range(0, len(ogg), 100):
        clock.feed(ogg[start : start + 100])
    assert clock.seconds == pytest.approx(1.2, abs=0.03)


def test_amr_and_adts_clocks() -> None:
    amr = b"#!AMR\n" + (bytes([0x3C]) + bytes(31)) * 50  # 50 frames of mode 12.2k
    assert duration_of(amr, "amr") == pytest.approx(1.0)
    header = bytes(
        [0xFF, 0xF1, (8 << 2) | 0x40 >> 6, 0x80, 0x00, 0x1F, 0xFC]
    )  # 16 kHz, 7-byte frames
    size = 20
    frame = bytearray(header)
    frame[3] = (frame[3] & 0xFC) | ((size >> 11) & 3)
    frame[4] = (size >> 3) & 0xFF
    frame[5] = ((size & 7) << 5) | 0x1F
    adts = (bytes(frame) + bytes(size - 7)) * 16
    assert duration_of(adts, "aac") == pytest.approx(16 * 1024 / 16000)


def test_synthesis_length_follows_text() -> None:
    assert len(synthesize("你好世界", 24000)) == 4 * 6000 * 2
    assert len(synthesize("abcdefghijkl", 16000)) == pytest.approx(16000 * 2, abs=24)
    assert speech_seconds("你好，世界。") == pytest.approx(1.0 + 0.15 + 0.25)
    assert len(synthesize("你好", 24000, speed=2.0)) == 2 * 3000 * 2
    assert synthesize("**## ``` 🎉", 24000) == b""
    samples = struct.unpack("<6000h", synthesize("好", 24000))
    assert samples[0] == 0 and max(samples) > 5000


@given(st.text(max_size=200))
def test_tokenize_round_trips(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_tokens_look_like_llm_tokens() -> None:
    assert tokenize("你好 world, 1,000! 👨‍👩‍👧") == (
        "你",
        "好",
        " world",
        ",",
        " 1",
        ",",
        "000",
        "!",
        " ",
        "👨‍👩‍👧",
    )
    assert pick_reply("你好") == pick_reply("你好")
    assert pick_reply("你好") != pick_reply("hello")


def test_plan_transcript_words_and_sentences() -> None:
    sentences = plan_transcript("Hello world, 这里是实验室。第二句！", duration=None)
    assert [s.text for s in sentences] == ["Hello world, 这里是实验室。", "第二句！"]
    words = sentences[0].words
    assert (words[0].text, words[0].punctuation) == ("Hello ", "")
    assert (words[1].text, words[1].punctuation) == ("world", ", ")
    assert words[1].begin == pytest.approx(5 / 12)
    assert sentences[1].begin > sentences[0].end
    stretched = plan_transcript("你好。", duration=2.0)
    assert stretched[0].end == pytest.approx(2.0 * 0.5 / 0.75)
    assert plan_transcript("。。。") == ()


def test_registry_matches_by_prefix_then_exactly() -> None:
    registry = TranscriptRegistry()
    registry.register(b"abcdef", "one")
    registry.register(b"abcxyz", "two")
    matcher = registry.matcher()
    matcher.feed(b"abc")
    assert matcher.candidate is not None and matcher.exact is None
    matcher.feed(b"xyz")
    assert matcher.candidate is not None and matcher.candidate.text == "two"
    assert matcher.exact is matcher.candidate
    matcher.feed(b"!")
    assert matcher.candidate is None
    assert registry.lookup(b"abcdef") == "one" and registry.lookup(b"abc") is None


def test_fault_specs() -> None:
    assert parse_fault("http_error:status=429,code=limit_requests,times=2") == Fault.http_error(
        429, code="limit_requests", times=2
    )
    assert parse_fault("stall:after=3,seconds=forever,endpoint=tts") == Fault.stall(
        3, None, endpoint="tts"
    )
    assert parse_fault("drop:after_chunks=2,times=always").times is None
    assert parse_fault("task_failed:after=1,code=X,message=Y") == Fault.task_failed(
        "asr", after=1, code="X", message="Y"
    )
    assert parse_fault("bursty_audio:burst=3,pause=0.2").seconds == 0.2
    for bad in (
        "nope",
        "stall:wat=1",
        "http_error:status=200",
        "stall:endpoint=file_asr",
        "drop:after=x",
    ):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_fault_set_counts_uses() -> None:
    faults = FaultSet()
    faults.add(Fault.http_error(500, times=2), Fault.delay(1.0), Fault.http_error(503, times=None))
    kinds = frozenset({"http_error", "delay"})
    first = faults.take("chat", kinds, "c1")
    assert first["http_error"].status == 500 and "delay" in first
    assert faults.take("chat", kinds, "c2")["http_error"].status == 500
    for call in ("c3", "c4"):
        assert faults.take("chat", kinds, call) == {"http_error": Fault.http_error(503, times=None)}
    assert faults.take("tts", kinds, "c5") == {}
    assert [f.call for f in faults.fired] == ["c1", "c1", "c2", "c3", "c4"]
    with pytest.raises(TypeError):
        faults.add("http_error")  # type: ignore[arg-type]


def test_error_families() -> None:
    assert find_family(429).compat_code == "limit_requests"
    assert find_family(429, "Throttling.AllocationQuota").compat_code == "insufficient_quota"
    assert find_family(400, "insufficient_quota").native_code == "insufficient_quota"
    assert find_family(502).native_code == "InternalError"
