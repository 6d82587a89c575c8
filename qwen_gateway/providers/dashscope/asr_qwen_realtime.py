"""Realtime recognition over ``/api-ws/v1/realtime?model=`` (``qwen3-asr-flash-realtime``).

One connection per utterance, OpenAI-Realtime-shaped JSON events as the official SDK's
``OmniRealtimeConversation`` sends them (``dashscope-protocols.md`` §10):

* ``session.update`` first: ``modalities: ["text"]``, ``input_audio_format`` (``pcm`` | ``opus``),
  ``sample_rate`` (16000 | 8000), ``input_audio_transcription`` (language), and ``turn_detection``: ``null`` for
  manual commit (the seed endpoints: the whole upload is one utterance, committed at its end), or ``server_vad``
  (``threshold``, ``silence_duration_ms``) for callers that stream and let the server cut sentences;
* audio as ``input_audio_buffer.append`` events carrying base64;
* :meth:`~QwenRealtimeRecognitionSession.finish`: ``input_audio_buffer.commit`` (manual mode) and
  ``session.finish``; the server answers with the remaining results and ``session.finished``. Manual mode takes
  at most 60 s of audio per commit ("continuous audio must not exceed 60 seconds"): longer PCM is committed every
  :data:`MAX_COMMIT_SECONDS` on the way.

Results: ``conversation.item.input_audio_transcription.text`` is a partial (``text`` is the stable part, ``stash``
the part still being revised: the partial is both), ``...completed`` the final ``transcript`` of one item (one
sentence in VAD mode, the whole utterance in manual mode); each item is one ``sentence_id``. ``error`` events and
``...transcription.failed`` end the session with an :class:`UpstreamError`.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from websockets.asyncio.client import ClientConnection

from ...errors import UpstreamError, detached
from ..base import AudioFormat, RecognitionResult
from . import errors
from .catalogue import AsrModel, AsrProtocol
from .policy import Backoff, Timeouts
from .tts_qwen import with_model
from .ws import WsSession, open_session, session_scope

__all__ = [
    "MAX_AUDIO_CHUNK",
    "QwenRealtimeRecognitionSession",
    "QwenRealtimeRecognizer",
    "ServerVad",
    "session_config",
]

log = logging.getLogger(__name__)

#: Largest piece of audio in one ``input_audio_buffer.append`` (raw bytes; about 0.5 s of 16 kHz PCM).
MAX_AUDIO_CHUNK = 16 * 1024

#: Manual mode: DashScope takes at most 60 s of continuous audio per commit, so longer PCM is committed in pieces
#: of this many seconds (each becomes its own item, i.e. sentence, of the result).
MAX_COMMIT_SECONDS = 50

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ServerVad:
    """Server-side voice activity detection: the server commits a sentence after ``silence_duration_ms`` of
    silence. Defaults are the SDK's (threshold 0.2 in [-1, 1], prefix 300 ms, silence 800 ms in [200, 6000])."""

    threshold: float = 0.2
    silence_duration_ms: int = 800
    prefix_padding_ms: int = 300

    def as_json(self) -> dict[str, object]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


def session_config(
    format: str, sample_rate: int, *, vad: ServerVad | None, language: str | None = None
) -> dict[str, object]:
    """The ``session`` of our ``session.update``: what the SDK sends for the same request, without the two
    fields its generic Omni session adds for a text-only model (``voice: null``, ``output_audio_format``)."""
    transcription: dict[str, object] = {}
    if language:
        transcription["language"] = language
    return {
        "modalities": ["text"],
        "input_audio_format": format,
        "sample_rate": sample_rate,
        "input_audio_transcription": transcription,
        "turn_detection": vad.as_json() if vad is not None else None,
    }


def _event_id() -> str:
    return "event_" + uuid.uuid4().hex


class _Event(msgspec.Struct):
    type: str = ""
    text: str | None = None
    stash: str | None = None
    transcript: str | None = None
    item_id: str | None = None
    error: Any = None


_event_decoder = msgspec.json.Decoder(_Event)


class QwenRealtimeRecognitionSession(WsSession):
    """One utterance on one realtime recognition connection (see the module docstring).

    Partials are replaced, not queued: an unread partial of the same item gives way to a newer one (each carries
    the item's whole text so far); finals are all kept.
    """

    _what = "asr"

    def __init__(
        self,
        ws: ClientConnection,
        timeouts: Timeouts,
        *,
        manual: bool,
        bytes_per_second: int | None = None,
    ) -> None:
        super().__init__(ws, timeouts)
        self._manual = manual
        #: manual mode with a known byte rate (PCM): commit before this many bytes are uncommitted
        self._commit_every = (
            bytes_per_second * MAX_COMMIT_SECONDS if manual and bytes_per_second else None
        )
        self._results: deque[RecognitionResult] = deque()
        self._wakeup = asyncio.Event()
        self._updated = asyncio.Event()
        self._items: dict[str, int] = {}  # item id -> sentence id
        self._uncommitted = 0  # audio bytes appended since the last commit
        self.audio_bytes = 0

    # --- reader side ----------------------------------------------------------------------------------
    def _sentence(self, item_id: str | None) -> int:
        key = item_id or ""
        if key not in self._items:
            self._items[key] = len(self._items) + 1
        return self._items[key]

    async def _on_message(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            return False  # the realtime protocol is text-only
        try:
            event = _event_decoder.decode(message)
        except msgspec.DecodeError:
            raise errors.malformed("asr") from None
        kind = event.type
        if kind == "conversation.item.input_audio_transcription.text":
            text = (event.text or "") + (event.stash or "")
            if text:
                self._push(RecognitionResult(text, False, self._sentence(event.item_id)))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._push(
                RecognitionResult(event.transcript or "", True, self._sentence(event.item_id))
            )
        elif kind == "session.updated":
            self._updated.set()
        elif kind == "session.finished":
            return True
        elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
            raise errors.from_error_object(event.error, default_status=502)
        return False

    def _push(self, result: RecognitionResult) -> None:
        items = self._results
        last = items[-1] if items else None
        if (
            not result.is_final
            and last is not None
            and not last.is_final
            and last.sentence_id == result.sentence_id
        ):
            items[-1] = result
        else:
            items.append(result)
        self._wakeup.set()

    def _on_end(self) -> None:
        self._updated.set()
        self._wakeup.set()

    def _expecting(self) -> bool:
        return self._finishing or not self._updated.is_set()

    # --- caller side ----------------------------------------------------------------------------------
    async def _send_event(self, event: dict[str, object]) -> None:
        await self._send(_encoder.encode({"event_id": _event_id(), **event}).decode())

    async def _start(self, session: dict[str, object]) -> None:
        """Send ``session.update`` and wait for ``session.updated`` (at most ``timeouts.connect``).

        Raises:
            UpstreamError: an ``error`` event (a refused format or rate ...), the connection broke, or no answer
                in time (``upstream_timeout``, transient).
        """
        await self._send_event({"type": "session.update", "session": session})
        try:
            async with asyncio.timeout(self._timeouts.connect):
                await self._updated.wait()
        except TimeoutError:
            raise UpstreamError(
                "asr: upstream did not confirm the session in time",
                code="upstream_timeout",
                status=504,
                transient=True,
            ) from None
        self._check_open()
        if self._complete:
            raise errors.closed_error(self._what)

    async def feed(self, audio: bytes) -> None:
        """Send more audio (in order), as ``input_audio_buffer.append`` events of at most
        :data:`MAX_AUDIO_CHUNK` bytes.

        Raises:
            UpstreamError: an ``error`` event ended the session, or the connection broke.
            RuntimeError: called after :meth:`finish`.
        """
        self._check_input("feed")
        view = memoryview(audio)
        limit = self._commit_every
        offset = 0
        while offset < len(view):
            size = MAX_AUDIO_CHUNK
            if limit is not None:
                size = min(size, limit - self._uncommitted)
            piece = view[offset : offset + size]
            encoded = binascii.b2a_base64(piece, newline=False).decode("ascii")
            await self._send_event({"type": "input_audio_buffer.append", "audio": encoded})
            offset += len(piece)
            self._uncommitted += len(piece)
            if limit is not None and self._uncommitted >= limit:
                await self._send_event({"type": "input_audio_buffer.commit"})
                self._uncommitted = 0
        self.audio_bytes += len(audio)

    async def _send_finish(self) -> None:
        if self._manual and self._uncommitted:
            await self._send_event({"type": "input_audio_buffer.commit"})
            self._uncommitted = 0
        await self._send_event({"type": "session.finish"})

    async def results(self) -> AsyncGenerator[RecognitionResult, None]:
        """Partial and final results as they arrive; ends after ``session.finished``.

        Raises:
            UpstreamError: an ``error`` event, a broken connection, or no answer for ``timeouts.read`` after
                :meth:`finish`.
        """
        items = self._results
        while True:
            while items:
                yield items.popleft()
            if self._error is not None:
                raise detached(self._error)
            if self._complete:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


class QwenRealtimeRecognizer:
    """A streaming :class:`~qwen_gateway.providers.base.Recognizer` over the realtime WebSocket.

    ``url`` is the realtime endpoint (``settings.realtime_ws_url``; its ``model=`` is set to ``model``).
    ``vad``: None commits manually at :meth:`~QwenRealtimeRecognitionSession.finish` (one utterance), a
    :class:`ServerVad` lets the server cut sentences; a session may override it. ``spec`` is the model's catalogue
    entry (what :meth:`accepts` answers from); ``workspace`` goes in ``X-DashScope-WorkSpace``.
    """

    def __init__(
        self,
        *,
        url: str,
        model: str,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        vad: ServerVad | None = None,
        language: str | None = None,
        workspace: str = "",
        spec: AsrModel | None = None,
    ) -> None:
        self._url = with_model(url, model)
        self._model = model
        self._api_key = api_key
        self._timeouts = timeouts
        self._backoff = backoff
        self._vad = vad
        self._language = language
        self._workspace = workspace
        self._spec = spec or AsrModel(model, AsrProtocol.REALTIME, frozenset({8000, 16000}))

    @property
    def model(self) -> str:
        return self._model

    @property
    def streaming(self) -> bool:
        return True

    def accepts(self, format: str, sample_rate: int) -> bool:
        """True when the model takes ``format`` audio at ``sample_rate`` as it is (``pcm``/``opus``, 16k/8k)."""
        return self._spec.accepts(format, sample_rate)

    async def _open(
        self, format: AudioFormat, sample_rate: int, api_key: str | None, vad: ServerVad | None
    ) -> QwenRealtimeRecognitionSession:
        config = session_config(format, sample_rate, vad=vad, language=self._language)
        session = await open_session(
            self._url,
            api_key=api_key or self._api_key,
            timeouts=self._timeouts,
            what="asr",
            make=lambda ws: QwenRealtimeRecognitionSession(
                ws,
                self._timeouts,
                manual=vad is None,
                bytes_per_second=sample_rate * 2 if format == "pcm" else None,
            ),
            start=lambda session: session._start(config),
            workspace=self._workspace,
        )
        log.info(
            "asr realtime session opened (model=%s format=%s rate=%d vad=%s)",
            self._model,
            format,
            sample_rate,
            vad is not None,
        )
        return session

    def session(
        self,
        *,
        format: AudioFormat,
        sample_rate: int,
        api_key: str | None = None,
        vad: ServerVad | Literal["default"] | None = "default",
    ) -> AbstractAsyncContextManager[QwenRealtimeRecognitionSession]:
        """Open one utterance's connection; leaving the block closes it.

        Transient failures to start (refused connection, 429/5xx handshake, no ``session.updated`` in time) are
        retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...) or ``session.update`` was (an ``error``).
        """
        chosen = self._vad if vad == "default" else vad
        return session_scope(
            self._backoff, lambda: self._open(format, sample_rate, api_key, chosen), "asr"
        )

    async def transcribe_url(self, url: str, *, api_key: str | None = None) -> str:
        """Not offered: this engine streams uploads (the gateway never calls it for a streaming engine)."""
        raise UpstreamError(
            "asr: the realtime recogniser does not transcribe files by URL",
            code="unsupported",
            status=501,
        )
