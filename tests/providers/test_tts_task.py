"""The task-WebSocket synthesiser (CosyVoice, qwen-audio TTS): every model of the family, the SDK's frames, and
the 23 s rule (the task starts with the first text, not with the session)."""

from __future__ import annotations

import asyncio

import pytest

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.dashscope import TaskSynthesizer, build_providers
from qwen_gateway.providers.dashscope.catalogue import TTS_MODELS, TtsProtocol
from qwen_gateway.simulator import Simulator, SimulatorConfig

from .conftest import FAST, KEY, client_tasks, make_settings
from .test_tts import SEGMENTS, speak

TASK_MODELS = sorted(name for name, m in TTS_MODELS.items() if m.protocol is TtsProtocol.TASK)


def test_the_family_is_what_the_issue_lists() -> None:
    assert TASK_MODELS == [
        "cosyvoice-v1",
        "cosyvoice-v2",
        "cosyvoice-v3-flash",
        "cosyvoice-v3-plus",
        "qwen-audio-3.0-tts-flash",
        "qwen-audio-3.1-tts-flash",
    ]


@pytest.mark.parametrize("model", TASK_MODELS)
async def test_every_model_speaks_with_its_default_voice(sim: Simulator, model: str) -> None:
    providers = build_providers(make_settings(sim, tts_model=model), tuning=FAST)
    try:
        synth = providers.synthesizer
        assert isinstance(synth, TaskSynthesizer)
        async with synth.session() as session:
            chunks = await speak(session, SEGMENTS)
    finally:
        await providers.aclose()
    record = sim.log.cosyvoice_sessions[-1]
    assert record.model == model and record.finished and record.texts == SEGMENTS
    assert record.params["voice"] == TTS_MODELS[model].default_voice
    assert (record.params["format"], record.params["sample_rate"]) == ("pcm", 24000)
    assert sum(len(c.pcm) for c in chunks) == record.audio_bytes > 0


async def test_frames_are_the_sdks(sim: Simulator) -> None:
    providers = build_providers(
        make_settings(sim, tts_model="qwen-audio-3.1-tts-flash"), tuning=FAST
    )
    try:
        async with providers.synthesizer.session() as session:
            await speak(session, SEGMENTS[:2])
    finally:
        await providers.aclose()
    frames = sim.log.cosyvoice_sessions[-1].instructions
    task = {"task_group": "audio", "task": "tts", "function": "SpeechSynthesizer"}
    assert [f["header"]["action"] for f in frames] == [
        "run-task",
        "continue-task",
        "continue-task",
        "finish-task",
    ]
    assert all(f["header"]["streaming"] == "duplex" for f in frames)
    assert frames[0]["payload"] == {
        "model": "qwen-audio-3.1-tts-flash",
        **task,
        "input": {},
        "parameters": {
            "voice": "longanhuan_v3.1",
            "volume": 50,
            "text_type": "PlainText",
            "sample_rate": 24000,
            "rate": 1.0,
            "format": "pcm",
            "pitch": 1.0,
            "seed": 0,
            "type": 0,
        },
    }
    assert frames[1]["payload"] == {
        "model": "qwen-audio-3.1-tts-flash",
        **task,
        "input": {"text": SEGMENTS[0]},
    }
    assert frames[3]["payload"] == {"input": {}}


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, asr_idle_timeout=0.3)], indirect=False
)
async def test_silence_before_the_first_text_does_not_kill_the_task(sim: Simulator) -> None:
    """The session (socket) is open long before the first sentence: run-task waits for it."""
    providers = build_providers(make_settings(sim, tts_model="cosyvoice-v2"), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await asyncio.sleep(0.6)  # twice the (scaled) 23 s rule
            assert sim.log.cosyvoice_sessions == []  # no task yet
            chunks = await speak(session, SEGMENTS)
    finally:
        await providers.aclose()
    record = sim.log.cosyvoice_sessions[-1]
    assert record.finished and record.failed is None and record.texts == SEGMENTS
    assert sum(len(c.pcm) for c in chunks) == record.audio_bytes
    assert len(sim.log.connections) == 1  # the socket opened early carried the task


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, task_reuse_timeout=0.2)], indirect=False
)
async def test_an_idle_socket_the_upstream_closed_is_replaced(sim: Simulator) -> None:
    providers = build_providers(make_settings(sim, tts_model="cosyvoice-v2"), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await sim.log.wait_for(lambda: bool(sim.log.closes), timeout=5)
            assert sim.log.closes[0].close_reason == "idle"
            chunks = await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    assert chunks and sim.log.cosyvoice_sessions[-1].finished
    assert len(sim.log.connections) == 2
    assert client_tasks() == []


async def test_nothing_to_say_starts_no_task(sim: Simulator) -> None:
    providers = build_providers(make_settings(sim, tts_model="cosyvoice-v3-flash"), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await session.send_text("  ")
            await session.finish()
            assert [c async for c in session.audio()] == []
    finally:
        await providers.aclose()
    await sim.wait_closed("inference")
    assert sim.log.cosyvoice_sessions == []
    assert client_tasks() == []


async def test_a_model_the_task_endpoint_does_not_serve_is_model_not_found(sim: Simulator) -> None:
    # qwen3-tts-flash is HTTP-only: forced down the task protocol, DashScope refuses it in task-failed
    settings = make_settings(sim, tts_model="qwen3-tts-flash", tts_protocol="task")
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamError) as info:
            async with providers.synthesizer.session() as session:
                await session.send_text(SEGMENTS[0])
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert len(sim.log.connections) == 1  # not transient: not retried
