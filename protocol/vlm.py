"""``/v1/chat/vlm``: client packets tagged on ``type`` and the eleven server events of the seed contract.

Client to server: ``{"type": "audio", seq, total, data}`` and ``{"type": "image", seq, total, data}`` packets,
``{"type": "end"}`` once both uploads are complete, and the additive ``{"type": "cancel"}``.

Server to client, in the seed's order: ``connected``, ``packet_ack`` (with ``type``), ``vlm_complete``,
``transcription_started``, ``vlm_chat_started``, ``tts_started``, ``audio_stream`` (``event: "data"``),
``audio_stream`` (``event: "finished"``), ``vlm_chat_chunk``, ``vlm_chat_tts_complete``, ``error``.
The ``MSG_*`` constants here and in :mod:`protocol.events` are the seed's texts.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from msgspec import UNSET, UnsetType

from .events import (
    AudioStreamData,
    AudioStreamFinished,
    ByteCount,
    Cancel,
    ClientMessage,
    Connected,
    Count,
    ErrorEvent,
    Event,
    EventRegistry,
    Seconds,
    Seq,
    Timings,
    Total,
    TranscriptionPartial,
    TranscriptionStarted,
    TtsStarted,
    TurnId,
)

__all__ = [
    "MSG_VLM_CHAT_STARTED",
    "MSG_VLM_CHAT_TTS_COMPLETE",
    "MSG_VLM_COMPLETE",
    "MSG_VLM_CONNECTED",
    "VLM_EVENTS",
    "PacketKind",
    "VlmAudioPacket",
    "VlmChatChunk",
    "VlmChatStarted",
    "VlmChatTtsComplete",
    "VlmClientMessage",
    "VlmComplete",
    "VlmEnd",
    "VlmImagePacket",
    "VlmPacket",
    "VlmPacketAck",
    "VlmServerEvent",
]

MSG_VLM_CONNECTED = "VLM连接已建立"
MSG_VLM_CHAT_STARTED = "开始生成多模态AI回答..."
MSG_VLM_CHAT_TTS_COMPLETE = "VLM对话和TTS合成完成"
MSG_VLM_COMPLETE = "VLM处理完成"

#: What a VLM packet carries.
PacketKind = Literal["audio", "image"]


class VlmAudioPacket(ClientMessage, tag_field="type", tag="audio", frozen=True, kw_only=True):
    """One packet of the spoken question; ``data`` is base64 of at most 50 KiB by default."""

    kind: ClassVar[PacketKind] = "audio"
    seq: Seq
    total: Total
    data: bytes


class VlmImagePacket(ClientMessage, tag_field="type", tag="image", frozen=True, kw_only=True):
    """One packet of the image; ``data`` is base64 of at most 50 KiB by default."""

    kind: ClassVar[PacketKind] = "image"
    seq: Seq
    total: Total
    data: bytes


class VlmEnd(ClientMessage, tag_field="type", tag="end", frozen=True, kw_only=True):
    """Both uploads are complete: answer the question about the image."""


class VlmPacketAck(Event, frozen=True, kw_only=True):
    """A packet was accepted; ``received`` counts the distinct packets of that upload so far.

    ``duplicate`` (additive) is true when the packet repeated one already received (nothing changed).
    """

    event_name: ClassVar[str] = "packet_ack"
    seq: Seq
    type: PacketKind
    received: Count
    total: Total
    duplicate: bool | UnsetType = UNSET


class VlmComplete(Event, frozen=True, kw_only=True):
    """The whole turn is done. ``duration`` is in seconds; sizes are in bytes."""

    event_name: ClassVar[str] = "vlm_complete"
    message: str
    audio_file: str
    image_file: str
    audio_size: ByteCount
    image_size: ByteCount
    duration: Seconds
    transcription: str
    vlm_response: str
    turn_id: TurnId | UnsetType = UNSET
    timings: Timings | UnsetType = UNSET


class VlmChatStarted(Event, frozen=True, kw_only=True):
    """The answer about ``image_url`` is being generated for the recognised question ``user_message``."""

    event_name: ClassVar[str] = "vlm_chat_started"
    message: str
    user_message: str
    image_url: str
    turn_id: TurnId | UnsetType = UNSET


class VlmChatChunk(Event, frozen=True, kw_only=True):
    """A piece of the streamed answer and the answer so far."""

    event_name: ClassVar[str] = "vlm_chat_chunk"
    chunk: str
    full_response: str
    turn_id: TurnId | UnsetType = UNSET


class VlmChatTtsComplete(Event, frozen=True, kw_only=True):
    """The answer is complete and spoken; ``audio_chunks`` counts the ``audio_stream`` data events sent."""

    event_name: ClassVar[str] = "vlm_chat_tts_complete"
    message: str
    user_message: str
    assistant_response: str
    audio_chunks: Count
    turn_id: TurnId | UnsetType = UNSET
    timings: Timings | UnsetType = UNSET


#: The events of ``/v1/chat/vlm``.
VLM_EVENTS = EventRegistry(
    "vlm",
    [
        Connected,
        VlmPacketAck,
        VlmComplete,
        TranscriptionStarted,
        TranscriptionPartial,
        VlmChatStarted,
        TtsStarted,
        (AudioStreamData, AudioStreamFinished),
        VlmChatChunk,
        VlmChatTtsComplete,
        ErrorEvent,
    ],
)

VlmPacket = VlmAudioPacket | VlmImagePacket
VlmServerEvent = (
    Connected
    | VlmPacketAck
    | VlmComplete
    | TranscriptionStarted
    | TranscriptionPartial
    | VlmChatStarted
    | TtsStarted
    | AudioStreamData
    | AudioStreamFinished
    | VlmChatChunk
    | VlmChatTtsComplete
    | ErrorEvent
)
VlmClientMessage = VlmAudioPacket | VlmImagePacket | VlmEnd | Cancel
