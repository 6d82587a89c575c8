"""``/v1/realtime``: the OpenAI Realtime protocol (GA), as msgspec Structs, and its codec.

Every frame is a UTF-8 JSON text frame with a ``type``. Client events are one tagged union
(:data:`ClientEvent`); server events are Structs named after OpenAI's (``SessionCreated``,
``ResponseOutputAudioDelta`` ...), each tagged with its GA ``type``.

Older clients and DashScope speak the beta dialect; :func:`decode_client_event` accepts it and normalises it to the
GA form, so the rest of the gateway sees one shape:

================================================  ================================================
beta / DashScope                                  GA (what the gateway works with)
================================================  ================================================
``session.modalities: ["text", "audio"]``         ``session.output_modalities: ["audio"]``
``session.input_audio_format: "pcm16"``           ``session.audio.input.format: {type: audio/pcm}``
``pcm24`` (DashScope, 24 kHz pcm16)              ``audio/pcm``
``g711_ulaw`` / ``g711_alaw``                     ``audio/pcmu`` / ``audio/pcma``
``session.output_audio_format``                   ``session.audio.output.format``
``session.voice``                                 ``session.audio.output.voice``
``session.turn_detection``                        ``session.audio.input.turn_detection``
``session.input_audio_transcription``             ``session.audio.input.transcription``
``session.max_response_output_tokens``            ``session.max_output_tokens``
``response.modalities``                           ``response.output_modalities``
content ``type: "text"`` (assistant)              ``output_text``
================================================  ================================================

A frame that is not a valid client event decodes to a :class:`RealtimeError` (never an exception): the endpoint
answers it with an ``error`` event carrying the client's ``event_id`` (when the frame had one) and keeps the
connection. Codes (``error.code``):

================================  ================================================
frame                             code
================================  ================================================
binary frame                      ``binary_frame``
larger than ``max_frame_bytes``   ``frame_too_large``
not UTF-8 / not JSON              ``invalid_json``
nested too deeply, not an         ``invalid_message``
object, missing/mistyped field
no ``type`` / an unknown one      ``unknown_event``
``audio`` not base64              ``invalid_base64``
================================  ================================================
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "BETA_AUDIO_FORMATS",
    "CLIENT_EVENT_TYPES",
    "REALTIME_LIMITS",
    "SERVER_EVENT_TYPES",
    "AudioConfig",
    "AudioFormat",
    "AudioInputConfig",
    "AudioOutputConfig",
    "ClientEvent",
    "ContentPart",
    "ContentPartOut",
    "ConversationItemAdded",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemDeleted",
    "ConversationItemDone",
    "ConversationItemRetrieve",
    "ConversationItemRetrieved",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorDetail",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionTool",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputAudioBufferSpeechStarted",
    "InputAudioBufferSpeechStopped",
    "InputAudioTranscriptionCompleted",
    "InputAudioTranscriptionDelta",
    "InputAudioTranscriptionFailed",
    "InputImageBufferAppend",
    "Item",
    "MessageItem",
    "RateLimit",
    "RateLimitsUpdated",
    "RealtimeError",
    "RealtimeErrorEvent",
    "RealtimeLimits",
    "Response",
    "ResponseAudioOutput",
    "ResponseCancel",
    "ResponseContentPartAdded",
    "ResponseContentPartDone",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ResponseFunctionCallArgumentsDelta",
    "ResponseFunctionCallArgumentsDone",
    "ResponseOutputAudioDelta",
    "ResponseOutputAudioDone",
    "ResponseOutputAudioTranscriptDelta",
    "ResponseOutputAudioTranscriptDone",
    "ResponseOutputItemAdded",
    "ResponseOutputItemDone",
    "ResponseOutputTextDelta",
    "ResponseOutputTextDone",
    "ResponseParams",
    "ResponseStatusDetails",
    "SemanticVad",
    "ServerEvent",
    "ServerVad",
    "Session",
    "SessionConfig",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "ToolChoiceFunction",
    "TranscriptionConfig",
    "TranscriptionUsage",
    "Usage",
    "decode_client_event",
    "decode_server_event",
    "encode_client_event",
    "encode_server_event",
    "error_event",
]

# ---------------------------------------------------------------------------------------------- shared shapes

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
LongText = Annotated[str, msgspec.Meta(max_length=256 * 1024)]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Milliseconds = Annotated[int, msgspec.Meta(ge=0, le=24 * 3600 * 1000)]
GaFormatName = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
BetaFormatName = Literal["pcm16", "pcm24", "g711_ulaw", "g711_alaw"]
Modality = Literal["text", "audio"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
ResponseStatus = Literal["completed", "cancelled", "failed", "incomplete", "in_progress"]

#: Beta / DashScope audio format names -> GA names.
BETA_AUDIO_FORMATS: Final = {
    "pcm16": "audio/pcm",
    "pcm24": "audio/pcm",  # DashScope's name for Qwen-Omni's 24 kHz output
    "g711_ulaw": "audio/pcmu",
    "g711_alaw": "audio/pcma",
}


class AudioFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    """An audio format: ``audio/pcm`` (16-bit mono little-endian; ``rate`` 24000 unless asked otherwise),
    ``audio/pcmu`` (G.711 mu-law, 8 kHz) or ``audio/pcma`` (G.711 A-law, 8 kHz)."""

    type: GaFormatName = "audio/pcm"
    rate: Literal[8000, 16000, 24000, 48000] | UnsetType = UNSET


class ServerVad(
    msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="server_vad"
):
    """Server voice activity detection: the server finds where speech starts and stops, commits the audio and
    (``create_response``) answers; speech during an answer cancels it (``interrupt_response``)."""

    threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | UnsetType = UNSET
    prefix_padding_ms: Annotated[int, msgspec.Meta(ge=0, le=5000)] | UnsetType = UNSET
    silence_duration_ms: Annotated[int, msgspec.Meta(ge=0, le=10000)] | UnsetType = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET
    idle_timeout_ms: int | UnsetType | None = UNSET


class SemanticVad(
    msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="semantic_vad"
):
    """OpenAI's semantic turn detection. The gateway runs it as server VAD whose end-of-turn pause follows
    ``eagerness`` (see ``protocol.realtime_session.SEMANTIC_SILENCE_MS``); ``session.updated`` shows the
    ``server_vad`` it runs."""

    eagerness: Literal["low", "medium", "high", "auto"] | UnsetType = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET


TurnDetection: TypeAlias = ServerVad | SemanticVad


class TranscriptionConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Transcription of the input audio; ``model`` picks the recogniser from the model catalogue (the
    configured one when absent)."""

    model: ShortText | UnsetType | None = UNSET
    language: ShortText | UnsetType | None = UNSET
    prompt: LongText | UnsetType | None = UNSET


class AudioInputConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Input audio: its format, its transcription and turn detection (``null``: manual commits)."""

    format: AudioFormat | UnsetType = UNSET
    transcription: TranscriptionConfig | UnsetType | None = UNSET
    turn_detection: TurnDetection | UnsetType | None = UNSET
    noise_reduction: dict[str, Any] | UnsetType | None = UNSET


class AudioOutputConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Output audio: its format and the voice."""

    format: AudioFormat | UnsetType = UNSET
    voice: ShortText | UnsetType = UNSET
    speed: float | UnsetType = UNSET


class AudioConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    input: AudioInputConfig | UnsetType = UNSET
    output: AudioOutputConfig | UnsetType = UNSET


class FunctionTool(msgspec.Struct, frozen=True, omit_defaults=True):
    """A function the model may call: its name, what it does, and its JSON Schema ``parameters``."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    type: Literal["function"] = "function"
    description: LongText | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET


class ToolChoiceFunction(msgspec.Struct, frozen=True):
    """Force a call of the named function."""

    name: ShortText
    type: Literal["function"] = "function"


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | ToolChoiceFunction
MaxTokens: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | Literal["inf"]


class SessionConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """The ``session`` of ``session.update``: only the fields given change.

    GA fields, and the beta fields older clients and DashScope send (``modalities``, ``input_audio_format``,
    ``output_audio_format``, ``voice``, ``turn_detection``, ``input_audio_transcription``,
    ``max_response_output_tokens``); :meth:`normalised` moves the beta ones to their GA place.
    """

    type: Literal["realtime"] | UnsetType = UNSET
    model: ShortText | UnsetType = UNSET
    instructions: LongText | UnsetType = UNSET
    output_modalities: Annotated[list[Modality], msgspec.Meta(max_length=2)] | UnsetType = UNSET
    audio: AudioConfig | UnsetType = UNSET
    tools: Annotated[list[FunctionTool], msgspec.Meta(max_length=128)] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    max_output_tokens: MaxTokens | UnsetType | None = UNSET
    temperature: float | UnsetType = UNSET
    # beta / DashScope
    modalities: Annotated[list[Modality], msgspec.Meta(max_length=2)] | UnsetType = UNSET
    input_audio_format: BetaFormatName | UnsetType = UNSET
    output_audio_format: BetaFormatName | UnsetType = UNSET
    voice: ShortText | UnsetType = UNSET
    turn_detection: TurnDetection | UnsetType | None = UNSET
    input_audio_transcription: TranscriptionConfig | UnsetType | None = UNSET
    max_response_output_tokens: MaxTokens | UnsetType | None = UNSET

    def normalised(self) -> SessionConfig:
        """The same settings in GA form only (a GA field given wins over its beta twin)."""
        audio = self.audio if isinstance(self.audio, AudioConfig) else AudioConfig()
        inp = audio.input if isinstance(audio.input, AudioInputConfig) else AudioInputConfig()
        out = audio.output if isinstance(audio.output, AudioOutputConfig) else AudioOutputConfig()
        if inp.format is UNSET and self.input_audio_format is not UNSET:
            inp = msgspec.structs.replace(inp, format=_beta_format(self.input_audio_format))
        if inp.turn_detection is UNSET and self.turn_detection is not UNSET:
            inp = msgspec.structs.replace(inp, turn_detection=self.turn_detection)
        if inp.transcription is UNSET and self.input_audio_transcription is not UNSET:
            inp = msgspec.structs.replace(inp, transcription=self.input_audio_transcription)
        if out.format is UNSET and self.output_audio_format is not UNSET:
            out = msgspec.structs.replace(out, format=_beta_format(self.output_audio_format))
        if out.voice is UNSET and self.voice is not UNSET:
            out = msgspec.structs.replace(out, voice=self.voice)
        modalities = self.output_modalities
        if modalities is UNSET and self.modalities is not UNSET:
            # beta: ["text", "audio"] is an audio answer with its transcript; ["text"] is text only
            modalities = ["audio"] if "audio" in self.modalities else ["text"]
        max_tokens = self.max_output_tokens
        if max_tokens is UNSET:
            max_tokens = self.max_response_output_tokens
        new_audio = AudioConfig(
            input=inp if inp != AudioInputConfig() else UNSET,
            output=out if out != AudioOutputConfig() else UNSET,
        )
        return SessionConfig(
            type=self.type,
            model=self.model,
            instructions=self.instructions,
            output_modalities=modalities,
            audio=new_audio if new_audio != AudioConfig() else UNSET,
            tools=self.tools,
            tool_choice=self.tool_choice,
            max_output_tokens=max_tokens,
            temperature=self.temperature,
        )


def _beta_format(name: str) -> AudioFormat:
    ga = BETA_AUDIO_FORMATS[name]
    return AudioFormat(type=ga, rate=24000) if ga == "audio/pcm" else AudioFormat(type=ga)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- items


class ContentPart(msgspec.Struct, frozen=True, omit_defaults=True):
    """One part of a message: ``input_text`` / ``input_audio`` (user), ``output_text`` / ``output_audio``
    (assistant); beta ``text`` / ``audio`` are read as the assistant's ``output_*``. ``audio`` (base64) is never
    sent back by the gateway; ``transcript`` is the text of an audio part."""

    type: Literal[
        "input_text", "input_audio", "input_image", "output_text", "output_audio", "text", "audio"
    ]
    text: LongText | UnsetType | None = UNSET
    transcript: LongText | UnsetType | None = UNSET
    audio: str | UnsetType | None = UNSET
    image_url: str | UnsetType = UNSET


class MessageItem(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="message"):
    """A message of the conversation (system, user or assistant)."""

    role: Literal["system", "user", "assistant"]
    content: Annotated[list[ContentPart], msgspec.Meta(max_length=64)]
    id: Id | UnsetType = UNSET
    object: Literal["realtime.item"] | UnsetType = UNSET
    status: ItemStatus | UnsetType = UNSET


class FunctionCallItem(
    msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="function_call"
):
    """A call of a function by the model; ``arguments`` is JSON text."""

    name: ShortText
    arguments: LongText
    call_id: Id | UnsetType = UNSET
    id: Id | UnsetType = UNSET
    object: Literal["realtime.item"] | UnsetType = UNSET
    status: ItemStatus | UnsetType = UNSET


class FunctionCallOutputItem(
    msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", tag="function_call_output"
):
    """What a function call returned (the client ran it)."""

    call_id: Id
    output: LongText
    id: Id | UnsetType = UNSET
    object: Literal["realtime.item"] | UnsetType = UNSET
    status: ItemStatus | UnsetType = UNSET


Item: TypeAlias = MessageItem | FunctionCallItem | FunctionCallOutputItem


# ---------------------------------------------------------------------------------------------- client events


class _Client(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="type", kw_only=True):
    event_id: Id | UnsetType = UNSET


class SessionUpdate(_Client, frozen=True, tag="session.update"):
    """Change the session's settings (only the fields given)."""

    session: SessionConfig = msgspec.field(default_factory=SessionConfig)


class InputAudioBufferAppend(_Client, frozen=True, tag="input_audio_buffer.append"):
    """Audio for the input buffer, base64 in the session's input format."""

    audio: bytes = b""


class InputAudioBufferCommit(_Client, frozen=True, tag="input_audio_buffer.commit"):
    """Make the input buffer a user item (manual mode; with server VAD the server commits)."""


class InputAudioBufferClear(_Client, frozen=True, tag="input_audio_buffer.clear"):
    """Drop the audio of the input buffer."""


class InputImageBufferAppend(_Client, frozen=True, tag="input_image_buffer.append"):
    """DashScope's extension (Qwen-Omni): a base64 JPEG/PNG frame for the next turn."""

    image: Annotated[str, msgspec.Meta(max_length=4 * 1024 * 1024)] = ""


class ConversationItemCreate(_Client, frozen=True, tag="conversation.item.create"):
    """Add an item to the conversation: after ``previous_item_id`` (``root``: first), else at the end."""

    item: Item
    previous_item_id: Id | UnsetType | None = UNSET


class ConversationItemTruncate(_Client, frozen=True, tag="conversation.item.truncate"):
    """Cut an assistant item's audio (and its transcript) at ``audio_end_ms`` (what the user heard)."""

    item_id: Id
    audio_end_ms: Milliseconds
    content_index: NonNegative = 0


class ConversationItemDelete(_Client, frozen=True, tag="conversation.item.delete"):
    """Remove an item from the conversation."""

    item_id: Id


class ConversationItemRetrieve(_Client, frozen=True, tag="conversation.item.retrieve"):
    """Ask for the server's copy of an item."""

    item_id: Id


class ResponseParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """Settings of one response (the session's where absent or null)."""

    instructions: LongText | UnsetType | None = UNSET
    output_modalities: Annotated[list[Modality], msgspec.Meta(max_length=2)] | UnsetType = UNSET
    modalities: Annotated[list[Modality], msgspec.Meta(max_length=2)] | UnsetType = UNSET
    tools: Annotated[list[FunctionTool], msgspec.Meta(max_length=128)] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    max_output_tokens: MaxTokens | UnsetType | None = UNSET
    max_response_output_tokens: MaxTokens | UnsetType | None = UNSET
    conversation: Literal["auto", "none"] | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    voice: ShortText | UnsetType = UNSET

    def normalised(self) -> ResponseParams:
        """GA form: beta ``modalities`` / ``max_response_output_tokens`` moved to their GA fields."""
        modalities = self.output_modalities
        if modalities is UNSET and self.modalities is not UNSET:
            modalities = ["audio"] if "audio" in self.modalities else ["text"]
        max_tokens = self.max_output_tokens
        if max_tokens is UNSET:
            max_tokens = self.max_response_output_tokens
        return msgspec.structs.replace(
            self,
            output_modalities=modalities,
            modalities=UNSET,
            max_output_tokens=max_tokens,
            max_response_output_tokens=UNSET,
        )


class ResponseCreate(_Client, frozen=True, tag="response.create"):
    """Answer now (manual mode, or after a tool's output)."""

    response: ResponseParams = msgspec.field(default_factory=ResponseParams)


class ResponseCancel(_Client, frozen=True, tag="response.cancel"):
    """Stop the running response (it ends with ``status: cancelled``)."""

    response_id: Id | UnsetType = UNSET


ClientEvent: TypeAlias = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | InputImageBufferAppend
    | ConversationItemCreate
    | ConversationItemTruncate
    | ConversationItemDelete
    | ConversationItemRetrieve
    | ResponseCreate
    | ResponseCancel
)

#: Every client event, by ``type``.
CLIENT_EVENT_TYPES: Final[dict[str, type[Any]]] = {
    t.__struct_config__.tag: t  # type: ignore[misc]
    for t in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        InputImageBufferAppend,
        ConversationItemCreate,
        ConversationItemTruncate,
        ConversationItemDelete,
        ConversationItemRetrieve,
        ResponseCreate,
        ResponseCancel,
    )
}


# ---------------------------------------------------------------------------------------------- server events


class Session(msgspec.Struct, frozen=True):
    """The session as the server runs it (``session.created`` / ``session.updated``)."""

    id: str
    model: str
    instructions: str
    output_modalities: list[Modality]
    audio: AudioConfig
    tools: list[FunctionTool]
    tool_choice: ToolChoice
    max_output_tokens: int | Literal["inf"]
    type: Literal["realtime"] = "realtime"
    object: Literal["realtime.session"] = "realtime.session"


class ErrorDetail(msgspec.Struct, frozen=True):
    """OpenAI's error: ``type`` (``invalid_request_error``, ``server_error``), a machine ``code``, a message,
    the offending ``param`` and the ``event_id`` of the client event that caused it."""

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


class ResponseStatusDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a response ended as it did: ``cancelled`` by ``turn_detected`` / ``client_cancelled``,
    ``incomplete`` by ``max_output_tokens``, or ``failed`` with an ``error``."""

    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: (
        Literal["turn_detected", "client_cancelled", "max_output_tokens", "content_filter"]
        | UnsetType
    ) = UNSET
    error: ErrorDetail | UnsetType = UNSET


class Usage(msgspec.Struct, frozen=True):
    """Tokens of a response (the chat model's; audio is not counted in tokens by a cascade)."""

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class ResponseAudioOutput(msgspec.Struct, frozen=True):
    output: AudioOutputConfig


class Response(msgspec.Struct, frozen=True):
    """A response: its items and, once done, its status and usage."""

    id: str
    status: ResponseStatus
    output: list[Item]
    output_modalities: list[Modality]
    conversation_id: str
    status_details: ResponseStatusDetails | None = None
    usage: Usage | None = None
    max_output_tokens: int | Literal["inf"] = "inf"
    audio: ResponseAudioOutput | None = None
    metadata: dict[str, str] | None = None
    object: Literal["realtime.response"] = "realtime.response"


class RateLimit(msgspec.Struct, frozen=True):
    name: Literal["requests", "tokens"]
    limit: int
    remaining: int
    reset_seconds: float


class TranscriptionUsage(msgspec.Struct, frozen=True):
    """Recognised audio, in seconds."""

    seconds: float
    type: Literal["duration"] = "duration"


class _Server(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    event_id: str = ""


class SessionCreated(_Server, frozen=True, tag="session.created"):
    """The first event of every connection: the session's settings."""

    session: Session


class SessionUpdated(_Server, frozen=True, tag="session.updated"):
    """The settings after a ``session.update``."""

    session: Session


class InputAudioBufferSpeechStarted(_Server, frozen=True, tag="input_audio_buffer.speech_started"):
    """Server VAD heard speech start (``audio_start_ms`` from the start of the session's audio)."""

    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(_Server, frozen=True, tag="input_audio_buffer.speech_stopped"):
    """Server VAD heard speech end."""

    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(_Server, frozen=True, tag="input_audio_buffer.committed"):
    """The input buffer became the user item ``item_id``."""

    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(_Server, frozen=True, tag="input_audio_buffer.cleared"):
    """The input buffer was emptied."""


class ConversationItemAdded(_Server, frozen=True, tag="conversation.item.added"):
    """An item joined the conversation (its content may still grow)."""

    item: Item
    previous_item_id: str | None = None


class ConversationItemDone(_Server, frozen=True, tag="conversation.item.done"):
    """An item is complete."""

    item: Item
    previous_item_id: str | None = None


class ConversationItemRetrieved(_Server, frozen=True, tag="conversation.item.retrieved"):
    """The server's copy of an item (``conversation.item.retrieve``)."""

    item: Item


class ConversationItemTruncated(_Server, frozen=True, tag="conversation.item.truncated"):
    """An assistant item's audio was cut at ``audio_end_ms``."""

    item_id: str
    content_index: int
    audio_end_ms: int


class ConversationItemDeleted(_Server, frozen=True, tag="conversation.item.deleted"):
    """An item left the conversation."""

    item_id: str


class InputAudioTranscriptionDelta(
    _Server, frozen=True, tag="conversation.item.input_audio_transcription.delta"
):
    """More of the user's words, as they are recognised."""

    item_id: str
    content_index: int
    delta: str


class InputAudioTranscriptionCompleted(
    _Server, frozen=True, tag="conversation.item.input_audio_transcription.completed"
):
    """The final transcript of a user audio item."""

    item_id: str
    content_index: int
    transcript: str
    usage: TranscriptionUsage


class InputAudioTranscriptionFailed(
    _Server, frozen=True, tag="conversation.item.input_audio_transcription.failed"
):
    """Recognition of a user audio item failed."""

    item_id: str
    content_index: int
    error: ErrorDetail


class ResponseCreated(_Server, frozen=True, tag="response.created"):
    """A response started."""

    response: Response


class ResponseDone(_Server, frozen=True, tag="response.done"):
    """A response ended: ``completed``, ``cancelled``, ``incomplete`` or ``failed``, with its usage."""

    response: Response


class ResponseOutputItemAdded(_Server, frozen=True, tag="response.output_item.added"):
    response_id: str
    output_index: int
    item: Item


class ResponseOutputItemDone(_Server, frozen=True, tag="response.output_item.done"):
    response_id: str
    output_index: int
    item: Item


class ContentPartOut(msgspec.Struct, frozen=True, omit_defaults=True):
    """A content part of a response item: ``audio`` (with its ``transcript``) or ``text``."""

    type: Literal["audio", "text"]
    transcript: str | UnsetType = UNSET
    text: str | UnsetType = UNSET


class _Part(_Server, frozen=True, kw_only=True):
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class ResponseContentPartAdded(_Part, frozen=True, tag="response.content_part.added"):
    part: ContentPartOut


class ResponseContentPartDone(_Part, frozen=True, tag="response.content_part.done"):
    part: ContentPartOut


class ResponseOutputAudioDelta(_Part, frozen=True, tag="response.output_audio.delta"):
    """Audio of the answer, base64 in the session's output format."""

    delta: str


class ResponseOutputAudioDone(_Part, frozen=True, tag="response.output_audio.done"):
    """The answer's audio ended."""


class ResponseOutputAudioTranscriptDelta(
    _Part, frozen=True, tag="response.output_audio_transcript.delta"
):
    """Text of the spoken answer, as it is generated."""

    delta: str


class ResponseOutputAudioTranscriptDone(
    _Part, frozen=True, tag="response.output_audio_transcript.done"
):
    transcript: str


class ResponseOutputTextDelta(_Part, frozen=True, tag="response.output_text.delta"):
    """Text of a text-only answer."""

    delta: str


class ResponseOutputTextDone(_Part, frozen=True, tag="response.output_text.done"):
    text: str


class ResponseFunctionCallArgumentsDelta(
    _Server, frozen=True, tag="response.function_call_arguments.delta"
):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(
    _Server, frozen=True, tag="response.function_call_arguments.done"
):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


class RateLimitsUpdated(_Server, frozen=True, tag="rate_limits.updated"):
    """The caller's limits after a response (requests this minute, tokens today)."""

    rate_limits: list[RateLimit]


class RealtimeErrorEvent(_Server, frozen=True, tag="error"):
    """Something went wrong; ``error.event_id`` names the client event that caused it. The connection stays
    open unless the server closes it."""

    error: ErrorDetail


ServerEvent: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemRetrieved
    | ConversationItemTruncated
    | ConversationItemDeleted
    | InputAudioTranscriptionDelta
    | InputAudioTranscriptionCompleted
    | InputAudioTranscriptionFailed
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | RateLimitsUpdated
    | RealtimeErrorEvent
)

#: Every server event type, in the order above.
SERVER_EVENT_TYPES: Final[tuple[type[Any], ...]] = ServerEvent.__args__


# ---------------------------------------------------------------------------------------------- codec


class RealtimeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the realtime endpoint: the largest text frame, in UTF-8 bytes."""

    max_frame_bytes: int = 1024 * 1024


#: The default limits.
REALTIME_LIMITS: Final = RealtimeLimits()


class RealtimeError(msgspec.Struct, frozen=True):
    """A client event the gateway refuses (bad frame, bad field, or a rule of the session).

    ``event_id``: the offending client event's id, when it had one; ``param``: the field at fault.
    """

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None
    type: str = "invalid_request_error"

    def with_event(self, event_id: str | UnsetType | None) -> RealtimeError:
        """This error naming the client event ``event_id`` (when the event had one)."""
        if not isinstance(event_id, str):
            return self
        return msgspec.structs.replace(self, event_id=event_id)


def error_event(error: RealtimeError) -> RealtimeErrorEvent:
    """The ``error`` event reporting ``error``."""
    return RealtimeErrorEvent(
        error=ErrorDetail(
            type=error.type,
            code=error.code,
            message=error.message,
            param=error.param,
            event_id=error.event_id,
        )
    )


class _Probe(msgspec.Struct):
    type: Any = None
    event_id: Any = None


_probe = msgspec.json.Decoder(_Probe)
_client: msgspec.json.Decoder[ClientEvent] = msgspec.json.Decoder(ClientEvent)
_server: msgspec.json.Decoder[ServerEvent] = msgspec.json.Decoder(ServerEvent)
_encoder = msgspec.json.Encoder()


def _param(text: str) -> str | None:
    """``session.audio`` from msgspec's ``... - at `$.session.audio```."""
    _, sep, where = text.rpartition(" - at `")
    if not sep:
        return None
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    return path or None


def decode_client_event(
    frame: str | bytes, limits: RealtimeLimits = REALTIME_LIMITS
) -> ClientEvent | RealtimeError:
    """Decode and normalise one client frame; a frame that is not a valid event gives a :class:`RealtimeError`
    (see the module docstring for the codes). Never raises."""
    if not isinstance(frame, str):
        return RealtimeError(
            "binary_frame", "binary frames are not accepted: send JSON text frames"
        )
    limit = limits.max_frame_bytes
    if len(frame) > limit:
        return RealtimeError("frame_too_large", f"frame larger than {limit} bytes")
    try:
        data = frame.encode("utf-8")
    except UnicodeEncodeError:
        return RealtimeError("invalid_json", "not valid UTF-8 text")
    if len(data) > limit:
        return RealtimeError("frame_too_large", f"frame of {len(data)} bytes, larger than {limit}")
    try:
        probe = _probe.decode(data)
    except msgspec.ValidationError:
        return RealtimeError("invalid_message", "a client event is a JSON object with a type")
    except msgspec.DecodeError as exc:
        return RealtimeError("invalid_json", f"not a JSON document: {exc}")
    except RecursionError:
        return RealtimeError("invalid_message", "JSON nested too deeply")
    event_id = probe.event_id if isinstance(probe.event_id, str) and probe.event_id else None
    kind = probe.type
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:
        shown = kind if isinstance(kind, str) else None
        return RealtimeError(
            "unknown_event",
            f"unknown client event type {shown[:64]!r}" if shown else "the event has no type",
            param="type",
            event_id=event_id,
        )
    try:
        event = _client.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = "invalid_base64" if "base64" in text else "invalid_message"
        return RealtimeError(code, text, param=_param(text), event_id=event_id)
    except (msgspec.DecodeError, RecursionError):
        return RealtimeError("invalid_message", "JSON nested too deeply", event_id=event_id)
    if isinstance(event, SessionUpdate):
        return msgspec.structs.replace(event, session=event.session.normalised())
    if isinstance(event, ResponseCreate):
        return msgspec.structs.replace(event, response=event.response.normalised())
    return event


def encode_client_event(event: ClientEvent) -> str:
    """The text frame a client sends for ``event`` (tests, benchmarks)."""
    return _encoder.encode(event).decode("utf-8")


def encode_server_event(event: ServerEvent, event_id: str = "") -> str:
    """The text frame of ``event``; ``event_id`` is stamped when the event has none."""
    if event_id and not event.event_id:
        event = msgspec.structs.replace(event, event_id=event_id)
    return _encoder.encode(event).decode("utf-8")


def decode_server_event(frame: str | bytes) -> ServerEvent:
    """Decode a server event (the client side, tests). Raises ``msgspec.MsgspecError`` on a bad frame."""
    return _server.decode(frame)
