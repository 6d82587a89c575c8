"""Upload format sniffing and durations for the voice pipeline: :mod:`qwen_gateway.audio_formats`, re-exported.

The module lives at the top of the package so that the providers, which must not import ``voice``, sniff audio
with the same code (the realtime recogniser's URL mode).
"""

from qwen_gateway.audio_formats import (
    SNIFF_BYTES,
    AudioFormatInfo,
    SniffedFormat,
    UnknownAudioFormat,
    audio_duration,
    mp3_duration,
    ogg_duration,
    parse_declared,
    sniff,
    wav_duration,
)

__all__ = [
    "SNIFF_BYTES",
    "AudioFormatInfo",
    "SniffedFormat",
    "UnknownAudioFormat",
    "audio_duration",
    "mp3_duration",
    "ogg_duration",
    "parse_declared",
    "sniff",
    "wav_duration",
]
