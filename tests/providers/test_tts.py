"""Qwen-TTS realtime and CosyVoice synthesisers against the simulator: PCM as it is produced, several segments
per connection, every fault, cancellation mid-answer closing the upstream socket."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from qwen_gateway.errors import UpstreamError, UpstreamTimeout
from qwen_gateway.providers.base import PcmChunk, SynthesisSession, Synthesizer
from qwen_gateway.providers.dashscope import Providers, QwenRealtimeSynthesizer, build_providers
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import FAST, KEY, cancel_after, client_tasks, make_settings

SEGMENTS = ["你好，我是通义千问。", "今天天气很好。", "再见！"]


@pytest.fixture(params=["qwen-tts-realtime", "cosyvoice-v2"])
async def engine(request: pytest.FixtureRequest, sim: Simulator) -> Any:
    """Providers whose synthesiser is each engine in turn (chosen by model name)."""
    providers = build_providers(make_settings(sim, tts_model=request.param), tuning=FAST)
    try:
        yield providers
    finally:
        await providers.aclose()


def kind(providers: Providers) -> str:
    """The simulator connection kind the synthesiser uses."""
    return "tts" if isinstance(providers.synthesizer, QwenRealtimeSynthesizer) else "tts_cosyvoice"


def upstream_audio_bytes(sim: Simulator, providers: Providers) -> int:
    if kind(providers) == "tts":
        return sum(r.audio_bytes for r in sim.log.tts_sessions[-1].responses)
    return sim.log.cosyvoice_sessions[-1].audio_bytes


async def speak(session: SynthesisSession, segments: list[str]) -> list[PcmChunk]:
    """Send ``segments`` while reading audio concurrently, then finish; every chunk."""
    chunks: list[PcmChunk] = []

    async def read() -> None:
        async for chunk in session.audio():
            chunks.append(chunk)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        for text in segments:
            await session.send_text(text)
        await session.finish()
    return chunks


# --- happy paths -------------------------------------------------------------------------------------------
async def test_segments_are_spoken_on_one_connection(sim: Simulator, engine: Providers) -> None:
    synth: Synthesizer = engine.synthesizer
    async with synth.session() as session:
        chunks = await speak(session, SEGMENTS)
    assert chunks and all(c.sample_rate == synth.sample_rate == 24000 for c in chunks)
    assert sum(len(c.pcm) for c in chunks) == upstream_audio_bytes(sim, engine)
    assert all(len(c.pcm) % 2 == 0 for c in chunks)
    await sim.wait_closed(kind(engine))
    if kind(engine) == "tts":
        record = sim.log.tts_sessions[-1]
        assert record.text_segments == SEGMENTS and record.commits == 3
        assert record.session["mode"] == "commit" and record.session["voice"] == "Cherry"
        assert record.session["sample_rate"] == 24000 and record.finished
        assert record.connection.headers["authorization"] == f"Bearer {KEY}"
    else:
        cosy = sim.log.cosyvoice_sessions[-1]
        assert cosy.texts == SEGMENTS and cosy.finished
        assert cosy.params["voice"] == "longxiaochun_v2"  # a Qwen voice name is replaced
        assert (cosy.params["format"], cosy.params["sample_rate"]) == ("pcm", 24000)
    assert len(sim.log.connections) == 1
    assert client_tasks() == []


async def test_audio_arrives_before_finish(sim: Simulator, engine: Providers) -> None:
    async with engine.synthesizer.session() as session:
        await session.send_text(SEGMENTS[0])
        audio = session.audio()
        async with asyncio.timeout(10):  # a guard against hanging, not a timing assertion
            first = await anext(audio)
        assert first.pcm
        await session.send_text(SEGMENTS[1])
        await session.finish()
        rest = [c async for c in audio]
    total = len(first.pcm) + sum(len(c.pcm) for c in rest)
    assert total == upstream_audio_bytes(sim, engine)


async def test_whitespace_is_not_sent_and_voice_override_is(
    sim: Simulator, engine: Providers
) -> None:
    voice = "Ethan" if kind(engine) == "tts" else "longanyang_v2"
    async with engine.synthesizer.session(voice=voice) as session:
        chunks = await speak(session, ["  ", SEGMENTS[0], "\n"])
    assert chunks
    if kind(engine) == "tts":
        record = sim.log.tts_sessions[-1]
        assert record.text_segments == [SEGMENTS[0]] and record.session["voice"] == voice
    else:
        cosy = sim.log.cosyvoice_sessions[-1]
        assert cosy.texts == [SEGMENTS[0]] and cosy.params["voice"] == voice


async def test_a_slow_consumer_loses_no_audio(sim: Simulator) -> None:
    """With a 2-chunk buffer the upstream is read only as fast as the consumer reads."""
    providers = build_providers(make_settings(sim), tuning=replace(FAST, tts_queue_chunks=2))
    try:
        async with providers.synthesizer.session() as session:
            for text in SEGMENTS:
                await session.send_text(text)
            await session.finish()
            await sim.log.wait_for(lambda: sim.log.tts_sessions[-1].finished, timeout=10)
            chunks = [c async for c in session.audio()]
    finally:
        await providers.aclose()
    assert sum(len(c.pcm) for c in chunks) == upstream_audio_bytes(sim, providers)


# --- faults ------------------------------------------------------------------------------------------------
async def test_a_bad_key_is_refused(sim: Simulator, engine: Providers) -> None:
    with pytest.raises(UpstreamError) as info:
        async with engine.synthesizer.session(api_key="sk-wrong"):
            pass
    assert (info.value.status, info.value.code, info.value.transient) == (
        401,
        "invalid_api_key",
        False,
    )
    assert len(sim.log.connections) == 1


async def test_transient_handshake_failures_are_retried(sim: Simulator, engine: Providers) -> None:
    endpoint = "tts" if kind(engine) == "tts" else "inference"
    sim.faults.add(Fault.http_error(503, endpoint=endpoint, times=2))
    async with engine.synthesizer.session() as session:
        chunks = await speak(session, SEGMENTS[:1])
    assert chunks
    assert [c.close_reason for c in sim.log.connections][:2] == ["rejected", "rejected"]
    assert len(sim.log.connections) == 3


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.drop(2, endpoint="tts"), "upstream_closed"),
        (Fault.malformed("tts", after=1), "upstream_bad_response"),
        (
            Fault.ws_error("tts", after=2, code="internal_error", message="Internal."),
            "internal_error",
        ),
        (
            Fault.ws_error("tts", after=1, code="internal_error", message="x", close=True),
            "internal_error",
        ),
    ],
)
async def test_qwen_stream_faults_surface_typed(
    sim: Simulator, providers: Providers, fault: Fault, code: str
) -> None:
    sim.faults.add(fault)
    async with providers.synthesizer.session() as session:
        with pytest.raises(ExceptionGroup) as info:
            await speak(session, SEGMENTS)
        errors = [e for e in info.value.exceptions if isinstance(e, UpstreamError)]
        assert errors and {e.code for e in errors} == {code}
        with pytest.raises(UpstreamError):
            await session.send_text("还有吗？")
    await sim.wait_closed("tts")
    assert len(sim.log.connections) == 1  # nothing is retried once the session is running
    assert client_tasks() == []


async def test_qwen_session_error_event_is_typed(sim: Simulator) -> None:
    # qwen-tts-realtime offers 24 kHz only: the upstream answers session.update with an error event
    # (the settings refuse that rate at start; built past them to see what the upstream says)
    providers = build_providers(replace(make_settings(sim), tts_sample_rate=16000), tuning=FAST)
    try:
        with pytest.raises((UpstreamError, ExceptionGroup)) as info:
            async with providers.synthesizer.session() as session:
                await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    error = info.value
    if isinstance(error, ExceptionGroup):
        error = next(e for e in error.exceptions if isinstance(e, UpstreamError))
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code, error.param) == (400, "invalid_value", "session.sample_rate")


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.drop(2, endpoint="tts_cosyvoice"), "upstream_closed"),
        (Fault.malformed("tts_cosyvoice", after=1), "upstream_bad_response"),
        (Fault.task_failed("tts_cosyvoice", after=2, code="InternalError"), "internal_error"),
    ],
)
async def test_cosyvoice_stream_faults_surface_typed(
    sim: Simulator, fault: Fault, code: str
) -> None:
    sim.faults.add(fault)
    providers = build_providers(make_settings(sim, tts_model="cosyvoice-v2"), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            with pytest.raises(ExceptionGroup) as info:
                await speak(session, SEGMENTS)
            errors = [e for e in info.value.exceptions if isinstance(e, UpstreamError)]
            assert errors and {e.code for e in errors} == {code}
    finally:
        await providers.aclose()
    await sim.wait_closed("inference")
    assert client_tasks() == []


async def test_cosyvoice_bad_voice_fails_the_start(sim: Simulator) -> None:
    providers = build_providers(
        make_settings(sim, tts_model="cosyvoice-v2", tts_voice="longwan"), tuning=FAST
    )
    try:
        with pytest.raises(UpstreamError) as info:
            async with providers.synthesizer.session() as session:
                await session.send_text(SEGMENTS[0])  # the task starts with the first text
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (400, "invalid_parameter_error")
    assert "418" in info.value.message
    assert len(sim.log.connections) == 1


async def test_upstream_silence_while_audio_is_due_is_a_timeout(
    sim: Simulator, engine: Providers
) -> None:
    endpoint = "tts" if kind(engine) == "tts" else "tts_cosyvoice"
    sim.faults.add(Fault.stall(1, None, endpoint=endpoint))  # type: ignore[arg-type]
    settings = make_settings(sim, read_timeout=0.3, tts_model=engine.synthesizer.model)
    providers = build_providers(settings, tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            with pytest.raises(ExceptionGroup) as info:
                await speak(session, SEGMENTS)
        assert any(isinstance(e, UpstreamTimeout) for e in info.value.exceptions)
    finally:
        await providers.aclose()
    assert client_tasks() == []


async def test_no_timeout_while_no_audio_is_due(sim: Simulator) -> None:
    """An answer whose next sentence is slow to come (the LLM thinking) is not an upstream timeout."""
    providers = build_providers(make_settings(sim, read_timeout=0.2), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await session.send_text(SEGMENTS[0])
            record = sim.log.tts_sessions[-1]
            await sim.log.wait_for(lambda: any(r.status == "completed" for r in record.responses))
            await asyncio.sleep(0.5)  # longer than read_timeout with nothing due
            chunks = await speak(session, SEGMENTS[1:])
    finally:
        await providers.aclose()
    assert chunks


# --- cancellation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sim_config", [SimulatorConfig(api_key=KEY, tts_realtime_factor=1.0)])
async def test_cancelling_mid_answer_closes_the_upstream(sim: Simulator, engine: Providers) -> None:
    first_audio = asyncio.Event()

    async def answer() -> None:
        async with engine.synthesizer.session() as session:
            for text in SEGMENTS:
                await session.send_text(text)
            async for _ in session.audio():
                first_audio.set()

    await cancel_after(first_audio, answer)
    await sim.wait_closed(kind(engine), timeout=5)
    connection = sim.log.connections[-1]
    assert connection.close_reason == "client"
    if kind(engine) == "tts":
        assert not sim.log.tts_sessions[-1].finished
    else:
        assert sim.log.cosyvoice_sessions[-1].aborted
    assert client_tasks() == []


async def test_a_model_the_realtime_endpoint_does_not_serve_is_model_not_found(
    sim: Simulator,
) -> None:
    # a recognition model sent down the realtime TTS protocol on purpose (QG_TTS_PROTOCOL)
    providers = build_providers(
        make_settings(sim, tts_model="acme-speech-realtime", tts_protocol="realtime"), tuning=FAST
    )
    try:
        # the error event may arrive before or after the session is handed over
        with pytest.raises((UpstreamError, ExceptionGroup)) as info:
            async with providers.synthesizer.session() as session:
                await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    error = info.value
    if isinstance(error, ExceptionGroup):
        error = next(e for e in error.exceptions if isinstance(e, UpstreamError))
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code) == (404, "model_not_found")
    assert sim.log.connections[-1].path.endswith("/api-ws/v1/realtime")


async def test_a_handshake_slower_than_the_connect_timeout_is_a_timeout(sim: Simulator) -> None:
    sim.faults.add(Fault.delay(5.0, endpoint="tts"))
    settings = make_settings(sim, connect_timeout=0.2, upstream_retries=0)
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamTimeout) as info:
            async with providers.synthesizer.session():
                pass
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code, info.value.transient) == (
        504,
        "upstream_timeout",
        True,
    )
    assert client_tasks() == []
