"""Which models each simulated DashScope endpoint serves, as DashScope routes them (``dashscope-protocols.md`` §10).

The simulator's own table, written from the upstream's side: it imports nothing of the gateway, so a gateway
that sends a model down the wrong protocol is refused here as DashScope would refuse it
(``ModelNotFound`` / ``model_not_found``, ``task-failed``, a 1008 close). A dated snapshot
(``-2025-09-18``) or ``-latest`` names the same model as its base name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

__all__ = ["ASR_RATES", "MODELS", "TTS_RATES", "Endpoint", "base_name", "serves"]


class Endpoint(StrEnum):
    """A protocol the simulator speaks, by where and how DashScope serves it."""

    TASK_ASR = "task-asr"  # /api-ws/v1/inference, run-task with task "asr"
    TASK_TTS = "task-tts"  # /api-ws/v1/inference, run-task with task "tts"
    REALTIME_TTS = "realtime-tts"  # /api-ws/v1/realtime?model=, input_text_buffer.*
    REALTIME_ASR = (
        "realtime-asr"  # /api-ws/v1/realtime?model=, input_audio_buffer.* -> transcription
    )
    OMNI = "omni"  # /api-ws/v1/realtime?model=, audio in, audio + text out
    FILE_ASR_URLS = "file-asr-urls"  # POST .../asr/transcription with input.file_urls
    FILE_ASR_URL = "file-asr-url"  # POST .../asr/transcription with input.file_url
    HTTP_TTS = "http-tts"  # POST .../aigc/multimodal-generation/generation


MODELS: Mapping[Endpoint, frozenset[str]] = {
    Endpoint.TASK_ASR: frozenset(
        {
            "paraformer-realtime-v1",
            "paraformer-realtime-v2",
            "paraformer-realtime-8k-v1",
            "paraformer-realtime-8k-v2",
            "fun-asr-realtime",
            "fun-asr-realtime-8k",
            "gummy-realtime-v1",
            "gummy-chat-v1",
            "qwen-audio-3.1-asr-flash-streaming",
        }
    ),
    Endpoint.TASK_TTS: frozenset(
        {
            "cosyvoice-v1",
            "cosyvoice-v2",
            "cosyvoice-v3-flash",
            "cosyvoice-v3-plus",
            "qwen-audio-3.0-tts-flash",
            "qwen-audio-3.1-tts-flash",
        }
    ),
    Endpoint.REALTIME_TTS: frozenset(
        {"qwen-tts-realtime", "qwen3-tts-flash-realtime", "qwen3-tts-instruct-flash-realtime"}
    ),
    Endpoint.REALTIME_ASR: frozenset({"qwen3-asr-flash-realtime"}),
    Endpoint.OMNI: frozenset(
        {
            "qwen-omni-turbo-realtime",
            "qwen3-omni-flash-realtime",
            "qwen3.5-omni-flash-realtime",
            "qwen3.5-omni-plus-realtime",
        }
    ),
    Endpoint.FILE_ASR_URLS: frozenset(
        {
            "paraformer-v1",
            "paraformer-v2",
            "paraformer-8k-v1",
            "paraformer-8k-v2",
            "paraformer-mtl-v1",
            "fun-asr",
            "sensevoice-v1",
            # On Fun-ASR's API (the SDK's own example sends it one URL in file_urls) [H].
            "qwen-audio-3.1-asr-flash-filetrans",
        }
    ),
    Endpoint.FILE_ASR_URL: frozenset({"qwen3-asr-flash-filetrans"}),
    Endpoint.HTTP_TTS: frozenset({"qwen3-tts-flash", "qwen-tts"}),
}

#: PCM sample rates each synthesis model accepts (§3.2, §4.2, §10: the SDK's 22050/44100 for qwen3 is wrong).
_TASK_TTS_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
_QWEN3_RATES = frozenset({8000, 16000, 24000, 48000})
TTS_RATES: Mapping[str, frozenset[int]] = {
    "qwen-tts-realtime": frozenset({24000}),
    "qwen3-tts-flash-realtime": _QWEN3_RATES,
    "qwen3-tts-instruct-flash-realtime": _QWEN3_RATES,
    "qwen3-tts-flash": frozenset({24000}),
    "qwen-tts": frozenset({24000}),
    **dict.fromkeys(MODELS[Endpoint.TASK_TTS], _TASK_TTS_RATES),
}

#: Sample rates of the task-WebSocket recognition models that are documented to take only some (the others
#: take any rate): the 8 kHz telephone models [C], paraformer-realtime-v1 16 kHz only [U, §9].
ASR_RATES: Mapping[str, frozenset[int]] = {
    "paraformer-realtime-v1": frozenset({16000}),
    "paraformer-realtime-8k-v1": frozenset({8000}),
    "paraformer-realtime-8k-v2": frozenset({8000}),
    "fun-asr-realtime-8k": frozenset({8000}),
}

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def base_name(model: str) -> str:
    """``model`` without a dated snapshot or ``-latest`` suffix."""
    return _SNAPSHOT.sub("", model)


def serves(endpoint: Endpoint, model: object) -> bool:
    """True when DashScope serves ``model`` on ``endpoint``."""
    return isinstance(model, str) and base_name(model) in MODELS[endpoint]
