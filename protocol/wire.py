"""The wire codec: the one place that turns Structs into bytes on the wire and frames back into Structs.

Server events travel as ``{"<event_name>": {...}}`` in UTF-8 JSON text frames, Chinese unescaped
(:func:`encode_event`). Client frames are decoded into typed messages with :class:`Limits` enforced
(:func:`decode_audio_client`, :func:`decode_vlm_client`). Whatever the input, the decoders raise
:class:`~protocol.errors.RemoteProtocolError` and nothing else; its ``code`` says what was wrong:

================================  ==========================
frame                             code
================================  ==========================
binary frame                      ``binary_frame``
larger than ``max_frame_bytes``   ``frame_too_large``
not UTF-8 / not JSON              ``invalid_json``
JSON but not an object, missing   ``invalid_message``
or mistyped field, nested too
deeply for the decoder
a ``type`` the endpoint lacks     ``unexpected_message``
``seq``/``total`` out of range,   ``bad_sequence``
``seq`` > ``total``
``data`` not strict base64        ``invalid_base64``
decoded ``data`` too large        ``packet_too_large``
================================  ==========================

The chat helpers decode the OpenAI-compatible request (keeping unknown fields for pass-through) and write SSE.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

import msgspec

from .audio import (
    AUDIO_EVENTS,
    AudioClientMessage,
    AudioEnd,
    AudioPacket,
    AudioServerEvent,
    OpenAudioPacket,
    StreamClientMessage,
)
from .chat import ChatCompletionChunk, ChatCompletionRequest
from .errors import ErrorCode, RemoteProtocolError
from .events import Cancel, ClientMessage, Event, EventRegistry
from .vlm import VLM_EVENTS, VlmAudioPacket, VlmClientMessage, VlmImagePacket, VlmServerEvent

__all__ = [
    "AUDIO_LIMITS",
    "SSE_DONE",
    "VLM_LIMITS",
    "Limits",
    "ParsedChatRequest",
    "decode_audio_client",
    "decode_audio_event",
    "decode_chat_request",
    "decode_event",
    "decode_json",
    "decode_stream_client",
    "decode_vlm_client",
    "decode_vlm_event",
    "encode_client",
    "encode_event",
    "encode_json",
    "encode_sse",
]

T = TypeVar("T")


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of one WebSocket endpoint; the shell builds it from ``Settings``.

    Attributes:
        max_frame_bytes: largest text frame, in UTF-8 bytes (``QG_MAX_FRAME_BYTES``).
        max_packet_bytes: largest decoded ``data`` of one packet (``QG_AUDIO_PACKET_BYTES`` /
            ``QG_VLM_PACKET_BYTES``; the seed says 8 KiB for audio, 50 KiB for VLM).
        max_upload_bytes: largest upload, all packets together (``QG_MAX_UPLOAD_BYTES``).
        max_packets: largest ``total`` (``QG_MAX_PACKETS``).
        upload_idle_timeout: seconds an incomplete upload may wait for its next packet before it is dropped.
        max_turns: turns one connection may start (``QG_MAX_TURNS``).
    """

    max_frame_bytes: int = 256 * 1024
    max_packet_bytes: int = 8 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024
    max_packets: int = 4096
    upload_idle_timeout: float = 30.0
    max_turns: int = 200

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"Limits.{name} must be greater than 0, got {getattr(self, name)!r}"
                )


#: The seed's limits for ``/v1/chat/audio`` (8 KiB packets).
AUDIO_LIMITS = Limits(max_packet_bytes=8 * 1024)
#: The seed's limits for ``/v1/chat/vlm`` (50 KiB packets).
VLM_LIMITS = Limits(max_packet_bytes=50 * 1024)

_encoder = msgspec.json.Encoder()
_prefixes: dict[str, bytes] = {}


# --------------------------------------------------------------------------- errors


_CONSTRAINT = re.compile(r"Expected `int` [<>]=")


def _remote(exc: msgspec.MsgspecError | RecursionError) -> RemoteProtocolError:
    """Convert a msgspec decoding error to the protocol's error (see the table in the module docstring).

    msgspec raises ``RecursionError`` for JSON nested deeper than the interpreter's recursion limit allows:
    a document too deep to be a message, so ``invalid_message``.
    """
    if isinstance(exc, RecursionError):
        return RemoteProtocolError(ErrorCode.INVALID_MESSAGE, "JSON nested too deeply")
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return RemoteProtocolError(ErrorCode.INVALID_JSON, f"not a JSON document: {text}")
    detail, sep, where = text.rpartition(" - at `")
    path = where.rstrip("`") if sep else "$"
    if path in ("$.seq", "$.total") and _CONSTRAINT.match(detail):
        return RemoteProtocolError(ErrorCode.BAD_SEQUENCE, text)
    if path == "$.data" and detail.startswith("Invalid base64"):
        return RemoteProtocolError(ErrorCode.INVALID_BASE64, text)
    if path == "$.type" and detail.startswith("Invalid value"):
        return RemoteProtocolError(ErrorCode.UNEXPECTED_MESSAGE, text)
    return RemoteProtocolError(ErrorCode.INVALID_MESSAGE, text)


def _utf8(data: str | bytes) -> bytes:
    """``data`` as UTF-8 bytes; a string that has no UTF-8 form (lone surrogates) is ``invalid_json``."""
    if isinstance(data, bytes):
        return data
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError:
        raise RemoteProtocolError(ErrorCode.INVALID_JSON, "not valid UTF-8 text") from None


def _text_frame(frame: str | bytes, limits: Limits) -> bytes:
    """The UTF-8 bytes of a client text frame within ``limits.max_frame_bytes``."""
    if not isinstance(frame, str):
        raise RemoteProtocolError(
            ErrorCode.BINARY_FRAME, "binary frames are not accepted: send JSON text frames"
        )
    limit = limits.max_frame_bytes
    if len(frame) > limit:  # every character is at least one byte
        raise RemoteProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame larger than {limit} bytes")
    data = _utf8(frame)
    if len(data) > limit:
        raise RemoteProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame of {len(data)} bytes, larger than {limit}"
        )
    return data


def _check_packet(seq: int, total: int, data: bytes, limits: Limits) -> None:
    if seq > total:
        raise RemoteProtocolError(
            ErrorCode.BAD_SEQUENCE, f"seq {seq} is greater than total {total}"
        )
    if len(data) > limits.max_packet_bytes:
        raise RemoteProtocolError(
            ErrorCode.PACKET_TOO_LARGE,
            f"packet data of {len(data)} bytes, larger than {limits.max_packet_bytes}",
        )


# --------------------------------------------------------------------------- client frames


class _TypeProbe(msgspec.Struct):
    type: str | None = None
    total: Any = None


_probe = msgspec.json.Decoder(_TypeProbe)
_audio_packet = msgspec.json.Decoder(AudioPacket)
_open_packet = msgspec.json.Decoder(OpenAudioPacket)
_audio_end = msgspec.json.Decoder(AudioEnd)
_cancel = msgspec.json.Decoder(Cancel)
_vlm_client: msgspec.json.Decoder[VlmClientMessage] = msgspec.json.Decoder(VlmClientMessage)


def decode_audio_client(frame: str | bytes, limits: Limits = AUDIO_LIMITS) -> AudioClientMessage:
    """Decode one frame received on ``/v1/chat/audio``.

    A frame without ``type`` (or with ``"type": "audio"``) is an :class:`~protocol.audio.AudioPacket`;
    ``{"type": "cancel"}`` is a :class:`~protocol.events.Cancel`. ``bytes`` means a binary frame.

    Raises:
        RemoteProtocolError: the frame is not a valid message (its ``code`` says why); report it with
            ``session.reject(error, now)``.
    """
    data = _text_frame(frame, limits)
    try:
        kind = _probe.decode(data).type
        if kind == "cancel":
            return _cancel.decode(data)
        if kind not in (None, "audio"):
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"/v1/chat/audio takes audio packets and cancel, not type {kind!r}",
            )
        packet = _audio_packet.decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    _check_packet(packet.seq, packet.total, packet.data, limits)
    return packet


def decode_stream_client(frame: str | bytes, limits: Limits = AUDIO_LIMITS) -> StreamClientMessage:
    """Decode one frame received on ``/v1/chat/audio`` from a client of ``mode=stream``.

    As :func:`decode_audio_client`, and also: a packet whose ``total`` is 0 or left out is an
    :class:`~protocol.audio.OpenAudioPacket`; ``{"type": "end"}`` is an :class:`~protocol.audio.AudioEnd`.

    Raises:
        RemoteProtocolError: the frame is not a valid message (its ``code`` says why).
    """
    data = _text_frame(frame, limits)
    try:
        probe = _probe.decode(data)
        if probe.type == "cancel":
            return _cancel.decode(data)
        if probe.type == "end":
            return _audio_end.decode(data)
        if probe.type not in (None, "audio"):
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"/v1/chat/audio takes audio packets, end and cancel, not type {probe.type!r}",
            )
        if probe.total is None or probe.total == 0:
            packet = _open_packet.decode(data)
            if len(packet.data) > limits.max_packet_bytes:
                _check_packet(packet.seq, packet.seq, packet.data, limits)
            return packet
        seed = _audio_packet.decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    _check_packet(seed.seq, seed.total, seed.data, limits)
    return seed


def decode_vlm_client(frame: str | bytes, limits: Limits = VLM_LIMITS) -> VlmClientMessage:
    """Decode one frame received on ``/v1/chat/vlm``: an ``audio``/``image`` packet, ``end`` or ``cancel``.

    Raises:
        RemoteProtocolError: the frame is not a valid message (its ``code`` says why); report it with
            ``session.reject(error, now)``.
    """
    data = _text_frame(frame, limits)
    try:
        message = _vlm_client.decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    if isinstance(message, VlmAudioPacket | VlmImagePacket):
        _check_packet(message.seq, message.total, message.data, limits)
    return message


def encode_client(message: ClientMessage) -> str:
    """The text frame a client sends for ``message`` (test clients, the simulator, benchmarks)."""
    return _encoder.encode(message).decode("utf-8")


# --------------------------------------------------------------------------- server events


def encode_event(event: Event) -> str:
    """The text frame for ``event``: ``{"<event_name>": {...}}``, UTF-8 JSON with Chinese unescaped."""
    name = event.event_name
    prefix = _prefixes.get(name)
    if prefix is None:
        prefix = _prefixes[name] = b'{"' + name.encode("utf-8") + b'":'
    return (prefix + _encoder.encode(event) + b"}").decode("utf-8")


_envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_event(frame: str | bytes, registry: EventRegistry) -> Event:
    """Decode a server event of the channel of ``registry`` (the client side of the codec).

    Raises:
        RemoteProtocolError: not an object with exactly one key (``invalid_message``), a name the channel does
            not send (``unexpected_message``), or a body that does not match the event.
    """
    try:
        envelope = _envelope.decode(_utf8(frame))
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    if len(envelope) != 1:
        raise RemoteProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"an event is an object with exactly one key, got {len(envelope)}",
        )
    ((name, body),) = envelope.items()
    decoder = registry.decoder(name)
    if decoder is None:
        raise RemoteProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE, f"no event {name!r} on the {registry.channel} channel"
        )
    try:
        event: Event = decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    return event


def decode_audio_event(frame: str | bytes) -> AudioServerEvent:
    """Decode an event sent on ``/v1/chat/audio``; raises RemoteProtocolError like :func:`decode_event`."""
    return cast(AudioServerEvent, decode_event(frame, AUDIO_EVENTS))


def decode_vlm_event(frame: str | bytes) -> VlmServerEvent:
    """Decode an event sent on ``/v1/chat/vlm``; raises RemoteProtocolError like :func:`decode_event`."""
    return cast(VlmServerEvent, decode_event(frame, VLM_EVENTS))


# --------------------------------------------------------------------------- JSON and the chat API

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode_json(data: str | bytes, type: type[T]) -> T:
    """Decode ``data`` as ``type`` with a cached decoder.

    Raises:
        RemoteProtocolError: ``invalid_json`` or ``invalid_message`` (see the module docstring).
    """
    decoder = _decoders.get(type)
    if decoder is None:
        decoder = _decoders[type] = msgspec.json.Decoder(type)
    try:
        value: T = decoder.decode(_utf8(data))
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    return value


def encode_json(value: Any) -> bytes:
    """UTF-8 JSON of ``value`` (Structs included), Chinese unescaped, ``UNSET`` fields left out."""
    return _encoder.encode(value)


class ParsedChatRequest(msgspec.Struct, frozen=True):
    """A validated chat request: the typed view and the caller's JSON object as sent, for pass-through."""

    request: ChatCompletionRequest
    body: dict[str, Any]

    @property
    def extra(self) -> dict[str, Any]:
        """The fields of ``body`` the typed view does not know (kept for the upstream)."""
        known = ChatCompletionRequest.__struct_fields__
        return {k: v for k, v in self.body.items() if k not in known}


def decode_chat_request(data: str | bytes) -> ParsedChatRequest:
    """Decode and validate a ``POST /v1/chat/completions`` body, keeping unknown fields.

    Raises:
        RemoteProtocolError: ``invalid_json`` or ``invalid_message``; the message names the bad field
            (``$.messages[0].content``).
    """
    body = decode_json(data, dict[str, Any])
    try:
        request = msgspec.convert(body, ChatCompletionRequest)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise _remote(exc) from None
    return ParsedChatRequest(request, body)


#: The last event of a streamed completion.
SSE_DONE = b"data: [DONE]\n\n"


def encode_sse(chunk: ChatCompletionChunk | bytes) -> bytes:
    """One ``data:`` event of a ``text/event-stream`` body; ``bytes`` are an already encoded chunk."""
    payload = chunk if isinstance(chunk, bytes) else _encoder.encode(chunk)
    return b"data: " + payload + b"\n\n"
