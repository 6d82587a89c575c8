"""``/v1/chat/audio``: the client's packets and the twelve server events of the seed contract.

Client to server: :class:`AudioPacket` (``seq``, ``total``, ``data``; no ``type``), and the additive
:class:`~protocol.events.Cancel` (``{"type": "cancel"}``). ``seq`` 1 of a new upload starts a new utterance.

Server to client, in the seed's order: ``connected``, ``packet_ack``, ``transcription_started``,
``chat_started`` (with ``user_message``), ``tts_started``, ``audio_stream`` (``event: "data"``),
``audio_stream`` (``event: "finished"``), ``chat_tts_complete``, ``audio_complete``, ``chat_started`` (the skip
message, without ``user_message``), ``chat_chunk``, ``error``. The ``MSG_*`` constants here and in :mod:`protocol.events` are the seed's texts.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from msgspec import UNSET, Meta, UnsetType

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
    "AUDIO_EVENTS",
    "MSG_AUDIO_COMPLETE",
    "MSG_AUDIO_CONNECTED",
    "MSG_CHAT_SKIPPED",
    "MSG_CHAT_STARTED",
    "MSG_CHAT_TTS_COMPLETE",
    "AudioClientMessage",
    "AudioComplete",
    "AudioEnd",
    "AudioPacket",
    "AudioServerEvent",
    "ChatChunk",
    "ChatStarted",
    "ChatTtsComplete",
    "OpenAudioPacket",
    "PacketAck",
    "StreamClientMessage",
]

MSG_AUDIO_CONNECTED = "音频连接已建立"
MSG_CHAT_STARTED = "开始生成AI回答..."
MSG_CHAT_SKIPPED = "跳过对话生成：语音识别失败或结果为空"
MSG_CHAT_TTS_COMPLETE = "实时对话生成和语音合成完成"
MSG_AUDIO_COMPLETE = "音频接收、识别、对话生成和实时语音合成全部完成"


class AudioPacket(ClientMessage, frozen=True, kw_only=True):
    """One packet of an utterance's audio upload.

    ``data`` is standard base64 (with padding) of at most 8 KiB of audio by default. Packets may arrive out of
    order; an exact repeat is acknowledged again. ``seq`` 1 of a new upload starts a new utterance (and
    interrupts a running turn).
    """

    seq: Seq
    total: Total
    data: bytes


class OpenAudioPacket(ClientMessage, frozen=True, kw_only=True):
    """With ``mode=stream`` at the handshake: one packet of an open-microphone upload, whose number of packets
    is not known in advance (``total`` 0 or left out).

    ``seq`` counts from 1; ``seq`` 1 starts a new utterance. The utterance ends on :class:`AudioEnd` or when the
    server hears the end of the speech (``silence_ms`` of silence); packets of an ended utterance are
    acknowledged and dropped until the next ``seq`` 1. A packet with a ``total`` of 1 or more is a seed
    :class:`AudioPacket`.
    """

    seq: Seq
    total: Literal[0] | UnsetType = UNSET
    data: bytes


class AudioEnd(ClientMessage, tag_field="type", tag="end", frozen=True, kw_only=True):
    """With ``mode=stream``: the open-microphone upload is complete (``{"type": "end"}``); ignored when the
    server already ended it on the end of speech."""


class PacketAck(Event, frozen=True, kw_only=True):
    """A packet was accepted; ``received`` counts the distinct packets of the upload so far.

    ``duplicate`` (additive) is true when the packet repeated one already received (nothing changed).
    ``total`` is 0 for an open-microphone upload (``mode=stream``), whose number of packets is not known.
    """

    event_name: ClassVar[str] = "packet_ack"
    seq: Seq
    received: Count
    total: Annotated[
        int,
        Meta(
            ge=0,
            le=2**31 - 1,
            description="Number of packets in this upload; 0 for an open-microphone upload (mode=stream).",
        ),
    ]
    turn_id: TurnId | UnsetType = UNSET
    duplicate: bool | UnsetType = UNSET


class ChatStarted(Event, frozen=True, kw_only=True):
    """The answer is being generated for ``user_message``; or, without ``user_message``, the seed's skip
    message: recognition failed or heard nothing, so no answer will come for this turn."""

    event_name: ClassVar[str] = "chat_started"
    message: str
    user_message: str | UnsetType = UNSET
    turn_id: TurnId | UnsetType = UNSET


class ChatChunk(Event, frozen=True, kw_only=True):
    """A piece of the streamed answer and the answer so far."""

    event_name: ClassVar[str] = "chat_chunk"
    chunk: str
    full_response: str
    turn_id: TurnId | UnsetType = UNSET


class ChatTtsComplete(Event, frozen=True, kw_only=True):
    """The answer is complete and spoken."""

    event_name: ClassVar[str] = "chat_tts_complete"
    message: str
    assistant_response: str
    tts_success: bool
    segments_count: Count
    total_segments: Count
    db_saved: bool
    turn_id: TurnId | UnsetType = UNSET
    timings: Timings | UnsetType = UNSET


class AudioComplete(Event, frozen=True, kw_only=True):
    """The whole turn is done: upload, recognition, answer and speech. ``duration`` is in seconds."""

    event_name: ClassVar[str] = "audio_complete"
    message: str
    filename: str
    filepath: str
    size: ByteCount
    packets: Count
    duration: Seconds
    oss_uploaded: bool
    oss_url: str | None
    transcription_success: bool
    transcription_text: str
    chat_success: bool
    assistant_response: str
    tts_success: bool
    turn_id: TurnId | UnsetType = UNSET
    timings: Timings | UnsetType = UNSET


#: The events of ``/v1/chat/audio``.
AUDIO_EVENTS = EventRegistry(
    "audio",
    [
        Connected,
        PacketAck,
        TranscriptionStarted,
        TranscriptionPartial,
        ChatStarted,
        TtsStarted,
        (AudioStreamData, AudioStreamFinished),
        ChatTtsComplete,
        AudioComplete,
        ChatChunk,
        ErrorEvent,
    ],
)

AudioServerEvent = (
    Connected
    | PacketAck
    | TranscriptionStarted
    | TranscriptionPartial
    | ChatStarted
    | TtsStarted
    | AudioStreamData
    | AudioStreamFinished
    | ChatTtsComplete
    | AudioComplete
    | ChatChunk
    | ErrorEvent
)
AudioClientMessage = AudioPacket | Cancel
#: What a client of ``mode=stream`` may also send.
StreamClientMessage = AudioPacket | OpenAudioPacket | AudioEnd | Cancel
