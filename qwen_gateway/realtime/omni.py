"""The Qwen-Omni backend of ``/v1/realtime``: one client session passed through to one DashScope realtime session.

The client speaks the GA OpenAI Realtime protocol (events already validated and normalised to GA names by the
endpoint); Qwen-Omni speaks DashScope's beta-shaped dialect of it (``dashscope-protocols.md`` §7, §10).
:class:`OmniBridge` translates both ways, with the tables below:

* client events: :data:`CLIENT_EVENTS` (GA name -> DashScope name); ``session.update`` field by field
  (:data:`SESSION_FIELDS`); audio in the client's format (``audio/pcm`` 24 kHz, G.711 8 kHz) resampled to the
  model's 16 kHz PCM16 (:class:`~qwen_gateway.voice.convert.InputConverter`); DashScope's
  ``input_image_buffer.append`` passed through;
* server events: :data:`SERVER_EVENTS` (DashScope name -> GA name), content types (:data:`CONTENT_TYPES`),
  modalities (:data:`MODALITIES_TO_GA`); Omni's 24 kHz PCM converted to the client's format
  (:class:`~qwen_gateway.voice.convert.OutputConverter`); ``conversation.item.added`` / ``.done`` for every item;
  ``session.created`` / ``.updated`` in GA shape, describing the session as the client sees it.

Barge-in is Omni's own (its server VAD cancels the response); ``response.cancel`` passes through; the client's
``conversation.item.truncate`` (what it played) is answered by the bridge (:data:`LOCAL_EVENTS`). Upstream
``error`` events become GA ``error`` events whose ``event_id`` is the offending client event's; a dropped or
silent upstream gives one ``error`` event (``upstream_closed``, ``upstream_timeout``) and ends the bridge.
Every answered ``response.done`` is reported to the endpoint as an :class:`OmniTurn` (history, quotas) and its
tokens as :class:`OmniUsage`.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection

from protocol.realtime_session import SEMANTIC_SILENCE_MS

from ..config import Settings
from ..errors import UpstreamError
from ..logs import upstream_fields
from ..providers.dashscope import errors
from ..providers.dashscope.asr_qwen_realtime import MAX_AUDIO_CHUNK
from ..providers.dashscope.catalogue import CatalogueError, OmniModel, omni_model
from ..providers.dashscope.policy import Backoff, Timeouts
from ..providers.dashscope.tts_qwen import with_model
from ..providers.dashscope.ws import WsSession, open_session, session_scope
from ..voice.convert import InputConverter, OutputConverter, WireFormat, wire_format, wire_ms

__all__ = [
    "CLIENT_EVENTS",
    "CONTENT_TYPES",
    "LOCAL_EVENTS",
    "OPENAI_VOICES",
    "SERVER_EVENTS",
    "SESSION_FIELDS",
    "OmniBridge",
    "OmniTimings",
    "OmniTurn",
    "OmniUsage",
    "is_omni_model",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ the tables

#: Client events (GA names) and the DashScope event each becomes. ``session.update``, ``response.create``,
#: ``input_audio_buffer.append`` and ``conversation.item.create`` are rewritten on the way (their translators
#: are :meth:`OmniBridge._client_event`'s table); the others pass as they are.
CLIENT_EVENTS: Mapping[str, str] = {
    "session.update": "session.update",
    "input_audio_buffer.append": "input_audio_buffer.append",
    "input_audio_buffer.commit": "input_audio_buffer.commit",
    "input_audio_buffer.clear": "input_audio_buffer.clear",
    "input_image_buffer.append": "input_image_buffer.append",  # DashScope's extension (a JPEG frame)
    "conversation.item.create": "conversation.item.create",
    # not in DashScope's list of client events: passed on, and its answer (an error, today) passed back
    "conversation.item.delete": "conversation.item.delete",
    "conversation.item.retrieve": "conversation.item.retrieve",
    "response.create": "response.create",
    "response.cancel": "response.cancel",
}

#: Client events the bridge answers itself (with this event), DashScope having no such event: a client's
#: truncation after a barge-in cuts the audio it kept; Omni's own context is not cut.
LOCAL_EVENTS: Mapping[str, str] = {"conversation.item.truncate": "conversation.item.truncated"}

#: Server events (DashScope's beta names) and the GA event each becomes; others are not passed on.
SERVER_EVENTS: Mapping[str, str] = {
    "session.created": "session.created",
    "session.updated": "session.updated",
    "input_audio_buffer.speech_started": "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped": "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed": "input_audio_buffer.committed",
    "input_audio_buffer.cleared": "input_audio_buffer.cleared",
    "conversation.item.created": "conversation.item.added",
    "conversation.item.deleted": "conversation.item.deleted",
    "conversation.item.truncated": "conversation.item.truncated",
    "conversation.item.retrieved": "conversation.item.retrieved",
    "conversation.item.input_audio_transcription.delta": "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed": (
        "conversation.item.input_audio_transcription.completed"
    ),
    "conversation.item.input_audio_transcription.failed": (
        "conversation.item.input_audio_transcription.failed"
    ),
    "response.created": "response.created",
    "response.output_item.added": "response.output_item.added",
    "response.output_item.done": "response.output_item.done",
    "response.content_part.added": "response.content_part.added",
    "response.content_part.done": "response.content_part.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.function_call_arguments.delta": "response.function_call_arguments.delta",
    "response.function_call_arguments.done": "response.function_call_arguments.done",
    "response.done": "response.done",
    "rate_limits.updated": "rate_limits.updated",
    "error": "error",
}

#: Content types of assistant items, DashScope (beta) -> GA; :data:`CONTENT_TYPES_TO_BETA` is the way back.
#: (The ``part`` of ``response.content_part.*`` keeps ``audio`` / ``text``: GA names them so too.)
CONTENT_TYPES: Mapping[str, str] = {"audio": "output_audio", "text": "output_text"}
CONTENT_TYPES_TO_BETA: Mapping[str, str] = {ga: beta for beta, ga in CONTENT_TYPES.items()}

#: GA ``output_modalities`` (sorted) -> DashScope ``modalities``; and back.
MODALITIES_TO_DASHSCOPE: Mapping[tuple[str, ...], list[str]] = {
    ("audio",): ["text", "audio"],
    ("text",): ["text"],
    ("audio", "text"): ["text", "audio"],
}
MODALITIES_TO_GA: Mapping[tuple[str, ...], list[str]] = {
    ("text",): ["text"],
    ("audio", "text"): ["audio"],
    ("audio",): ["audio"],
}

#: ``turn_detection`` fields DashScope's ``server_vad`` takes as GA names them.
TURN_DETECTION_FIELDS: tuple[str, ...] = (
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
)

#: OpenAI's voice names: a client written for OpenAI sends one of them; Omni gets the model's default voice.
OPENAI_VOICES: frozenset[str] = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)


def _modalities_to_dashscope(value: Any) -> list[str]:
    found = MODALITIES_TO_DASHSCOPE.get(tuple(sorted(value))) if isinstance(value, list) else None
    if found is None:
        raise _Refused(
            "output_modalities must be ['audio'] or ['text']", "session.output_modalities"
        )
    return found


def _turn_detection_to_dashscope(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type", "server_vad") if isinstance(value, dict) else None
    if kind == "semantic_vad":  # run as server VAD whose pause follows eagerness, as on the cascade
        eagerness = value.get("eagerness")
        pause = SEMANTIC_SILENCE_MS.get(eagerness if isinstance(eagerness, str) else "auto")
        value = {**value, "silence_duration_ms": pause or SEMANTIC_SILENCE_MS["auto"]}
    elif kind != "server_vad":
        raise _Refused(
            "Qwen-Omni detects turns with server_vad (or semantic_vad, run as server_vad), or null "
            "for manual commits",
            "session.audio.input.turn_detection.type",
        )
    out: dict[str, Any] = {"type": "server_vad"}
    out.update({k: value[k] for k in TURN_DETECTION_FIELDS if value.get(k) is not None})
    return out


def _same(value: Any) -> Any:
    return value


def _tools_to_dashscope(value: Any) -> Any:
    """Function tools with their ``type`` (the endpoint's decoder leaves the default ``function`` out)."""
    if not isinstance(value, list):
        return value
    return [{"type": "function", **t} if isinstance(t, dict) else t for t in value]


#: ``session.update`` fields: GA path -> DashScope field and the translator of the value. The audio formats are
#: not here: they are the client's side (converted by the bridge), the model's own never change.
SESSION_FIELDS: tuple[tuple[tuple[str, ...], str, Callable[[Any], Any]], ...] = (
    (("instructions",), "instructions", _same),
    (("output_modalities",), "modalities", _modalities_to_dashscope),
    (("tools",), "tools", _tools_to_dashscope),
    (("tool_choice",), "tool_choice", _same),
    (("audio", "output", "voice"), "voice", _same),  # OpenAI's names: see OPENAI_VOICES
    (("audio", "input", "turn_detection"), "turn_detection", _turn_detection_to_dashscope),
)

#: The reply that tells a client request (DashScope name) was taken: until it comes, upstream silence counts
#: against the read timeout.
_REPLIES: Mapping[str, str] = {
    "session.update": "session.updated",
    "input_audio_buffer.commit": "input_audio_buffer.committed",
    "input_audio_buffer.clear": "input_audio_buffer.cleared",
    "conversation.item.create": "conversation.item.created",
    "conversation.item.delete": "conversation.item.deleted",
    "conversation.item.retrieve": "conversation.item.retrieved",
    "response.create": "response.created",
}

#: Ids remembered: client event ids (to map upstream errors back to them), items announced to the client.
_ID_MEMORY = 512


def is_omni_model(model: str) -> bool:
    """True when ``model`` is a Qwen-Omni realtime model of the catalogue (the bridge serves it)."""
    return omni_model(model) is not None


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class OmniUsage:
    """The tokens of one response, as DashScope counted them."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0

    def as_ga(self) -> dict[str, Any]:
        """GA ``response.usage``."""
        return {
            "total_tokens": self.total_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": self.input_audio_tokens,
                "cached_tokens": 0,
            },
            "output_token_details": {
                "text_tokens": self.output_text_tokens,
                "audio_tokens": self.output_audio_tokens,
            },
        }


@dataclass(frozen=True, slots=True)
class OmniTimings:
    """Milliseconds from the turn's start (speech stopped, the commit or ``response.create`` sent, whichever came
    last before the response) to its first audio and text sent to the client and to ``response.done``;
    ``gateway_first_audio_ms``: the bridge's own share of the first audio (received upstream -> handed to
    ``send``). None: the response had none."""

    first_audio_ms: float | None = None
    first_text_ms: float | None = None
    total_ms: float = 0.0
    gateway_first_audio_ms: float | None = None


@dataclass(frozen=True, slots=True)
class OmniTurn:
    """One answered turn, reported at its ``response.done``.

    Attributes:
        response_id: the upstream's id of the response (also the GA ``response.id``).
        status: ``completed``, ``cancelled`` (barge-in, ``response.cancel``), ``incomplete`` or ``failed``.
        status_reason: ``status_details.reason`` when given (``turn_detected``, ``client_cancelled`` ...).
        user_transcript: what the user said (or typed) since the previous response, items joined by a space.
        assistant_transcript: the answer's text (its audio transcript, or its text in a text-only session).
        user_item_ids / assistant_item_ids: the conversation items of both sides.
        audio_ms: output audio sent to the client, in ms of the client's format.
        input_audio_ms: the user's audio of the turn (its items' speech, or what a manual commit took).
        usage: the response's tokens (None when the upstream sent none).
    """

    response_id: str
    status: str
    user_transcript: str
    assistant_transcript: str
    timings: OmniTimings
    usage: OmniUsage | None = None
    status_reason: str | None = None
    user_item_ids: tuple[str, ...] = ()
    assistant_item_ids: tuple[str, ...] = ()
    audio_ms: int = 0
    input_audio_ms: int = 0


class _Refused(Exception):
    """A client event or value the bridge cannot pass on: ``message``, the ``param`` it is about, a ``code``."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class _Stop(Exception):
    """One side of the bridge ended: the other is cancelled."""


def _event_id() -> str:
    return "event_" + uuid.uuid4().hex


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def usage_of(raw: Any) -> OmniUsage | None:
    """:class:`OmniUsage` of a DashScope (or beta/GA-shaped) ``usage`` object; None when there is none."""
    if not isinstance(raw, dict):
        return None
    inp = _dict(raw.get("input_tokens_details") or raw.get("input_token_details"))
    out = _dict(raw.get("output_tokens_details") or raw.get("output_token_details"))
    input_tokens, output_tokens = _int(raw.get("input_tokens")), _int(raw.get("output_tokens"))
    return OmniUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_int(raw.get("total_tokens")) or input_tokens + output_tokens,
        input_text_tokens=_int(inp.get("text_tokens")),
        input_audio_tokens=_int(inp.get("audio_tokens")),
        output_text_tokens=_int(out.get("text_tokens")),
        output_audio_tokens=_int(out.get("audio_tokens")),
    )


def _ga_format(fmt: WireFormat) -> dict[str, Any]:
    if fmt.name == "audio/pcm":
        return {"type": fmt.name, "rate": fmt.sample_rate}
    return {"type": fmt.name}


def _wire_format_of(value: Any, param: str) -> WireFormat:
    """The client's format from a GA ``format`` object (or a bare name)."""
    if isinstance(value, str):
        name, rate = value, None
    elif isinstance(value, dict) and isinstance(value.get("type", "audio/pcm"), str):
        # ``type`` defaults to audio/pcm (the endpoint's decoder leaves a default out)
        name, rate = value.get("type", "audio/pcm"), value.get("rate")
    else:
        raise _Refused("format must be an object with a type", param)
    try:
        return wire_format(name, rate if isinstance(rate, int) else None)
    except ValueError as exc:
        raise _Refused(str(exc), param) from None


def _error_to_ga(raw: Any, client_id: str | None) -> dict[str, Any]:
    """An upstream ``error`` object in OpenAI's shape, naming the client's event ``client_id``."""
    error = _dict(raw)
    message = _str(error.get("message")) or "upstream reported an error"
    return {
        "type": _str(error.get("type")) or "server_error",
        "code": _str(error.get("code")),
        "message": errors.redact(message),
        "param": _str(error.get("param")),
        "event_id": client_id,
    }


def _item_to_ga(item: Any) -> dict[str, Any]:
    """A DashScope (beta) conversation item in GA shape: assistant content types renamed."""
    out = dict(_dict(item))
    out.setdefault("object", "realtime.item")
    if out.get("type") == "function_call":
        out.setdefault("name", "")
        out["arguments"] = _str(out.get("arguments")) or ""
    content = out.get("content")
    if isinstance(content, list) and out.get("role") == "assistant":
        out["content"] = [_part_to_ga(part) for part in content]
    return out


#: ``status_details.reason`` values GA knows.
_REASONS = frozenset({"turn_detected", "client_cancelled", "max_output_tokens", "content_filter"})


def _status_details(raw: dict[str, Any]) -> dict[str, Any] | None:
    """GA ``status_details`` of a DashScope response (which may give only a ``reason``)."""
    status = raw.get("status")
    details = _dict(raw.get("status_details"))
    if status not in ("cancelled", "incomplete", "failed") and not details:
        return None
    out: dict[str, Any] = {"type": details.get("type") or status or "completed"}
    reason = details.get("reason")
    if reason in _REASONS:
        out["reason"] = reason
    if isinstance(details.get("error"), dict):
        out["error"] = _error_to_ga(details["error"], None)
    return out


def _part_to_ga(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") in CONTENT_TYPES:
        return {**part, "type": CONTENT_TYPES[part["type"]]}
    return part


def _item_to_dashscope(item: Any) -> Any:
    """A GA conversation item as DashScope takes it (assistant content types back to beta names)."""
    if not isinstance(item, dict):
        return item
    content = item.get("content")
    if isinstance(content, list):
        parts = [
            {**p, "type": CONTENT_TYPES_TO_BETA[p["type"]]}
            if isinstance(p, dict) and p.get("type") in CONTENT_TYPES_TO_BETA
            else p
            for p in content
        ]
        return {**item, "content": parts}
    return item


def _text_of_item(item: dict[str, Any]) -> str:
    """The text a client's user message carries (its ``input_text`` parts)."""
    parts = item.get("content")
    if not isinstance(parts, list):
        return ""
    return "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)
    )


# ------------------------------------------------------------------------------------------------ upstream


_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


class _Upstream(WsSession):
    """The DashScope realtime socket: a reader that queues every event (bounded: a slow client slows the
    upstream's reading), and the bookkeeping of what answer is due (for the read timeout)."""

    _what = "omni"

    def __init__(self, ws: ClientConnection, timeouts: Timeouts, queue_size: int) -> None:
        super().__init__(ws, timeouts)
        self.events: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue(queue_size)
        self.created = asyncio.Event()
        self._ended = False
        #: (upstream event id or None, the reply type awaited)
        self._awaiting: list[tuple[str | None, str]] = []
        self._responding = False
        self._auto_response = True  # the upstream session answers a VAD commit by itself

    # --- reader side ----------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            raise errors.malformed(self._what)  # the realtime protocol is text-only
        try:
            event = _decoder.decode(message)
        except msgspec.DecodeError:
            raise errors.malformed(self._what) from None
        kind = event.get("type")
        if not isinstance(kind, str):
            raise errors.malformed(self._what)
        if kind == "error" and not self.created.is_set():
            raise errors.from_error_object(event.get("error"), default_status=502)
        self._account(kind, event)
        await self.events.put((time.monotonic(), event))
        return kind == "session.finished"

    def _account(self, kind: str, event: dict[str, Any]) -> None:
        if kind in ("session.created", "session.updated"):
            session = _dict(event.get("session"))
            if kind == "session.created":
                self.upstream_id = str(session.get("id") or self.upstream_id)[:128]
                self.created.set()
            td = session.get("turn_detection")
            self._auto_response = (
                isinstance(td, dict) and td.get("create_response", True) is not False
            )
        awaited = self._awaiting
        if kind == "error":
            eid = _dict(event.get("error")).get("event_id")
            self._awaiting = [a for a in awaited if a[0] != eid or eid is None]
        else:
            for i, (_, reply) in enumerate(awaited):
                if reply == kind:
                    del awaited[i]
                    break
            else:
                if kind == "input_audio_buffer.committed" and self._auto_response:
                    awaited.append((None, "response.created"))  # committed by the server's VAD
        if kind == "response.created":
            self._responding = True
        elif kind == "response.done":
            self._responding = False

    def _on_end(self) -> None:
        self.created.set()
        self._ended = True
        if not self.events.full():
            self.events.put_nowait(None)

    def _expecting(self) -> bool:
        return (
            bool(self._awaiting) or self._responding or self._finishing or not self.created.is_set()
        )

    async def next_event(self) -> tuple[float, dict[str, Any]] | None:
        """The next upstream event with the time it arrived; None once the session has ended."""
        queue = self.events
        while True:
            if self._ended and queue.empty():
                return None
            item = await queue.get()
            if item is not None:
                return item

    # --- caller side ----------------------------------------------------------------------------------
    async def wait_created(self) -> None:
        """Wait (at most ``timeouts.connect``) for the upstream's ``session.created``."""
        try:
            async with asyncio.timeout(self._timeouts.connect):
                await self.created.wait()
        except TimeoutError:
            raise UpstreamError(
                "omni: upstream did not create the session in time",
                code="upstream_timeout",
                status=504,
                transient=True,
            ) from None
        self._check_open()
        if self._complete:
            raise errors.closed_error(self._what)

    async def send_event(self, event: dict[str, Any]) -> None:
        """Send ``event`` (it carries its ``event_id``); a request that calls for a reply starts the read clock."""
        reply = _REPLIES.get(event["type"])
        if reply is not None:
            self._awaiting.append((event["event_id"], reply))
        await self._send(_encoder.encode(event).decode())
        if reply is not None:
            self._touch()

    def fail(self, error: UpstreamError) -> None:
        """Record ``error`` (when nothing failed before) and end the event stream."""
        self._fail(error)

    async def _send_finish(self) -> None:
        await self.send_event({"event_id": _event_id(), "type": "session.finish"})


# ------------------------------------------------------------------------------------------------ the bridge


@dataclass(slots=True)
class _Response:
    """What the bridge follows of one response, for its :class:`OmniTurn`."""

    id: str
    started: float
    user_items: list[str]
    item_ids: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    final_transcript: str | None = None
    first_audio: float | None = None
    first_text: float | None = None
    gateway_first_audio: float | None = None
    audio_bytes: int = 0
    output: OutputConverter | None = None


class OmniBridge:
    """One ``/v1/realtime`` session on a Qwen-Omni realtime model (see the module docstring).

    ``send`` takes GA server events (dicts; the endpoint encodes them), ``run`` takes the client's GA events.
    ``on_usage`` gets every response's tokens, ``on_turn`` every answered turn (history rows, quotas), both at
    ``response.done``. ``api_key`` is the caller's DashScope key (key pass-through), else the settings' one.
    ``timeouts`` / ``backoff`` default to the settings' (tests shorten them).

    Raises (constructing):
        CatalogueError: ``model`` is not a Qwen-Omni realtime model.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        model: str,
        api_key: str | None,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        on_usage: Callable[[OmniUsage], None],
        on_turn: Callable[[OmniTurn], Awaitable[None]],
        timeouts: Timeouts | None = None,
        backoff: Backoff | None = None,
        queue_events: int = 64,
    ) -> None:
        spec = omni_model(model)
        if spec is None:
            raise CatalogueError(f"{model!r} is not a Qwen-Omni realtime model")
        self.spec: OmniModel = spec
        self.model = model
        self._settings = settings
        self._url = with_model(settings.realtime_ws_url, model)
        self._api_key = api_key or settings.qwen_api_key
        self._send = send
        self._on_usage = on_usage
        self._on_turn = on_turn
        self._timeouts = timeouts or Timeouts(
            connect=settings.connect_timeout, read=settings.read_timeout
        )
        self._backoff = backoff or Backoff(retries=settings.upstream_retries)
        self._queue_events = queue_events
        self._send_lock = asyncio.Lock()
        # The session as the client sees it (GA); the upstream's values are merged in as it reports them.
        self._input_format = wire_format("audio/pcm")
        self._output_format = wire_format("audio/pcm")
        self._input = InputConverter(self._input_format, spec.input_rate)
        self._upstream_session: dict[str, Any] = {}
        self._tools: Any = []
        self._tool_choice: Any = "auto"
        # event ids: upstream id -> the client's (for errors); bounded
        self._client_ids: collections.OrderedDict[str, str] = collections.OrderedDict()
        # turns
        self._turn_start: float | None = None
        self._unanswered: list[str] = []  # user items since the last response
        self._transcripts: dict[str, str | None] = {}  # user item id -> transcript (None: pending)
        self._responses: dict[str, _Response] = {}
        self._held: list[OmniTurn] = []  # turns whose user transcript is still coming
        self._items_added: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._items_open: set[str] = set()  # added, not yet done
        self._calls: dict[str, tuple[str, str]] = {}  # function call item id -> (name, call_id)
        # input audio per user item (ms), for the GA transcription usage
        self._item_audio_ms: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._speech_start: tuple[str, int] | None = None
        self._appended_ms = 0

    # --- life -------------------------------------------------------------------------------------------
    async def run(self, client_events: AsyncIterator[dict[str, Any]]) -> None:
        """Bridge until the client's events end, the upstream ends (an ``error`` event is sent then, unless it
        ended cleanly) or the task is cancelled; the upstream socket is closed in every case."""
        try:
            async with session_scope(self._backoff, self._open, "omni") as upstream:
                log.info(
                    "omni session opened (model=%s)",
                    self.model,
                    extra=upstream_fields("omni", upstream.upstream_id),
                )
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._pump(upstream))
                        tg.create_task(self._client_loop(client_events, upstream))
                except BaseExceptionGroup as group:
                    _raise_unless_stopped(group)
                log.info(
                    "omni session closed (model=%s)",
                    self.model,
                    extra=upstream_fields("omni", upstream.upstream_id),
                )
        except UpstreamError as err:  # the session could not start
            await self._emit(self._upstream_failure(err))
        await self._release_held()

    async def _open(self) -> _Upstream:
        timeouts = self._timeouts
        return await open_session(
            self._url,
            api_key=self._api_key,
            timeouts=timeouts,
            what="omni",
            make=lambda ws: _Upstream(ws, timeouts, self._queue_events),
            start=lambda upstream: upstream.wait_created(),
            workspace=self._settings.workspace,
        )

    async def _emit(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", _event_id())
        async with self._send_lock:
            await self._send(event)

    def _upstream_failure(self, err: UpstreamError) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": "server_error" if err.status >= 500 else "invalid_request_error",
            "code": err.code,
            "message": err.message,
            "param": None,
            "event_id": None,
        }
        return {"type": "error", "error": error}

    # --- upstream -> client ---------------------------------------------------------------------------
    async def _pump(self, upstream: _Upstream) -> None:
        while (item := await upstream.next_event()) is not None:
            received, event = item
            if event.get("type") == "response.created":
                await (
                    self._release_held()
                )  # a transcript still missing by the next answer will not come
            try:
                translated = self._server_event(event, received)
            except UpstreamError as err:
                upstream.fail(err)
                break
            for out in translated:
                await self._emit(out)
                if out["type"] == "response.output_audio.delta":
                    self._audio_sent(out.get("response_id"), received)
            if event.get("type") == "response.done":
                await self._response_done(event)
            elif event.get("type") in (
                "conversation.item.input_audio_transcription.completed",
                "conversation.item.input_audio_transcription.failed",
            ):
                await self._release_held(only_ready=True)
        if upstream._error is not None:
            await self._emit(self._upstream_failure(upstream._error))
        raise _Stop

    def _audio_sent(self, response_id: Any, received: float) -> None:
        response = self._responses.get(response_id) if isinstance(response_id, str) else None
        if response is not None and response.first_audio is None:
            now = time.monotonic()
            response.first_audio = now
            response.gateway_first_audio = now - received

    def _server_event(self, event: dict[str, Any], received: float) -> list[dict[str, Any]]:
        """The GA events for one upstream event (none, one, or more)."""
        kind = event["type"]
        name = SERVER_EVENTS.get(kind)
        if name is None:
            log.debug("omni: upstream event %s not passed on", kind)
            return []
        out = {k: v for k, v in event.items() if k != "event_id"}
        out["type"] = name
        translate = self._SERVER_TRANSLATORS.get(kind)
        if translate is None:
            return [out]
        return translate(self, out, received)

    def _on_session(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        self._upstream_session.update(_dict(out.get("session")))
        out["session"] = self._ga_session()
        return [out]

    def _on_speech_started(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        item_id, start = _str(out.get("item_id")), out.get("audio_start_ms")
        if item_id is not None and isinstance(start, int):
            self._speech_start = (item_id, start)
        return [out]

    def _on_speech_stopped(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        self._turn_start = received
        item_id, end = _str(out.get("item_id")), out.get("audio_end_ms")
        started = self._speech_start
        if started is not None and started[0] == item_id and isinstance(end, int):
            self._remember_audio(started[0], max(0, end - started[1]))
        self._speech_start = None
        return [out]

    def _on_committed(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        item_id = _str(out.get("item_id"))
        if item_id is not None and item_id not in self._item_audio_ms:
            self._remember_audio(
                item_id, self._appended_ms
            )  # a manual commit: the audio since the last
        self._appended_ms = 0
        return [out]

    def _remember_audio(self, item_id: str, ms: int) -> None:
        durations = self._item_audio_ms
        durations[item_id] = ms
        if len(durations) > _ID_MEMORY:
            durations.popitem(last=False)

    def _on_item_created(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        item = _item_to_ga(out.get("item"))
        out["item"] = item
        item_id = _str(item.get("id"))
        if item_id is None:
            return [out]
        self._added(item_id)
        if item.get("role") == "user" and item.get("type", "message") == "message":
            text = _text_of_item(item)
            if item_id not in self._transcripts:
                audio = any(
                    isinstance(p, dict) and p.get("type") == "input_audio"
                    for p in item.get("content") or []
                )
                self._transcripts[item_id] = None if audio and not text else text
            self._unanswered.append(item_id)
        events = [out]
        if item.get("status", "completed") != "in_progress":
            events.append({**out, "type": "conversation.item.done"})
        else:
            self._items_open.add(item_id)
        return events

    def _added(self, item_id: str) -> None:
        """Remember that ``item_id`` was announced (``conversation.item.added``); the oldest are forgotten."""
        added = self._items_added
        added[item_id] = None
        if len(added) > _ID_MEMORY:
            added.popitem(last=False)

    def _on_transcription(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        item_id = _str(out.get("item_id")) or ""
        out.setdefault("content_index", 0)
        if out["type"].endswith(".completed"):
            transcript = _str(out.get("transcript")) or ""
            out["transcript"] = transcript
            self._transcripts[item_id] = transcript
            if not isinstance(out.get("usage"), dict):  # GA requires it; DashScope sends none
                seconds = self._item_audio_ms.get(item_id, 0) / 1000
                out["usage"] = {"type": "duration", "seconds": seconds}
        else:
            self._transcripts[item_id] = ""
            out["error"] = _error_to_ga(out.get("error"), None)
        return [out]

    def _on_call_arguments(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        name, call_id = self._calls.get(_str(out.get("item_id")) or "", ("", ""))
        out.setdefault("call_id", call_id)
        if out["type"].endswith(".done"):
            out.setdefault("name", name)
        return [out]

    def _on_response_created(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        raw = _dict(out.get("response"))
        rid = _str(raw.get("id")) or ""
        self._responses[rid] = _Response(
            id=rid,
            started=self._turn_start if self._turn_start is not None else received,
            user_items=self._unanswered,
            output=OutputConverter(self._output_format),
        )
        self._unanswered = []
        self._turn_start = None
        out["response"] = self._ga_response(raw)
        return [out]

    def _on_output_item(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        item = _item_to_ga(out.get("item"))
        out["item"] = item
        item_id = _str(item.get("id"))
        events = [out]
        if item_id is None:
            return events
        response = self._responses.get(_str(out.get("response_id")) or "")
        if item.get("type") == "function_call":
            self._calls[item_id] = (str(item.get("name") or ""), str(item.get("call_id") or ""))
        if out["type"] == "response.output_item.added":
            if response is not None:
                response.item_ids.append(item_id)
            if item_id not in self._items_added:
                self._added(item_id)
                self._items_open.add(item_id)
                events.append(
                    {"type": "conversation.item.added", "previous_item_id": None, "item": item}
                )
        elif item_id in self._items_open:
            self._items_open.discard(item_id)
            events.append(
                {"type": "conversation.item.done", "previous_item_id": None, "item": item}
            )
        return events

    def _on_item(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        out["item"] = _item_to_ga(out.get("item"))
        return [out]

    def _on_audio_delta(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        response = self._responses.get(_str(out.get("response_id")) or "")
        delta = out.get("delta")
        if response is None or response.output is None or not isinstance(delta, str):
            return []
        try:
            pcm = binascii.a2b_base64(delta)
        except binascii.Error:
            raise errors.malformed("omni") from None
        wire = response.output.feed(pcm, self.spec.output_rate)
        if not wire:
            return []
        response.audio_bytes += len(wire)
        out["delta"] = binascii.b2a_base64(wire, newline=False).decode("ascii")
        return [out]

    def _on_audio_done(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        response = self._responses.get(_str(out.get("response_id")) or "")
        events: list[dict[str, Any]] = []
        if response is not None and response.output is not None:
            rest = response.output.flush()
            response.output = None
            if rest:
                response.audio_bytes += len(rest)
                events.append(
                    {
                        "type": "response.output_audio.delta",
                        **{k: out.get(k) for k in _PART_KEYS},
                        "delta": binascii.b2a_base64(rest, newline=False).decode("ascii"),
                    }
                )
        events.append(out)
        return events

    def _on_text(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        response = self._responses.get(_str(out.get("response_id")) or "")
        if response is not None:
            kind = out["type"]
            if kind.endswith(".delta"):
                response.transcript.append(_str(out.get("delta")) or "")
                if response.first_text is None:
                    response.first_text = time.monotonic()
            else:
                final = out.get("transcript", out.get("text"))
                if isinstance(final, str):
                    response.final_transcript = final
        return [out]

    def _on_response_done(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        out["response"] = self._ga_response(_dict(out.get("response")))
        return [out]

    def _on_error(self, out: dict[str, Any], received: float) -> list[dict[str, Any]]:
        upstream_id = _str(_dict(out.get("error")).get("event_id"))
        client_id = self._client_ids.get(upstream_id) if upstream_id else None
        out["error"] = _error_to_ga(out.get("error"), client_id)
        return [out]

    _SERVER_TRANSLATORS: Mapping[
        str, Callable[[OmniBridge, dict[str, Any], float], list[dict[str, Any]]]
    ] = {
        "session.created": _on_session,
        "session.updated": _on_session,
        "input_audio_buffer.speech_started": _on_speech_started,
        "input_audio_buffer.speech_stopped": _on_speech_stopped,
        "input_audio_buffer.committed": _on_committed,
        "conversation.item.created": _on_item_created,
        "conversation.item.retrieved": _on_item,
        "conversation.item.input_audio_transcription.completed": _on_transcription,
        "conversation.item.input_audio_transcription.failed": _on_transcription,
        "response.created": _on_response_created,
        "response.output_item.added": _on_output_item,
        "response.output_item.done": _on_output_item,
        "response.function_call_arguments.delta": _on_call_arguments,
        "response.function_call_arguments.done": _on_call_arguments,
        "response.audio.delta": _on_audio_delta,
        "response.audio.done": _on_audio_done,
        "response.audio_transcript.delta": _on_text,
        "response.audio_transcript.done": _on_text,
        "response.text.delta": _on_text,
        "response.text.done": _on_text,
        "response.done": _on_response_done,
        "error": _on_error,
    }

    def _ga_session(self) -> dict[str, Any]:
        up = self._upstream_session
        modalities = up.get("modalities")
        td = up.get("turn_detection")
        transcription = up.get("input_audio_transcription")
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": _str(up.get("id")) or "",
            "model": self.model,
            "output_modalities": MODALITIES_TO_GA.get(
                tuple(sorted(modalities)) if isinstance(modalities, list) else ("audio", "text"),
                ["audio"],
            ),
            "instructions": up.get("instructions") or "",
            "tools": up.get("tools") if isinstance(up.get("tools"), list) else [],
            "tool_choice": up.get("tool_choice") or "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": _ga_format(self._input_format),
                    "transcription": transcription if isinstance(transcription, dict) else None,
                    "noise_reduction": None,
                    "turn_detection": td if isinstance(td, dict) else None,
                },
                "output": {
                    "format": _ga_format(self._output_format),
                    "voice": up.get("voice") or self.spec.default_voice,
                    "speed": 1.0,
                },
            },
        }

    def _ga_response(self, raw: dict[str, Any]) -> dict[str, Any]:
        modalities = raw.get("modalities")
        output = raw.get("output")
        usage = usage_of(raw.get("usage"))
        return {
            "object": "realtime.response",
            "id": raw.get("id"),
            "status": raw.get("status") or "in_progress",
            "status_details": _status_details(raw),
            "output": [_item_to_ga(i) for i in output] if isinstance(output, list) else [],
            "conversation_id": _str(raw.get("conversation_id")) or "",
            "output_modalities": MODALITIES_TO_GA.get(
                tuple(sorted(modalities)) if isinstance(modalities, list) else ("audio", "text"),
                ["audio"],
            ),
            "max_output_tokens": "inf",
            "audio": {
                "output": {
                    "format": _ga_format(self._output_format),
                    "voice": _str(raw.get("voice"))
                    or _str(self._upstream_session.get("voice"))
                    or self.spec.default_voice,
                }
            },
            "usage": usage.as_ga() if usage is not None else None,
            "metadata": None,
        }

    # --- turns ----------------------------------------------------------------------------------------
    async def _response_done(self, event: dict[str, Any]) -> None:
        raw = _dict(event.get("response"))
        response = self._responses.pop(_str(raw.get("id")) or "", None)
        if response is None:
            return
        usage = usage_of(raw.get("usage"))
        if usage is not None:
            self._on_usage(usage)
        now = time.monotonic()

        def ms(at: float | None) -> float | None:
            return None if at is None else round((at - response.started) * 1000, 3)

        gateway = response.gateway_first_audio
        turn = OmniTurn(
            response_id=response.id,
            status=_str(raw.get("status")) or "completed",
            status_reason=_str(_dict(raw.get("status_details")).get("reason")),
            user_transcript="",
            assistant_transcript=response.final_transcript
            if response.final_transcript is not None
            else "".join(response.transcript),
            timings=OmniTimings(
                first_audio_ms=ms(response.first_audio),
                first_text_ms=ms(response.first_text),
                total_ms=ms(now) or 0.0,
                gateway_first_audio_ms=None if gateway is None else round(gateway * 1000, 3),
            ),
            usage=usage,
            user_item_ids=tuple(response.user_items),
            assistant_item_ids=tuple(response.item_ids),
            audio_ms=response.audio_bytes
            // self._output_format.sample_width
            * 1000
            // self._output_format.sample_rate,
        )
        self._held.append(turn)
        await self._release_held(only_ready=True)

    def _user_transcript(self, turn: OmniTurn) -> str | None:
        texts = [self._transcripts.get(i) for i in turn.user_item_ids]
        if any(t is None for t in texts):
            return None
        return " ".join(t for t in texts if t)

    async def _release_held(self, only_ready: bool = False) -> None:
        """Report the held turns in order: those whose user transcripts are all in (all, at the end)."""
        while self._held:
            turn = self._held[0]
            text = self._user_transcript(turn)
            if text is None:
                if only_ready:
                    return
                text = " ".join(t for i in turn.user_item_ids if (t := self._transcripts.get(i)))
            self._held.pop(0)
            heard = 0
            for item_id in turn.user_item_ids:
                self._transcripts.pop(item_id, None)
                heard += self._item_audio_ms.pop(item_id, 0)
            await self._on_turn(replace(turn, user_transcript=text, input_audio_ms=heard))

    # --- client -> upstream ---------------------------------------------------------------------------
    async def _client_loop(
        self,
        client_events: AsyncIterator[dict[str, Any]],
        upstream: _Upstream,
    ) -> None:
        try:
            async for event in client_events:
                client_id = _str(event.get("event_id"))
                try:
                    if event.get("type") in LOCAL_EVENTS:
                        await self._emit(self._local_event(event))
                        continue
                    for out in self._client_event(event):
                        if client_id is not None:
                            self._remember(out["event_id"], client_id)
                        await upstream.send_event(out)
                except _Refused as refused:
                    await self._emit(
                        {
                            "type": "error",
                            "error": {
                                "type": "invalid_request_error",
                                "code": refused.code,
                                "message": refused.message,
                                "param": refused.param,
                                "event_id": client_id,
                            },
                        }
                    )
        except UpstreamError as err:
            upstream.fail(err)  # the pump reports it once it has passed on what came before
            await asyncio.Event().wait()  # until the pump ends the bridge
        raise _Stop

    def _remember(self, upstream_id: str, client_id: str) -> None:
        ids = self._client_ids
        ids[upstream_id] = client_id
        if len(ids) > _ID_MEMORY:
            ids.popitem(last=False)

    def _local_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """The bridge's own answer to a :data:`LOCAL_EVENTS` event: ``conversation.item.truncate`` of an item
        it announced."""
        item_id = _str(event.get("item_id"))
        if item_id is None or item_id not in self._items_added:
            raise _Refused(f"no item {item_id!r} in the conversation", "item_id", "item_not_found")
        return {
            "type": LOCAL_EVENTS[event["type"]],
            "item_id": item_id,
            "content_index": _int(event.get("content_index")),
            "audio_end_ms": _int(event.get("audio_end_ms")),
        }

    def _client_event(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The DashScope events for one GA client event."""
        kind = event.get("type")
        name = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
        if name is None:
            raise _Refused(
                f"{kind!r} is not supported on a Qwen-Omni session", "type", "unsupported_event"
            )
        out = {k: v for k, v in event.items() if k != "event_id"}
        out["type"] = name
        translate = self._CLIENT_TRANSLATORS.get(name)
        events = [out] if translate is None else translate(self, out)
        for e in events:
            e["event_id"] = _event_id()
        if name in ("input_audio_buffer.commit", "response.create"):
            self._turn_start = time.monotonic()
        return events

    def _session_update(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        ga = _dict(out.get("session"))
        session: dict[str, Any] = {}
        for path, key, translate in SESSION_FIELDS:
            node: Any = ga
            for step in path:
                node = node.get(step, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                session[key] = translate(node)
        voice = session.get("voice")
        if isinstance(voice, str) and voice in OPENAI_VOICES:
            session["voice"] = self.spec.default_voice
        audio = _dict(ga.get("audio"))
        in_fmt = _dict(audio.get("input")).get("format")
        out_fmt = _dict(audio.get("output")).get("format")
        # Check both before changing either: a refused update changes nothing.
        new_in = _wire_format_of(in_fmt, "session.audio.input.format") if in_fmt else None
        new_out = _wire_format_of(out_fmt, "session.audio.output.format") if out_fmt else None
        if new_in is not None and new_in != self._input_format:
            self._input_format = new_in
            self._input = InputConverter(new_in, self.spec.input_rate)
        if new_out is not None:
            self._output_format = new_out
        session["input_audio_format"] = self.spec.input_format
        session["output_audio_format"] = self.spec.output_format
        return [{"type": "session.update", "session": session}]

    def _append(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        audio = out.get("audio")
        data: bytes | None = None
        if isinstance(audio, (bytes, bytearray)):  # already decoded by the endpoint
            data = bytes(audio)
        elif isinstance(audio, str):
            try:
                data = binascii.a2b_base64(audio, strict_mode=True)
            except binascii.Error:
                data = None
        if data is None:
            raise _Refused("audio must be base64", "audio", "invalid_base64")
        self._appended_ms += wire_ms(self._input_format, len(data))
        pcm = self._input.feed(data)
        return [
            {
                "type": "input_audio_buffer.append",
                "audio": binascii.b2a_base64(pcm[i : i + MAX_AUDIO_CHUNK], newline=False).decode(),
            }
            for i in range(0, len(pcm), MAX_AUDIO_CHUNK)
        ]

    def _clear(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        self._input = InputConverter(self._input_format, self.spec.input_rate)
        self._appended_ms = 0
        return [out]

    def _item_create(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        out["item"] = _item_to_dashscope(out.get("item"))
        return [out]

    def _response_create(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        ga = _dict(out.get("response"))
        response: dict[str, Any] = {"instructions": ga.get("instructions")}
        if "output_modalities" in ga:
            try:
                response["modalities"] = _modalities_to_dashscope(ga["output_modalities"])
            except _Refused:
                raise _Refused(
                    "output_modalities must be ['audio'] or ['text']",
                    "response.output_modalities",
                ) from None
        return [{"type": "response.create", "response": response}]

    _CLIENT_TRANSLATORS: Mapping[
        str, Callable[[OmniBridge, dict[str, Any]], list[dict[str, Any]]]
    ] = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.clear": _clear,
        "conversation.item.create": _item_create,
        "response.create": _response_create,
    }


#: The keys that place an audio delta in its response.
_PART_KEYS = ("response_id", "item_id", "output_index", "content_index")

_MISSING = object()


def _raise_unless_stopped(group: BaseExceptionGroup[BaseException]) -> None:
    """After the bridge's task group: nothing when it ended by :class:`_Stop`; else the one real failure (as
    itself, not wrapped), or the group."""
    _, rest = group.split(_Stop)
    if rest is None:
        return
    leaves: list[BaseException] = []
    pending: list[BaseException] = [rest]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1:
        raise leaves[0]
    raise rest
