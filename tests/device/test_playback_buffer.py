"""The device simulator's playback model (pure, on given times) and its helpers."""

from __future__ import annotations

import io
import wave

import pytest

from qwen_gateway.device_sim import PlaybackBuffer, main, read_wav, speech_end_ms


def test_real_time_delivery_within_the_buffer_is_clean() -> None:
    b = PlaybackBuffer(500)
    t = 0.0
    for _ in range(5):  # a 300 ms lead at once
        b.push(60, t)
    for _ in range(50):  # then a frame per frame
        t += 0.060
        b.push(60, t)
    b.finish(t)
    assert (b.overruns, b.underruns, b.gap_ms) == (0, 0, 0.0)
    assert b.max_level_ms == pytest.approx(300)


def test_a_burst_overruns_and_loses_the_excess() -> None:
    b = PlaybackBuffer(500)
    for _ in range(20):
        b.push(60, 1.0)
    assert b.overruns == 12  # 8 frames fit (480 ms), then each frame overflows
    assert b.dropped_ms == pytest.approx(20 * 60 - 500)
    assert b.level_ms == 500


def test_late_audio_is_an_underrun_with_its_gap() -> None:
    b = PlaybackBuffer(500)
    b.push(60, 0.0)
    b.push(60, 0.200)  # the first frame ran out at 60 ms: 140 ms of silence
    assert b.underruns == 1 and b.gap_ms == pytest.approx(140)
    b.push(60, 0.210)
    assert b.underruns == 1


def test_the_end_is_no_underrun() -> None:
    b = PlaybackBuffer(500)
    b.push(60, 0.0)
    b.finish(0.010)
    b.push(0, 5.0)
    assert b.underruns == 0


def _wav(samples: bytes, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return out.getvalue()


def test_wav_and_speech_end() -> None:
    loud = b"\x00\x20" * 1600  # 100 ms at 16 kHz of a loud level
    pcm, rate = read_wav(_wav(loud + bytes(3200)))
    assert rate == 16000
    assert speech_end_ms(pcm, rate) == pytest.approx(100)
    with pytest.raises(ValueError):
        read_wav(b"not a wav")


def test_cli_refuses_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--wav", "/nonexistent.wav"]) == 2
    assert "device-sim" in capsys.readouterr().err
