"""Upstream engines behind small ``typing.Protocol`` interfaces (see :mod:`.base`)."""

from .base import (
    AudioFormat,
    ChatDelta,
    ChatModel,
    PcmChunk,
    RecognitionResult,
    RecognitionSession,
    Recognizer,
    SynthesisSession,
    Synthesizer,
    Usage,
)

__all__ = [
    "AudioFormat",
    "ChatDelta",
    "ChatModel",
    "PcmChunk",
    "RecognitionResult",
    "RecognitionSession",
    "Recognizer",
    "SynthesisSession",
    "Synthesizer",
    "Usage",
]
