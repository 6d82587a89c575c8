"""``Providers.recognizer_for``: the recogniser of a catalogue model by name (``/v1/realtime``'s
``audio.input.transcription.model``), built once, the configured one by default."""

from __future__ import annotations

import pytest

from qwen_gateway.config import load_settings
from qwen_gateway.providers.dashscope import build_providers
from qwen_gateway.providers.dashscope.asr_file import FileRecognizer
from qwen_gateway.providers.dashscope.asr_qwen_realtime import QwenRealtimeRecognizer
from qwen_gateway.providers.dashscope.asr_realtime import RealtimeRecognizer
from qwen_gateway.providers.dashscope.catalogue import CatalogueError


async def test_recognizers_by_name() -> None:
    settings = load_settings({}, dotenv=None, qwen_api_key="sk-x")
    providers = build_providers(settings)
    try:
        assert providers.recognizer_for(None) is providers.recognizer
        assert providers.recognizer_for(providers.recognizer.model) is providers.recognizer
        qwen = providers.recognizer_for("qwen3-asr-flash-realtime")
        assert isinstance(qwen, QwenRealtimeRecognizer) and qwen.model == "qwen3-asr-flash-realtime"
        assert providers.recognizer_for("qwen3-asr-flash-realtime") is qwen
        task = providers.recognizer_for("fun-asr-realtime")
        assert isinstance(task, RealtimeRecognizer) and task.streaming
        assert isinstance(providers.recognizer_for("paraformer-v2"), FileRecognizer)
        with pytest.raises(CatalogueError):
            providers.recognizer_for("whisper-1")
    finally:
        await providers.aclose()
