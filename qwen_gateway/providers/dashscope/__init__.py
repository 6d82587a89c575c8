"""DashScope engines behind the provider Protocols, and :func:`build_providers` that picks them from Settings.

::

    chat.py            DashScopeChat            ChatModel over the OpenAI-compatible endpoint (chat and VLM)
    asr_realtime.py    RealtimeRecognizer       streaming Recognizer over the task WebSocket
    asr_file.py        FileRecognizer           file Recognizer (async task: submit, poll, fetch)
    tts_qwen.py        QwenRealtimeSynthesizer  Synthesizer over the Qwen-TTS realtime WebSocket
    tts_task.py        TaskSynthesizer          Synthesizer over the task WebSocket (CosyVoice, qwen-audio TTS)
    tts_http.py        HttpSynthesizer          Synthesizer over HTTP + SSE (qwen3-tts-flash, qwen-tts)
    errors.py          DashScope failures -> UpstreamError (OpenAI-style code, HTTP status, transient)
    http1.py           Http1Pool                the chat upstream's HTTP/1.1 keep-alive pool (httpx adapter too)
    sse.py, ws.py, policy.py   bounded SSE decoding, WebSocket plumbing, timeouts, read limits and backoff
"""

from .asr_file import FileRecognizer
from .asr_realtime import RealtimeRecognitionSession, RealtimeRecognizer
from .chat import DashScopeChat, parse_chunk
from .factory import (
    Providers,
    Tuning,
    build_providers,
    new_http_client,
)
from .policy import Backoff, ReadLimits, Timeouts
from .sse import SseDecoder
from .tts_http import HttpSynthesisSession, HttpSynthesizer
from .tts_qwen import QwenRealtimeSynthesisSession, QwenRealtimeSynthesizer
from .tts_task import TaskSynthesisSession, TaskSynthesizer

__all__ = [
    "Backoff",
    "DashScopeChat",
    "FileRecognizer",
    "HttpSynthesisSession",
    "HttpSynthesizer",
    "Providers",
    "QwenRealtimeSynthesisSession",
    "QwenRealtimeSynthesizer",
    "ReadLimits",
    "RealtimeRecognitionSession",
    "RealtimeRecognizer",
    "SseDecoder",
    "TaskSynthesisSession",
    "TaskSynthesizer",
    "Timeouts",
    "Tuning",
    "build_providers",
    "new_http_client",
    "parse_chunk",
]
