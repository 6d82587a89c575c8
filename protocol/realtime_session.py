"""The rules of a ``/v1/realtime`` session, without I/O: its settings and its conversation.

:class:`SessionState` is the session's settings; :meth:`SessionState.apply` merges a (normalised)
``session.update`` into it, field by field, or refuses it with a :class:`~protocol.realtime.RealtimeError`.

:class:`Conversation` is the ordered list of items with their ids: ``conversation.item.create`` (after
``previous_item_id``, ``root`` for first, else at the end), ``delete``, ``retrieve`` and ``truncate``, and the chat
messages a cascade sends to the model (:meth:`Conversation.chat_messages`).

Truncation keeps the text in proportion to the audio heard: an assistant item whose audio lasted ``total`` ms,
cut at ``audio_end_ms``, keeps the first ``len(transcript) * audio_end_ms / total`` characters of its transcript
(:func:`heard_text`). Speech runs at a roughly even pace, so this is what the user heard, give or take a word; the
next request to the model then sees only that.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET

from .realtime import (
    AudioConfig,
    AudioFormat,
    AudioInputConfig,
    AudioOutputConfig,
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    Item,
    MessageItem,
    RealtimeError,
    SemanticVad,
    ServerVad,
    Session,
    SessionConfig,
    ToolChoiceFunction,
    TranscriptionConfig,
)

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_VAD",
    "OPENAI_VOICES",
    "SEMANTIC_SILENCE_MS",
    "Conversation",
    "SessionState",
    "VadConfig",
    "heard_text",
    "item_text",
    "user_text_item",
]

#: The input rate of ``audio/pcm`` when the client does not name one (OpenAI's only rate).
DEFAULT_PCM_RATE: Final = 24000
#: G.711's rate.
G711_RATE: Final = 8000
#: The default format both ways: pcm16 at 24 kHz.
DEFAULT_FORMAT: Final = AudioFormat("audio/pcm", DEFAULT_PCM_RATE)


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Server VAD with every setting resolved (OpenAI's defaults where the client gave none)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def merged(self, given: ServerVad) -> VadConfig:
        """These settings with those ``given`` (a field left out keeps its value)."""
        changes = {
            name: getattr(given, name)
            for name in (
                "threshold",
                "prefix_padding_ms",
                "silence_duration_ms",
                "create_response",
                "interrupt_response",
            )
            if getattr(given, name) is not UNSET
        }
        return replace(self, **changes)

    def wire(self) -> ServerVad:
        return ServerVad(
            threshold=self.threshold,
            prefix_padding_ms=self.prefix_padding_ms,
            silence_duration_ms=self.silence_duration_ms,
            create_response=self.create_response,
            interrupt_response=self.interrupt_response,
        )


DEFAULT_VAD: Final = VadConfig()

#: OpenAI's built-in voices: no Qwen TTS has them, so asking for one keeps the configured voice (clients and
#: frameworks send ``alloy`` or ``marin`` by default; a Qwen voice name is passed on as it is).
OPENAI_VOICES: Final = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)

#: ``semantic_vad`` is run as server VAD: its ``eagerness`` -> the pause (ms) that ends a turn.
SEMANTIC_SILENCE_MS: Final = {"low": 1200, "medium": 700, "auto": 700, "high": 400}


def _format(given: AudioFormat, param: str) -> AudioFormat | RealtimeError:
    """``given`` with its rate filled in; G.711 only at 8 kHz."""
    if given.type == "audio/pcm":
        return given if given.rate is not UNSET else DEFAULT_FORMAT
    if given.rate not in (UNSET, G711_RATE):
        return RealtimeError(
            "invalid_value", f"{given.type} is 8000 Hz, not {given.rate}", param=f"{param}.rate"
        )
    return AudioFormat(given.type, G711_RATE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState:
    """The settings of a realtime session.

    Attributes:
        id: the session's id. model: the model named at the handshake (the chat model of a cascade).
        instructions: the system prompt. output_modalities: ``["audio"]`` (speech and its transcript) or
        ``["text"]``. input_format / output_format: audio on the wire. voice: the TTS voice ("" for the
        synthesiser's default). turn_detection: server VAD, or None for manual commits. transcription_model:
        the recogniser (None: the configured one). tools / tool_choice: functions the model may call.
        max_output_tokens: a cap per response, or ``inf``.
    """

    id: str
    model: str
    instructions: str = ""
    output_modalities: tuple[Literal["text", "audio"], ...] = ("audio",)
    input_format: AudioFormat = DEFAULT_FORMAT
    output_format: AudioFormat = DEFAULT_FORMAT
    voice: str = ""
    turn_detection: VadConfig | None = DEFAULT_VAD
    transcription_model: str | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: Any = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"
    #: the voice cannot change once the session has spoken (OpenAI's rule)
    spoken: bool = False

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    def apply(self, config: SessionConfig) -> SessionState | RealtimeError:
        """This state with a normalised ``session.update``'s fields, or the first field refused."""
        changes: dict[str, Any] = {}
        if config.instructions is not UNSET:
            changes["instructions"] = config.instructions
        if config.output_modalities is not UNSET:
            mods = config.output_modalities
            if not mods:
                return RealtimeError(
                    "invalid_value", "output_modalities is empty", param="session.output_modalities"
                )
            changes["output_modalities"] = ("audio",) if "audio" in mods else ("text",)
        if config.tools is not UNSET:
            names = [t.name for t in config.tools]
            if len(set(names)) != len(names):
                return RealtimeError(
                    "invalid_value", "two tools have the same name", param="session.tools"
                )
            changes["tools"] = tuple(config.tools)
        if config.tool_choice is not UNSET:
            changes["tool_choice"] = config.tool_choice
        if config.max_output_tokens is not UNSET:
            changes["max_output_tokens"] = (
                "inf" if config.max_output_tokens is None else config.max_output_tokens
            )
        audio = config.audio
        if isinstance(audio, AudioConfig):
            refused = self._audio(audio, changes)
            if refused is not None:
                return refused
        state = replace(self, **changes)
        choice = state.tool_choice
        if isinstance(choice, ToolChoiceFunction) and choice.name not in {
            t.name for t in state.tools
        }:
            return RealtimeError(
                "invalid_value",
                f"tool_choice names {choice.name!r}, which is not a tool of the session",
                param="session.tool_choice",
            )
        return state

    def _audio(self, audio: AudioConfig, changes: dict[str, Any]) -> RealtimeError | None:
        inp, out = audio.input, audio.output
        if isinstance(inp, AudioInputConfig):
            if isinstance(inp.format, AudioFormat):
                fmt = _format(inp.format, "session.audio.input.format")
                if isinstance(fmt, RealtimeError):
                    return fmt
                changes["input_format"] = fmt
            if inp.turn_detection is None:
                changes["turn_detection"] = None
            elif isinstance(inp.turn_detection, ServerVad):
                base = self.turn_detection or DEFAULT_VAD
                changes["turn_detection"] = base.merged(inp.turn_detection)
            elif isinstance(inp.turn_detection, SemanticVad):
                semantic = inp.turn_detection
                eagerness = semantic.eagerness if isinstance(semantic.eagerness, str) else "auto"
                changes["turn_detection"] = DEFAULT_VAD.merged(
                    ServerVad(
                        silence_duration_ms=SEMANTIC_SILENCE_MS[eagerness],
                        create_response=semantic.create_response,
                        interrupt_response=semantic.interrupt_response,
                    )
                )
            if inp.transcription is None:
                changes["transcription_model"] = None
            elif isinstance(inp.transcription, TranscriptionConfig):
                model = inp.transcription.model
                changes["transcription_model"] = model if isinstance(model, str) and model else None
        if isinstance(out, AudioOutputConfig):
            if isinstance(out.format, AudioFormat):
                fmt = _format(out.format, "session.audio.output.format")
                if isinstance(fmt, RealtimeError):
                    return fmt
                changes["output_format"] = fmt
            voice = out.voice
            if isinstance(voice, str) and voice.lower() in OPENAI_VOICES:
                voice = ""  # the configured voice
            if voice is not UNSET and voice != self.voice:
                if self.spoken:
                    return RealtimeError(
                        "cannot_update_voice",
                        "the voice cannot change once the session has spoken",
                        param="session.audio.output.voice",
                    )
                changes["voice"] = voice
        return None

    def view(self) -> Session:
        """The session as ``session.created`` / ``session.updated`` show it."""
        transcription = (
            TranscriptionConfig(model=self.transcription_model)
            if self.transcription_model
            else None
        )
        return Session(
            id=self.id,
            model=self.model,
            instructions=self.instructions,
            output_modalities=list(self.output_modalities),
            audio=AudioConfig(
                input=AudioInputConfig(
                    format=self.input_format,
                    transcription=transcription,
                    turn_detection=None
                    if self.turn_detection is None
                    else self.turn_detection.wire(),
                ),
                output=AudioOutputConfig(
                    format=self.output_format, voice=self.voice if self.voice else UNSET
                ),
            ),
            tools=list(self.tools),
            tool_choice=self.tool_choice,
            max_output_tokens=self.max_output_tokens,
        )


# ---------------------------------------------------------------------------------------------- conversation


def item_text(item: Item) -> str:
    """The words of an item: a message's texts and transcripts, a call's arguments, an output."""
    if isinstance(item, MessageItem):
        parts: list[str] = []
        for part in item.content:
            for value in (part.text, part.transcript):
                if isinstance(value, str) and value:
                    parts.append(value)
        return " ".join(parts)
    if isinstance(item, FunctionCallItem):
        return item.arguments
    return item.output


def heard_text(text: str, audio_end_ms: int, total_ms: int) -> str:
    """The part of ``text`` said in the first ``audio_end_ms`` of ``total_ms`` of speech (in proportion)."""
    if total_ms <= 0 or audio_end_ms >= total_ms:
        return text
    keep = round(len(text) * max(audio_end_ms, 0) / total_ms)
    return text[:keep]


@dataclass(slots=True)
class _Entry:
    item: Item
    audio_ms: int = 0  # the audio of an assistant item sent so far (for truncation)


@dataclass(slots=True)
class Conversation:
    """The items of a session, in order, with the rules of the client events that change them.

    ``prefix`` makes the ids of this session (``item_<prefix>_<n>``) distinct from another's.
    """

    prefix: str
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str = "item") -> str:
        """A fresh id: ``item_...``, ``resp_...``, ``call_...``."""
        return f"{kind}_{self.prefix}{next(self._counter):04d}"

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Item]:
        return (self._entries[i].item for i in self._order)

    @property
    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def get(self, item_id: str) -> Item | None:
        entry = self._entries.get(item_id)
        return entry.item if entry is not None else None

    def previous_id(self, item_id: str) -> str | None:
        """The id of the item before ``item_id`` (None for the first)."""
        at = self._order.index(item_id)
        return self._order[at - 1] if at else None

    def add(
        self, item: Item, previous_item_id: str | Any | None = UNSET
    ) -> tuple[Item, str | None] | RealtimeError:
        """Insert ``item`` (given an id when it has none); returns it and the id of the item before it.

        ``previous_item_id``: insert after that item; ``root``: first; absent or None: at the end.
        """
        item_id = item.id if isinstance(item.id, str) else self.new_id()
        if item_id in self._entries:
            return RealtimeError(
                "item_already_exists", f"an item {item_id!r} already exists", param="item.id"
            )
        if isinstance(previous_item_id, str) and previous_item_id != "root":
            if previous_item_id not in self._entries:
                return RealtimeError(
                    "item_not_found",
                    f"no item {previous_item_id!r} in the conversation",
                    param="previous_item_id",
                )
            at = self._order.index(previous_item_id) + 1
        elif previous_item_id == "root":
            at = 0
        else:
            at = len(self._order)
        item = msgspec.structs.replace(
            item,
            id=item_id,
            object="realtime.item",
            status=item.status if isinstance(item.status, str) else "completed",
        )
        self._entries[item_id] = _Entry(item)
        self._order.insert(at, item_id)
        return item, (self._order[at - 1] if at else None)

    def update(self, item: Item) -> None:
        """Replace the stored copy of ``item`` (same id): an answer's text and status as they grow."""
        assert isinstance(item.id, str)
        self._entries[item.id].item = item

    def set_audio_ms(self, item_id: str, audio_ms: int) -> None:
        """How much audio of ``item_id`` was sent to the client so far."""
        entry = self._entries.get(item_id)
        if entry is not None:
            entry.audio_ms = audio_ms

    def audio_ms(self, item_id: str) -> int:
        entry = self._entries.get(item_id)
        return entry.audio_ms if entry is not None else 0

    def delete(self, item_id: str) -> RealtimeError | None:
        if item_id not in self._entries:
            return RealtimeError(
                "item_not_found", f"no item {item_id!r} in the conversation", param="item_id"
            )
        del self._entries[item_id]
        self._order.remove(item_id)
        return None

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> Item | RealtimeError:
        """Cut an assistant audio item at ``audio_end_ms``: its transcript keeps what was said by then."""
        entry = self._entries.get(item_id)
        if entry is None:
            return RealtimeError(
                "item_not_found", f"no item {item_id!r} in the conversation", param="item_id"
            )
        item = entry.item
        if not (isinstance(item, MessageItem) and item.role == "assistant"):
            return RealtimeError(
                "invalid_value", "only assistant messages can be truncated", param="item_id"
            )
        if content_index >= len(item.content) or item.content[content_index].type not in (
            "output_audio",
            "audio",
        ):
            return RealtimeError(
                "invalid_value",
                f"content {content_index} of the item is not audio",
                param="content_index",
            )
        if audio_end_ms > entry.audio_ms:
            return RealtimeError(
                "invalid_value",
                f"audio_end_ms {audio_end_ms} is beyond the item's {entry.audio_ms} ms of audio",
                param="audio_end_ms",
            )
        part = item.content[content_index]
        transcript = part.transcript if isinstance(part.transcript, str) else ""
        cut = msgspec.structs.replace(
            part, transcript=heard_text(transcript, audio_end_ms, entry.audio_ms)
        )
        content = [*item.content]
        content[content_index] = cut
        item = msgspec.structs.replace(item, content=content, status="incomplete")
        entry.item = item
        entry.audio_ms = audio_end_ms
        return item

    def chat_messages(self, instructions: str = "") -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages: instructions as the system message, messages by role,
        function calls as the assistant's ``tool_calls``, their outputs as ``tool`` messages. Empty messages
        (a user item nothing was heard in) are left out."""
        messages: list[dict[str, Any]] = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        for item in self:
            if isinstance(item, MessageItem):
                text = item_text(item)
                if text:
                    messages.append({"role": item.role, "content": text})
            elif isinstance(item, FunctionCallItem):
                call = {
                    "id": item.call_id if isinstance(item.call_id, str) else item.id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments},
                }
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant":
                    last.setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            elif isinstance(item, FunctionCallOutputItem):
                messages.append(
                    {"role": "tool", "tool_call_id": item.call_id, "content": item.output}
                )
        return messages


def user_text_item(text: str) -> MessageItem:
    """A user message of ``text``."""
    return MessageItem(role="user", content=[ContentPart(type="input_text", text=text)])
