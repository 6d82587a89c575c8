"""build_providers: engines chosen by model name from Settings, and who closes the shared HTTP client."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from qwen_gateway.config import Settings
from qwen_gateway.providers.dashscope import (
    DashScopeChat,
    FileRecognizer,
    HttpSynthesizer,
    QwenRealtimeSynthesizer,
    RealtimeRecognizer,
    TaskSynthesizer,
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
            TaskSynthesizer,
            "cosyvoice-v2",
        ),
        ("", "wss://h/api-ws/v1/realtime?model=cosyvoice-v1", TaskSynthesizer, "cosyvoice-v1"),
        # task WebSocket like CosyVoice, though the name says "qwen" and not "cosyvoice"
        ("qwen-audio-3.0-tts-flash", "", TaskSynthesizer, "qwen-audio-3.0-tts-flash"),
        ("qwen-audio-3.1-tts-flash", "", TaskSynthesizer, "qwen-audio-3.1-tts-flash"),
        # HTTP only
        ("qwen3-tts-flash", "", HttpSynthesizer, "qwen3-tts-flash"),
        ("qwen-tts", "", HttpSynthesizer, "qwen-tts"),
    ],
)
async def test_synthesizer_by_model(tts_model: str, tts_url: str, engine: type, model: str) -> None:
    settings = replace(BASE, tts_model=tts_model, tts_url=tts_url or BASE.tts_url)
    providers = build_providers(settings, tuning=FAST)
    try:
        assert type(providers.synthesizer) is engine
        assert providers.synthesizer.model == model
        assert providers.synthesizer.sample_rate == 24000  # each of these models' default
    finally:
        await providers.aclose()


async def test_the_http_engine_posts_to_the_url_derived_from_the_http_base() -> None:
    settings = replace(
        BASE, tts_model="qwen3-tts-flash", dashscope_http_base="https://h.example/api/v1"
    )
    providers = build_providers(settings, tuning=FAST)
    try:
        synth = providers.synthesizer
        assert isinstance(synth, HttpSynthesizer)
        assert (
            synth.url == "https://h.example/api/v1/services/aigc/multimodal-generation/generation"
        )
    finally:
        await providers.aclose()
    explicit = replace(settings, tts_http_url="https://tts.example/generate")
    providers = build_providers(explicit, tuning=FAST)
    try:
        assert isinstance(providers.synthesizer, HttpSynthesizer)
        assert providers.synthesizer.url == "https://tts.example/generate"
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
