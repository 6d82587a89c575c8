"""voice/vad.py: speech start / stop on the simulator's synthetic speech, silence and noise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.simulator.audio import synthesize
from qwen_gateway.voice.convert import Resampler
from qwen_gateway.voice.vad import (
    FRAME_MS,
    HANGOVER_MS,
    SpeechDetector,
    SpeechStarted,
    SpeechStopped,
    VadSettings,
)

RATE = 16000
#: Six CJK syllables of the simulator's voice: 1.5 s of voiced buzz with no pause inside.
PHRASE = "你好今天天气"
THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(2 * rate * ms // 1000)


def speech(rate: int = RATE) -> bytes:
    return synthesize(PHRASE, rate)


def noise(ms: int, sd: float, seed: int, rate: int = RATE) -> bytes:
    x = np.random.default_rng(seed).normal(0, sd, rate * ms // 1000)
    return bytes(x.round().clip(-32768, 32767).astype("<i2").tobytes())


def mix(pcm: bytes, floor: bytes) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.int64) + np.frombuffer(floor, "<i2")
    return x.clip(-32768, 32767).astype("<i2").tobytes()


def ms_of(pcm: bytes, rate: int = RATE) -> int:
    return len(pcm) // 2 * 1000 // rate


def conversation(rate: int = RATE) -> tuple[bytes, list[tuple[int, int]]]:
    """1 s silence, speech, 1 s silence, speech, 1 s silence; and the true (start, end) ms of each speech."""
    s = speech(rate)
    n = ms_of(s, rate)
    audio = silence(1000, rate) + s + silence(1000, rate) + s + silence(1000, rate)
    return audio, [(1000, 1000 + n), (2000 + n, 2000 + 2 * n)]


def speech_ms(events: list[SpeechStarted | SpeechStopped], end_ms: int) -> int:
    total, start = 0, None
    for e in events:
        if isinstance(e, SpeechStarted):
            start = e.audio_start_ms
        else:
            assert start is not None
            total += e.audio_end_ms - start
            start = None
    return total + (end_ms - start if start is not None else 0)


def check_conversation(
    events: list[SpeechStarted | SpeechStopped], truth: list[tuple[int, int]], slack: int = 0
) -> None:
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * len(truth)
    for (start, end), (began, ended) in zip(
        truth, zip(events[::2], events[1::2], strict=True), strict=True
    ):
        assert isinstance(began, SpeechStarted) and isinstance(ended, SpeechStopped)
        assert abs(began.audio_start_ms - start) <= FRAME_MS + slack
        assert end - FRAME_MS - slack <= ended.audio_end_ms <= end + FRAME_MS + HANGOVER_MS + slack


# ------------------------------------------------------------------ detection


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.6])
def test_speech_silence_speech_gives_start_stop_start_stop(threshold: float) -> None:
    audio, truth = conversation()
    detector = SpeechDetector(VadSettings(threshold=threshold))
    check_conversation(detector.feed(audio), truth)
    assert not detector.speaking
    assert detector.position_ms == ms_of(audio)


@pytest.mark.parametrize("threshold", [0.7, 0.9, 1.0])
def test_high_thresholds_start_later_but_still_find_both_turns(threshold: float) -> None:
    """WebRTC's most aggressive mode hears the buzz's first syllable only in part: a start up to 1 syllable late."""
    audio, truth = conversation()
    events = SpeechDetector(VadSettings(threshold=threshold)).feed(audio)
    check_conversation(events, truth, slack=250)


def test_speech_over_a_low_noise_floor() -> None:
    """A -60 dBFS noise floor (a quiet room through a microphone) changes nothing."""
    audio, truth = conversation()
    events = SpeechDetector(VadSettings()).feed(mix(audio, noise(ms_of(audio), 30, seed=4)))
    check_conversation(events, truth)


def test_client_rate_24k_is_resampled_for_the_vad() -> None:
    audio, truth = conversation(24000)
    detector = SpeechDetector(VadSettings(), sample_rate=24000)
    check_conversation(detector.feed(audio), truth)
    assert detector.position_ms == ms_of(audio, 24000)


@pytest.mark.parametrize("rate", [8000, 32000, 48000, 22050])
def test_other_rates(rate: int) -> None:
    audio, truth = conversation(rate)
    check_conversation(SpeechDetector(VadSettings(), sample_rate=rate).feed(audio), truth)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_silence_is_silent(threshold: float) -> None:
    detector = SpeechDetector(VadSettings(threshold=threshold))
    assert detector.feed(silence(5000)) == []
    assert not detector.speaking


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("sd", [1, 3, 10, 30, 100, 300])
def test_low_noise_is_silent_including_the_vad_warm_up(threshold: float, sd: float) -> None:
    """White noise up to -40 dBFS, at the start of a stream and after digital silence (where WebRTC's
    noise model starts afresh and calls the first 4-7 frames speech)."""
    for seed in range(3):
        audio = noise(2000, sd, seed) + silence(500) + noise(2000, sd, seed + 10)
        assert SpeechDetector(VadSettings(threshold=threshold)).feed(audio) == []


def test_a_click_does_not_start_speech() -> None:
    click = (np.hanning(160) * 20000).astype("<i2").tobytes()  # 10 ms burst
    audio = silence(500) + click + silence(500) + click + click + silence(500)
    for threshold in THRESHOLDS:
        assert SpeechDetector(VadSettings(threshold=threshold)).feed(audio) == []


# ------------------------------------------------------------------ chunking


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 10**6), max_size=30), rate=st.sampled_from([16000, 24000, 8000])
)
def test_any_chunking_gives_the_same_events(cuts: list[int], rate: int) -> None:
    audio, _ = conversation(rate)
    whole = SpeechDetector(VadSettings(), sample_rate=rate).feed(audio)
    detector = SpeechDetector(VadSettings(), sample_rate=rate)
    edges = [0, *sorted(c % (len(audio) + 1) for c in cuts), len(audio)]
    events = [e for a, b in itertools.pairwise(edges) for e in detector.feed(audio[a:b])]
    assert events == whole
    assert len(whole) == 4
    assert detector.position_ms == ms_of(audio, rate)


def test_position_counts_whole_samples_fed() -> None:
    detector = SpeechDetector(VadSettings())
    detector.feed(b"\x00" * 31)  # 15.5 samples
    assert detector.position_ms == 15 * 1000 // RATE
    detector.feed(b"\x00" * 32001)
    assert detector.position_ms == 1001


# ------------------------------------------------------------------ silence_duration_ms


@pytest.mark.parametrize("silence_ms", [0, 20, 100, 200, 500, 810, 1500])
def test_stop_comes_after_silence_duration_ms(silence_ms: int) -> None:
    """Fed 20 ms at a time, speech_stopped comes out exactly silence_duration_ms (whole frames, at least
    one) after audio_end_ms, and not before."""
    audio = silence(500) + speech() + silence(2000)
    detector = SpeechDetector(VadSettings(silence_duration_ms=silence_ms))
    step = 2 * RATE * FRAME_MS // 1000
    stopped_at: list[tuple[int, SpeechStopped]] = []
    for i in range(0, len(audio), step):
        stopped_at += [
            (detector.position_ms, e)
            for e in detector.feed(audio[i : i + step])
            if isinstance(e, SpeechStopped)
        ]
    assert len(stopped_at) == 1
    position, event = stopped_at[0]
    assert position - event.audio_end_ms == max(1, math.ceil(silence_ms / FRAME_MS)) * FRAME_MS


@pytest.mark.parametrize(
    ("gap_ms", "silence_ms", "turns"),
    [(300, 500, 1), (700, 500, 2), (300, 200, 2), (1000, 1200, 1)],
)
def test_a_pause_shorter_than_silence_duration_does_not_end_speech(
    gap_ms: int, silence_ms: int, turns: int
) -> None:
    audio = silence(500) + speech() + silence(gap_ms) + speech() + silence(2000)
    events = SpeechDetector(VadSettings(silence_duration_ms=silence_ms)).feed(audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * turns


# ------------------------------------------------------------------ threshold


@settings(max_examples=20, deadline=None)
@given(
    sd=st.sampled_from([300, 800, 1000, 1200, 1500, 2000, 4000]),
    seed=st.integers(0, 2**16),
    pair=st.lists(st.sampled_from(THRESHOLDS), min_size=2, max_size=2, unique=True).map(sorted),
)
def test_a_higher_threshold_never_detects_more_speech_in_noise(
    sd: float, seed: int, pair: list[float]
) -> None:
    audio = noise(3000, sd, seed)
    low, high = (SpeechDetector(VadSettings(threshold=t, silence_duration_ms=200)) for t in pair)
    assert speech_ms(high.feed(audio), 3000) <= speech_ms(low.feed(audio), 3000)


def test_loud_noise_is_heard_by_low_thresholds_only() -> None:
    """-30 dBFS white noise: the permissive end of the range calls it speech, the strict end does not (so the
    table above is not trivially monotone)."""
    audio = noise(3000, 1000, seed=0)
    heard = [
        speech_ms(SpeechDetector(VadSettings(threshold=t)).feed(audio), 3000) for t in THRESHOLDS
    ]
    assert heard[0] > 0
    assert heard[-1] == 0


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": -0.1},
        {"threshold": 1.5},
        {"threshold": math.nan},
        {"prefix_padding_ms": -1},
        {"silence_duration_ms": -5},
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadSettings(**kwargs)  # type: ignore[arg-type]


def test_resampler_used_for_24k_keeps_speech_where_it_was() -> None:
    """The VAD's positions are in input ms even when it classifies a resampled copy."""
    pcm24 = silence(700, 24000) + speech(24000)
    r = Resampler(24000, 16000)
    pcm16 = r.process(pcm24) + r.flush()
    a = SpeechDetector(VadSettings(), 24000).feed(pcm24)
    b = SpeechDetector(VadSettings(), 16000).feed(pcm16)
    assert [type(e) for e in a] == [SpeechStarted] and a == b


@pytest.mark.parametrize("rate", [0, -16000, 10**7])
def test_bad_sample_rates_are_value_errors(rate: int) -> None:
    with pytest.raises(ValueError):
        SpeechDetector(VadSettings(), sample_rate=rate)


@pytest.mark.parametrize("gap_sd", [0, 1, 3, 8])
def test_room_noise_after_a_mute_is_not_speech(gap_sd: float) -> None:
    """A client's mute sends (near-)digital silence; when the room's -40 dBFS noise comes back, WebRTC alone
    calls it speech for seconds. Frames under SILENCE_RMS are kept from it, so nothing is detected."""
    audio = noise(1000, 300, seed=1) + noise(300, gap_sd, seed=2) + noise(4000, 300, seed=3)
    for threshold in THRESHOLDS:
        assert SpeechDetector(VadSettings(threshold=threshold)).feed(audio) == []
