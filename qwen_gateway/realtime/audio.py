"""The realtime endpoint's audio formats on the voice pipeline's converters (:mod:`qwen_gateway.voice.convert`)."""

from __future__ import annotations

from protocol.realtime import AudioFormat

from ..voice.convert import WireFormat, wire_format

__all__ = ["wire_of"]


def wire_of(fmt: AudioFormat) -> WireFormat:
    """The converter's format for a session's audio format (its rate filled in by the session)."""
    return wire_format(fmt.type, fmt.rate if isinstance(fmt.rate, int) else None)
