"""Building blocks shared by the two WebSocket channels: message bases, the event registry, shared events.

Every server event is an :class:`Event`: a frozen, keyword-only Struct that rejects unknown fields (what we send
is exact) and names its wire key in ``event_name``. On the wire an event is ``{"<event_name>": {...fields}}``
(see :mod:`protocol.wire`). Client messages are :class:`ClientMessage` Structs, which tolerate unknown fields.
Fields added to the seed's events always default to ``UNSET`` and are then left out, so a client written for the
seed sees the seed's shape.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .errors import ErrorCode

__all__ = [
    "AUDIO_STREAM_FORMAT",
    "MSG_TRANSCRIPTION_STARTED",
    "MSG_TTS_STARTED",
    "AudioStreamData",
    "AudioStreamFinished",
    "ByteCount",
    "Cancel",
    "ClientMessage",
    "Connected",
    "Count",
    "ErrorEvent",
    "Event",
    "EventRegistry",
    "Milliseconds",
    "Seconds",
    "Seq",
    "Timings",
    "Total",
    "TranscriptionPartial",
    "TranscriptionStarted",
    "TtsStarted",
    "TurnId",
]

#: Largest ``seq``/``total`` the contract allows (fits a signed 32-bit integer).
_MAX_SEQ = 2**31 - 1

Seq = Annotated[
    int, Meta(ge=1, le=_MAX_SEQ, description="Packet number within one upload, from 1 to `total`.")
]
Total = Annotated[
    int,
    Meta(
        ge=1,
        le=_MAX_SEQ,
        description="Number of packets in this upload; the same in every packet of the upload.",
    ),
]
TurnId = Annotated[
    int,
    Meta(
        ge=1,
        description="Turn number within the connection (1, 2, ...); a barge-in starts a new turn.",
    ),
]
ByteCount = Annotated[int, Meta(ge=0, description="A size in bytes.")]
Count = Annotated[int, Meta(ge=0, description="A number of items.")]
Milliseconds = Annotated[float, Meta(ge=0, description="A duration in milliseconds.")]
Seconds = Annotated[float, Meta(ge=0, description="A duration in seconds.")]

MSG_TRANSCRIPTION_STARTED = "开始语音识别..."
MSG_TTS_STARTED = "开始语音合成..."

#: The container of ``audio_stream`` data (incremental MP3 frames).
AUDIO_STREAM_FORMAT = "mp3"


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every event the server sends; ``event_name`` is its key on the wire."""

    event_name: ClassVar[str]


class ClientMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every message a client sends; unknown fields are accepted and ignored."""


class EventRegistry:
    """The closed set of events one channel sends, by wire name.

    Each entry is one Event type, or a tuple of types sharing one ``event_name`` that are told apart by a tag
    field inside the object (``audio_stream``: ``event`` is ``data`` or ``finished``). A name registered twice
    raises ``ValueError``.
    """

    def __init__(
        self, channel: str, entries: Iterable[type[Event] | tuple[type[Event], ...]]
    ) -> None:
        self.channel = channel
        self._variants: dict[str, tuple[type[Event], ...]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        for entry in entries:
            variants = entry if isinstance(entry, tuple) else (entry,)
            if not variants:
                raise ValueError(f"{channel}: empty registry entry")
            name = variants[0].event_name
            if any(v.event_name != name for v in variants):
                raise ValueError(f"{channel}: variants of {name!r} disagree on event_name")
            if len(variants) > 1 and any(v.__struct_config__.tag_field is None for v in variants):
                raise ValueError(f"{channel}: variants of {name!r} must be tagged Structs")
            if name in self._variants:
                raise ValueError(f"{channel}: event name {name!r} registered twice")
            self._variants[name] = variants

    @property
    def names(self) -> tuple[str, ...]:
        """Every wire name, in registration order."""
        return tuple(self._variants)

    def variants(self, name: str) -> tuple[type[Event], ...]:
        """The Event types sent under ``name``; raises ``KeyError`` for a name not in the channel."""
        return self._variants[name]

    def decode_type(self, name: str) -> Any:
        """The type to decode the body of ``name`` with (one Struct, or a tagged union of them)."""
        return functools.reduce(operator.or_, self._variants[name])

    def decoder(self, name: str) -> msgspec.json.Decoder[Any] | None:
        """A cached JSON decoder for the body of ``name``; None when the channel has no such event."""
        decoder = self._decoders.get(name)
        if decoder is None and name in self._variants:
            decoder = self._decoders[name] = msgspec.json.Decoder(self.decode_type(name))
        return decoder

    def types(self) -> Iterator[type[Event]]:
        """Every Event type of the channel."""
        for variants in self._variants.values():
            yield from variants

    def __contains__(self, item: object) -> bool:
        return isinstance(item, type) and any(item is t for t in self.types())


class Timings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long the stages of a turn took, measured from the turn's start (additive, optional)."""

    recognition_ms: Milliseconds | UnsetType = UNSET
    first_token_ms: Milliseconds | UnsetType = UNSET
    first_audio_ms: Milliseconds | UnsetType = UNSET
    total_ms: Milliseconds | UnsetType = UNSET


class Cancel(ClientMessage, tag_field="type", tag="cancel", frozen=True, kw_only=True):
    """Stop the running turn now (explicit barge-in); additive, on both voice endpoints."""


class Connected(Event, frozen=True, kw_only=True):
    """The connection is ready; sent once, first."""

    event_name: ClassVar[str] = "connected"
    message: str
    session_id: str


class TranscriptionPartial(Event, frozen=True, kw_only=True):
    """Opt-in (``?events=extended``): the transcript so far, while the user's audio is still being recognised.

    Not a seed event: sent only to clients that asked for extended events at the handshake.
    """

    event_name: ClassVar[str] = "transcription_partial"
    text: str
    is_final: bool
    turn_id: TurnId | UnsetType = UNSET


class TranscriptionStarted(Event, frozen=True, kw_only=True):
    """Speech recognition of the turn's audio has started.

    ``oss_url`` is where the uploaded audio is stored; null while it is not stored yet (the audio endpoint
    recognises while the upload is still arriving).
    """

    event_name: ClassVar[str] = "transcription_started"
    message: str
    oss_url: str | None
    turn_id: TurnId | UnsetType = UNSET


class TtsStarted(Event, frozen=True, kw_only=True):
    """Speech synthesis of the answer has started."""

    event_name: ClassVar[str] = "tts_started"
    message: str
    turn_id: TurnId | UnsetType = UNSET


class AudioStreamData(Event, tag_field="event", tag="data", frozen=True, kw_only=True):
    """A piece of the spoken answer: base64 of consecutive MP3 frames, playable in order.

    A client that asked for a format at the handshake (``audio_format``) gets it instead, and the fields that
    describe it: ``format``; ``sample_rate``; ``frame_ms`` (Opus: every packet lasts exactly that); ``seq``
    (1, 2, ... within the turn); ``duration_ms`` (the audio this event carries). ``opus``: ``data`` is one raw
    Opus packet; ``ogg_opus``: the next pages of one Ogg Opus stream; ``pcm``: 16-bit little-endian mono samples.
    """

    event_name: ClassVar[str] = "audio_stream"
    data: bytes
    format: Literal["mp3", "opus", "ogg_opus", "pcm"] | UnsetType = UNSET
    turn_id: TurnId | UnsetType = UNSET
    sample_rate: Annotated[int, Meta(ge=8000, le=48000)] | UnsetType = UNSET
    frame_ms: Annotated[int, Meta(ge=20, le=60)] | UnsetType = UNSET
    seq: Annotated[int, Meta(ge=1)] | UnsetType = UNSET
    duration_ms: Milliseconds | UnsetType = UNSET


class AudioStreamFinished(Event, tag_field="event", tag="finished", frozen=True, kw_only=True):
    """The spoken answer is complete; no more ``audio_stream`` data for this turn."""

    event_name: ClassVar[str] = "audio_stream"
    turn_id: TurnId | UnsetType = UNSET


class ErrorEvent(Event, frozen=True, kw_only=True):
    """Something went wrong; ``code`` says what (see ErrorCode). The connection stays open unless the code is
    one of frame_too_large, too_many_turns, unauthorized, internal_error."""

    event_name: ClassVar[str] = "error"
    message: str
    code: ErrorCode | UnsetType = UNSET
    turn_id: TurnId | UnsetType = UNSET
    #: with ``rate_limited``, ``quota_exceeded`` and ``server_busy``: seconds to wait before trying again
    retry_after: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
