"""``AnswerSpeaker`` keeps the MP3 it sends (``keep_audio``), within ``keep_audio_limit``: driven against the
DashScope simulator through the real providers, its events collected in a list."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocol import AudioStreamData, AudioStreamFinished, ChatChunk, Event
from qwen_gateway.config import Settings, load_settings
from qwen_gateway.providers.dashscope import Providers, build_providers
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.voice.answer import MAX_KEPT_AUDIO, AnswerSpeaker, AnswerTuning, SeedAnswerEvents

from ..voice_ws.conftest import decoded_samples

KEY = "sk-answer-keep"
ANSWER = "".join(f"这是第{i}句回答，用来测试保存语音。" for i in range(1, 9))
TURN = 7


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY), host="127.0.0.1", port=0) as simulator:
        simulator.set_reply(ANSWER)
        yield simulator


@pytest.fixture
def settings(sim: Simulator) -> Settings:
    return load_settings(sim.env, dotenv=None, qwen_api_key=KEY, read_timeout=10.0)


@pytest.fixture
async def providers(settings: Settings) -> AsyncIterator[Providers]:
    built = build_providers(settings)
    try:
        yield built
    finally:
        await built.aclose()


async def _speak(
    settings: Settings, providers: Providers, **keep: Any
) -> tuple[AnswerSpeaker, list[Event]]:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    speaker = AnswerSpeaker(
        chat=providers.chat,
        synthesizer=providers.synthesizer,
        emit=emit,
        events=SeedAnswerEvents(
            lambda chunk, full: ChatChunk(chunk=chunk, full_response=full, turn_id=TURN), TURN
        ),
        turn_id=TURN,
        tuning=AnswerTuning(read_timeout=10.0),
        clock=time.monotonic,
        **keep,
    )
    body = {
        "model": settings.chat_model,
        "messages": [{"role": "user", "content": "说几句话"}],
        "stream": True,
    }
    result = await speaker.run(body)
    assert result.spoken and result.text == ANSWER
    assert isinstance(events[-1], AudioStreamFinished)
    return speaker, events


def _sent(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, AudioStreamData))


def _cap_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "spoken answer too long to keep"]


async def test_keeps_exactly_the_audio_sent(settings: Settings, providers: Providers) -> None:
    speaker, events = await _speak(settings, providers, keep_audio=True)
    sent = _sent(events)
    assert len([e for e in events if isinstance(e, AudioStreamData)]) > 1
    assert speaker.spoken_audio == sent and len(sent) == speaker.result.audio_bytes
    samples, rate = decoded_samples(speaker.spoken_audio)
    assert rate == providers.synthesizer.sample_rate
    assert samples >= speaker.result.pcm_samples  # the flush's last frames are in it
    assert len(sent) < MAX_KEPT_AUDIO


async def test_keeps_nothing_unless_asked(settings: Settings, providers: Providers) -> None:
    speaker, events = await _speak(settings, providers)
    assert _sent(events) and speaker.spoken_audio == b""


async def test_an_answer_over_the_limit_is_not_kept_at_all(
    settings: Settings, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qwen_gateway.voice.answer")
    whole, events = await _speak(settings, providers, keep_audio=True)
    size = len(_sent(events))
    assert whole.spoken_audio and not _cap_logs(caplog)

    # Exactly at the limit: kept.
    at_limit, events = await _speak(settings, providers, keep_audio=True, keep_audio_limit=size)
    assert at_limit.spoken_audio == _sent(events) and len(at_limit.spoken_audio) == size
    assert not _cap_logs(caplog)

    # One byte over: nothing (not a truncated file), everything still sent, one log line without audio.
    over, events = await _speak(settings, providers, keep_audio=True, keep_audio_limit=size - 1)
    assert over.spoken_audio == b""
    assert len(_sent(events)) == size
    (record,) = _cap_logs(caplog)
    assert record.levelno == logging.INFO
    assert record.fields == {"turn_id": TURN, "limit": size - 1}  # type: ignore[attr-defined]

    # A small limit, passed early in the answer: still one log line for the whole answer.
    caplog.clear()
    small, events = await _speak(settings, providers, keep_audio=True, keep_audio_limit=1024)
    assert small.spoken_audio == b"" and len(_sent(events)) == size
    assert len(_cap_logs(caplog)) == 1
