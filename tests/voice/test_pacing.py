"""Paced delivery (``PacedEmit``) on a fake clock: audio events leave at playback speed at most the lead ahead,
``finished`` at the last frame's playback time minus the lead, other events at once, and a cancellation (barge-in)
ends the wait at once. No real sleeping: the fake sleep moves the fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protocol import AudioStreamData, AudioStreamFinished, TtsStarted
from qwen_gateway.voice.pacing import PacedEmit


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def audio(seq: int, ms: float = 60.0) -> AudioStreamData:
    return AudioStreamData(data=b"x", format="opus", seq=seq, duration_ms=ms, frame_ms=60)


async def run_paced(
    lead_ms: int, frames: int, ms: float = 60.0
) -> tuple[FakeTime, list[tuple[float, Any]]]:
    t = FakeTime()
    sent: list[tuple[float, Any]] = []

    async def emit(event: Any) -> None:
        sent.append((t.now, event))

    paced = PacedEmit(emit, lead_ms, clock=t.clock, sleep=t.sleep)
    await paced(TtsStarted(message="m"))
    for i in range(1, frames + 1):
        await paced(audio(i, ms))
    await paced(AudioStreamFinished())
    return t, sent


async def test_audio_never_runs_more_than_lead_plus_a_frame_ahead() -> None:
    _, sent = await run_paced(300, 50)
    audio_times = [(at, e) for at, e in sent if isinstance(e, AudioStreamData)]
    start = audio_times[0][0]
    total = 0.0
    for at, event in audio_times:
        total += event.duration_ms
        ahead = total - (at - start) * 1000
        assert ahead <= 300 + 60 + 1e-6
    # and it is real time, not slower: the n-th frame leaves once n*60 - 300 ms were played
    assert audio_times[-1][0] - start == pytest.approx((49 * 60 - 300) / 1000)
    # the lead's worth goes at once
    assert [at for at, _ in audio_times[:6]] == [start] * 6


async def test_finished_waits_for_the_last_frame_minus_the_lead() -> None:
    _, sent = await run_paced(300, 50)
    start = next(at for at, e in sent if isinstance(e, AudioStreamData))
    finished_at = sent[-1][0]
    assert isinstance(sent[-1][1], AudioStreamFinished)
    assert finished_at - start == pytest.approx((50 * 60 - 300) / 1000)


async def test_a_short_answer_goes_at_once() -> None:
    t, sent = await run_paced(300, 4)
    assert t.sleeps == []
    assert len({at for at, _ in sent}) == 1


async def test_other_events_are_not_paced() -> None:
    t = FakeTime()
    sent: list[Any] = []

    async def emit(event: Any) -> None:
        sent.append(event)

    paced = PacedEmit(emit, 0, clock=t.clock, sleep=t.sleep)
    await paced(audio(1))
    await paced(TtsStarted(message="m"))
    assert t.sleeps == []  # a text event never waits for the audio
    # audio without a duration (a seed client's MP3) passes as it is
    await paced(AudioStreamData(data=b"y"))
    assert t.sleeps == [] and len(sent) == 3


async def test_cancelling_stops_the_pacing_at_once() -> None:
    t = FakeTime()
    sent: list[Any] = []
    waiting = asyncio.Event()

    async def emit(event: Any) -> None:
        sent.append(event)

    async def stuck_sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # the fake clock never gets there

    paced = PacedEmit(emit, 100, clock=t.clock, sleep=stuck_sleep)

    async def answer() -> None:
        for i in range(1, 20):
            await paced(audio(i))

    task = asyncio.create_task(answer())
    await waiting.wait()
    assert len(sent) == 2  # 100 ms of lead: two 60 ms frames went, the third waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sent) == 2


async def test_the_playback_clock_starts_when_the_first_audio_is_on_the_wire() -> None:
    t = FakeTime()
    sent: list[float] = []

    async def emit(event: Any) -> None:
        sent.append(t.now)

    async def flushed() -> None:
        t.now += 0.040  # queued behind other events for 40 ms

    paced = PacedEmit(emit, 60, clock=t.clock, sleep=t.sleep, flushed=flushed)
    for i in range(1, 4):
        await paced(audio(i))
    # frame 2 goes at once (60 ms lead), frame 3 once frame 1 played: 60 ms after it reached the wire
    assert sent[2] == pytest.approx(100.0 + 0.040 + 0.060)
