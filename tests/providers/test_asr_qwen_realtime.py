"""QwenRealtimeRecognizer (``qwen3-asr-flash-realtime``) against the simulator's realtime recognition socket:
manual commit, server VAD, refused sessions and models, the workspace header, faults."""

from __future__ import annotations

import asyncio

import pytest

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.base import RecognitionResult
from qwen_gateway.providers.dashscope.asr_qwen_realtime import (
    MAX_AUDIO_CHUNK,
    QwenRealtimeRecognitionSession,
    QwenRealtimeRecognizer,
    ServerVad,
)
from qwen_gateway.providers.dashscope.catalogue import asr_model
from qwen_gateway.providers.dashscope.factory import build_providers
from qwen_gateway.providers.dashscope.policy import Backoff, Timeouts
from qwen_gateway.simulator import Fault, Simulator
from qwen_gateway.simulator.audio import synthesize

from .conftest import FAST, KEY, make_settings

MODEL = "qwen3-asr-flash-realtime"
TEXT = "今天天气怎么样？我想出去走走。"
#: Speech-shaped 16 kHz PCM: voiced syllables with pauses (the simulator's VAD hears it as speech).
SPEECH = synthesize("今天天气怎么样？我想出去走走。", 16000)
SILENCE = bytes(16000 * 2)  # one second


def recognizer(sim: Simulator, **kwargs: object) -> QwenRealtimeRecognizer:
    return QwenRealtimeRecognizer(
        url=f"{sim.ws_base_url}/api-ws/v1/realtime",
        model=kwargs.pop("model", MODEL),  # type: ignore[arg-type]
        api_key=KEY,
        timeouts=Timeouts(connect=5, read=5, write=5, close=1),
        backoff=Backoff(retries=1, base=0.01, cap=0.02),
        **kwargs,  # type: ignore[arg-type]
    )


async def utterance(
    session: QwenRealtimeRecognitionSession, audio: bytes
) -> list[RecognitionResult]:
    results: list[RecognitionResult] = []

    async def read() -> None:
        async for result in session.results():
            results.append(result)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        for start in range(0, len(audio), 3200):
            await session.feed(audio[start : start + 3200])
        await session.finish()
    return results


async def test_manual_commit_gives_the_registered_transcript(sim: Simulator) -> None:
    sim.register_transcript(SPEECH, TEXT)
    async with recognizer(sim).session(format="pcm", sample_rate=16000) as session:
        results = await utterance(session, SPEECH)
    finals = [r for r in results if r.is_final]
    assert [r.text for r in finals] == [TEXT]
    partials = [r for r in results if not r.is_final]
    assert partials, "partials arrive while the audio does"
    assert all(TEXT.startswith(p.text) for p in partials)
    (record,) = sim.log.realtime_asr_sessions
    assert record.session["turn_detection"] is None
    assert record.session["input_audio_format"] == "pcm" and record.session["sample_rate"] == 16000
    assert bytes(record.audio) == SPEECH
    assert [(i.via, i.transcript) for i in record.items] == [("commit", TEXT)]
    assert record.events[0] == "session.update" and record.events[-2:] == [
        "input_audio_buffer.commit",
        "session.finish",
    ]
    assert record.finished
    await sim.wait_closed("realtime_asr")


async def test_appends_are_bounded_chunks(sim: Simulator) -> None:
    sim.configure(capture_frames=True)
    audio = SPEECH[: MAX_AUDIO_CHUNK * 2 + 100]
    async with recognizer(sim).session(format="pcm", sample_rate=16000) as session:
        await session.feed(audio)
        await session.finish()
        async for _ in session.results():
            pass
    (conn,) = sim.log.connections
    appends = [f for f in conn.frames_in if f["type"] == "input_audio_buffer.append"]
    assert len(appends) == 3


async def test_server_vad_cuts_sentences_at_silence(sim: Simulator) -> None:
    vad = ServerVad(threshold=0.0, silence_duration_ms=500)
    audio = SILENCE + SPEECH + SILENCE + SPEECH + SILENCE
    async with recognizer(sim, vad=vad).session(format="pcm", sample_rate=16000) as session:
        results = await utterance(session, audio)
    finals = [r for r in results if r.is_final]
    assert len(finals) == 2 and [r.sentence_id for r in finals] == [1, 2]
    (record,) = sim.log.realtime_asr_sessions
    assert record.session["turn_detection"]["silence_duration_ms"] == 500
    assert [i.via for i in record.items] == ["vad", "vad"]
    assert "input_audio_buffer.commit" not in record.events


async def test_a_refused_rate_fails_the_session_start(sim: Simulator) -> None:
    with pytest.raises(UpstreamError) as info:
        async with recognizer(sim).session(format="pcm", sample_rate=44100):
            pass
    assert "44100" in info.value.message
    assert not info.value.transient


async def test_a_model_not_served_on_the_socket_is_refused(sim: Simulator) -> None:
    with pytest.raises(UpstreamError) as info:
        async with recognizer(sim, model="paraformer-v2").session(format="pcm", sample_rate=16000):
            pass
    assert info.value.code == "model_not_found"
    (conn,) = [c for c in sim.log.connections if c.close_code == 1008]
    assert conn.close_reason == "rejected"


async def test_workspace_header(sim: Simulator) -> None:
    async with recognizer(sim, workspace="ws-123").session(format="pcm", sample_rate=16000) as s:
        await utterance(s, SPEECH[:32000])
    assert sim.log.connections[0].headers["x-dashscope-workspace"] == "ws-123"


async def test_a_drop_mid_recognition_is_an_upstream_error(sim: Simulator) -> None:
    sim.faults.add(Fault.drop(1, endpoint="realtime_asr"))
    with pytest.raises(ExceptionGroup) as info:
        async with recognizer(sim).session(format="pcm", sample_rate=16000) as session:
            await utterance(session, SPEECH)
    assert info.group_contains(UpstreamError)
    await sim.wait_closed("realtime_asr")


async def test_the_factory_builds_it_for_the_model(sim: Simulator) -> None:
    settings = make_settings(sim, asr_model=MODEL)
    providers = build_providers(settings, tuning=FAST)
    try:
        rec = providers.recognizer
        assert isinstance(rec, QwenRealtimeRecognizer) and rec.streaming
        assert rec.accepts("pcm", 16000) and rec.accepts("pcm", 8000)
        assert not rec.accepts("mp3", 16000) and not rec.accepts("pcm", 44100)
        sim.register_transcript(SPEECH, TEXT)
        async with rec.session(format="pcm", sample_rate=16000) as session:
            assert "".join(r.text for r in await utterance(session, SPEECH) if r.is_final) == TEXT
    finally:
        await providers.aclose()


def test_catalogue_answers_accepts_for_the_task_models() -> None:
    assert asr_model("paraformer-realtime-8k-v2").accepts("mp3", 8000)
    assert not asr_model("paraformer-realtime-8k-v2").accepts("mp3", 16000)


async def test_manual_mode_commits_long_audio_in_pieces(sim: Simulator) -> None:
    """DashScope takes at most 60 s per commit: 70 s of PCM go up as two items and both are recognised."""
    audio = bytes(16000 * 2 * 70)
    async with recognizer(sim).session(format="pcm", sample_rate=16000) as session:
        results = await utterance(session, audio)
    finals = [r for r in results if r.is_final]
    assert [r.sentence_id for r in finals] == [1, 2]
    (record,) = sim.log.realtime_asr_sessions
    assert [(i.via, i.audio_bytes) for i in record.items] == [
        ("commit", 16000 * 2 * 50),
        ("commit", 16000 * 2 * 20),
    ]
    assert not record.errors
