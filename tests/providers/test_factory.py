"""build_providers: engines chosen by model name from Settings, and who closes the shared HTTP client."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from qwen_gateway.config import Settings
from qwen_gateway.providers.dashscope import (
    CosyVoiceSynthesizer,
    DashScopeChat,
    FileRecognizer,
    QwenRealtimeSynthesizer,
    RealtimeRecognizer,
    build_providers,
)

from .conftest import FAST

BASE = Settings(qwen_api_key="sk-x")


@pytest.mark.parametrize(
    ("asr_model", "engine"),
    [
        ("paraformer-realtime-v2", RealtimeRecognizer),
        ("paraformer-realtime-8k-v2", RealtimeRecognizer),
        ("fun-asr-realtime", RealtimeRecognizer),
        # no "realtime" in its name, and still a task-WebSocket stream
        ("qwen-audio-3.1-asr-flash-streaming", RealtimeRecognizer),
        ("paraformer-v1", FileRecognizer),
        ("paraformer-v2", FileRecognizer),
        ("fun-asr", FileRecognizer),
    ],
)
async def test_recognizer_by_model(asr_model: str, engine: type) -> None:
    providers = build_providers(replace(BASE, asr_model=asr_model), tuning=FAST)
    try:
        assert type(providers.recognizer) is engine
        assert providers.recognizer.model == asr_model
        assert providers.recognizer.streaming is (engine is RealtimeRecognizer)
    finally:
        await providers.aclose()


@pytest.mark.parametrize(
    ("tts_model", "tts_url", "engine", "model"),
    [
        (
            "",
            "wss://h/api-ws/v1/realtime?model=qwen-tts-realtime",
            QwenRealtimeSynthesizer,
            "qwen-tts-realtime",
        ),
        (
            "",
            "wss://h/api-ws/v1/realtime?model=qwen3-tts-flash-realtime",
            QwenRealtimeSynthesizer,
            "qwen3-tts-flash-realtime",
        ),
        (
            "qwen3-tts-flash-realtime",
            "wss://h/api-ws/v1/realtime?model=qwen-tts-realtime",
            QwenRealtimeSynthesizer,
            "qwen3-tts-flash-realtime",
        ),
        (
            "cosyvoice-v2",
            "wss://h/api-ws/v1/realtime?model=qwen-tts-realtime",
            CosyVoiceSynthesizer,
            "cosyvoice-v2",
        ),
        ("", "wss://h/api-ws/v1/realtime?model=cosyvoice-v1", CosyVoiceSynthesizer, "cosyvoice-v1"),
    ],
)
async def test_synthesizer_by_model(tts_model: str, tts_url: str, engine: type, model: str) -> None:
    providers = build_providers(replace(BASE, tts_model=tts_model, tts_url=tts_url), tuning=FAST)
    try:
        assert type(providers.synthesizer) is engine
        assert providers.synthesizer.model == model
        assert providers.synthesizer.sample_rate == 24000  # each of these models' default
    finally:
        await providers.aclose()


async def test_chat_and_vlm_default_models() -> None:
    providers = build_providers(BASE, tuning=FAST)
    try:
        assert isinstance(providers.chat, DashScopeChat) and isinstance(
            providers.vlm, DashScopeChat
        )
        assert (providers.chat.model, providers.vlm.model) == (BASE.chat_model, BASE.vlm_model)
    finally:
        await providers.aclose()


async def test_aclose_closes_only_a_client_it_created() -> None:
    own = build_providers(BASE)
    await own.aclose()
    assert own.http.is_closed
    await own.aclose()  # idempotent

    async with httpx.AsyncClient() as shared:
        borrowed = build_providers(BASE, shared)
        assert borrowed.http is shared
        await borrowed.aclose()
        assert not shared.is_closed
