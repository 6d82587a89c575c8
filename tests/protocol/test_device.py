"""The device options of the handshake and the pacing rule (pure)."""

from __future__ import annotations

import pytest

from protocol import (
    DEFAULT_LEAD_MS,
    DeviceOptions,
    HandshakeError,
    OutputAudio,
    PlaybackSchedule,
    device_options,
)


def test_no_option_is_the_seed() -> None:
    assert device_options({}) == DeviceOptions()
    assert device_options({"token": "x", "format": "pcm;rate=16000"}) == DeviceOptions()


@pytest.mark.parametrize(
    ("args", "output"),
    [
        ({"audio_format": "opus"}, OutputAudio(format="opus", sample_rate=24000, frame_ms=60)),
        (
            {"audio_format": "opus", "sample_rate": "16000", "frame_ms": "20"},
            OutputAudio(format="opus", sample_rate=16000, frame_ms=20),
        ),
        (
            {"audio_format": "ogg_opus", "frame_ms": "40", "sample_rate": "48000"},
            OutputAudio(format="ogg_opus", sample_rate=48000, frame_ms=40),
        ),
        (
            {"audio_format": "pcm", "sample_rate": "8000"},
            OutputAudio(format="pcm", sample_rate=8000),
        ),
        ({"audio_format": "mp3"}, OutputAudio(format="mp3")),
        (
            {"audio_format": "mp3", "sample_rate": "16000"},
            OutputAudio(format="mp3", sample_rate=16000),
        ),
    ],
)
def test_output_formats(args: dict[str, str], output: OutputAudio) -> None:
    assert device_options(args).output == output


@pytest.mark.parametrize(
    ("args", "param"),
    [
        ({"audio_format": "aac"}, "audio_format"),
        ({"audio_format": "OPUS"}, "audio_format"),
        ({"audio_format": "opus", "sample_rate": "44100"}, "sample_rate"),
        ({"audio_format": "pcm", "sample_rate": "abc"}, "sample_rate"),
        ({"audio_format": "pcm", "sample_rate": "-16000"}, "sample_rate"),
        ({"audio_format": "opus", "frame_ms": "10"}, "frame_ms"),
        ({"audio_format": "opus", "frame_ms": "60.0"}, "frame_ms"),
        ({"audio_format": "pcm", "frame_ms": "20"}, "frame_ms"),
        ({"sample_rate": "16000"}, "audio_format"),
        ({"pace": "fast"}, "pace"),
        ({"pace": "99999"}, "pace"),
        ({"pace": "-1"}, "pace"),
        ({"mode": "continuous"}, "mode"),
        ({"mode": "stream", "silence_ms": "50"}, "silence_ms"),
        ({"mode": "stream", "silence_ms": "１２"}, "silence_ms"),
    ],
)
def test_bad_values_name_their_parameter(args: dict[str, str], param: str) -> None:
    with pytest.raises(HandshakeError) as info:
        device_options(args)
    assert info.value.param == param
    assert info.value.message


def test_pace() -> None:
    assert (
        device_options({"pace": "realtime", "audio_format": "opus"}).pace_lead_ms == DEFAULT_LEAD_MS
    )
    assert device_options({"pace": "120", "audio_format": "pcm"}).pace_lead_ms == 120
    assert device_options({"pace": "off"}).pace_lead_ms is None
    # pacing needs each event's duration: pace alone sends the seed's MP3 with the format fields
    alone = device_options({"pace": "realtime"})
    assert alone.output == OutputAudio(format="mp3")


def test_stream_mode() -> None:
    options = device_options({"mode": "stream", "silence_ms": "500"})
    assert options.stream and options.silence_ms == 500
    assert not device_options({"mode": "packets"}).stream


class TestPlaybackSchedule:
    def test_the_lead_goes_at_once_then_one_frame_per_frame(self) -> None:
        s = PlaybackSchedule(300)
        now = 10.0
        assert s.audio_due(now) == now  # nothing sent: at once
        sent = []
        for _ in range(20):
            now = max(now, s.audio_due(now))
            s.sent(60, now)
            sent.append(round(now - 10.0, 3))
            # the audio sent is never more than lead + one frame ahead of playback
            assert s.sent_ms - (now - 10.0) * 1000 <= 300 + 60 + 1e-6
        # 300 ms of lead: the first six frames (0..300 ms of audio sent before each) leave at once
        assert sent[:6] == [0.0] * 6
        assert sent[6:9] == [0.06, 0.12, 0.18]

    def test_the_end_leaves_at_the_last_frames_playback_minus_the_lead(self) -> None:
        s = PlaybackSchedule(300)
        s.sent(60, 5.0)
        for _ in range(9):
            s.sent(60, 5.0)
        assert s.end_due(5.0) == pytest.approx(5.0 + (600 - 300) / 1000)
        short = PlaybackSchedule(300)
        short.sent(100, 1.0)
        assert short.end_due(1.0) == 1.0  # less audio than the lead: the end goes at once

    def test_zero_lead_is_strict_real_time(self) -> None:
        s = PlaybackSchedule(0)
        s.sent(20, 0.0)
        assert s.audio_due(0.0) == pytest.approx(0.02)

    def test_negative_lead(self) -> None:
        with pytest.raises(ValueError):
            PlaybackSchedule(-1)
