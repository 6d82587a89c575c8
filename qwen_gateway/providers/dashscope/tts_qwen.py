"""Realtime TTS over ``REAL_TIME_AUDIO_URL`` (``qwen-tts-realtime``, ``qwen3-tts-flash-realtime``).

One upstream connection per answer, in ``commit`` mode: ``session.update`` sets voice and PCM rate, each text
segment is ``input_text_buffer.append`` + ``input_text_buffer.commit`` (one response each), ``session.finish``
asks for the rest, ``session.finished`` ends. ``response.audio.delta`` carries base64 PCM16LE, handed on as soon
as it arrives; an ``error`` event ends the session with an :class:`UpstreamError`.
"""

from __future__ import annotations

import binascii
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from websockets.asyncio.client import ClientConnection

from ...errors import detached
from ...logs import upstream_fields
from ..base import PcmChunk
from . import errors
from .policy import Backoff, Timeouts
from .ws import PcmQueue, WsSession, open_session, session_scope

__all__ = ["QwenRealtimeSynthesisSession", "QwenRealtimeSynthesizer", "model_of_url", "with_model"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


class _SessionInfo(msgspec.Struct):
    sample_rate: int | None = None
    id: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    delta: str | None = None
    error: Any = None
    session: _SessionInfo | None = None


_event_decoder = msgspec.json.Decoder(_Event)


def model_of_url(url: str) -> str:
    """The ``model=`` query parameter of a realtime URL ("" when absent)."""
    return dict(parse_qsl(urlsplit(url).query)).get("model", "")


def with_model(url: str, model: str) -> str:
    """``url`` with its ``model=`` query parameter set to ``model``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"]
    query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _event_id() -> str:
    return "event_" + uuid.uuid4().hex


class QwenRealtimeSynthesisSession(WsSession):
    """One answer being spoken on one realtime connection (see the module docstring)."""

    _what = "tts"

    def __init__(
        self,
        ws: ClientConnection,
        timeouts: Timeouts,
        sample_rate: int,
        queue_chunks: int,
        label: str = "",
    ) -> None:
        super().__init__(ws, timeouts)
        self._label = label  # "model=... voice=...", for the log line of the session's start
        self.sample_rate = sample_rate
        self._audio = PcmQueue(queue_chunks)
        self._pending = 0
        self.segments = 0

    # --- reader side ----------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            return False  # the realtime protocol is text-only
        try:
            event = _event_decoder.decode(message)
        except msgspec.DecodeError:
            raise errors.malformed("tts") from None
        kind = event.type
        if kind == "response.audio.delta":
            if event.delta:
                try:
                    pcm = binascii.a2b_base64(event.delta)
                except binascii.Error:
                    raise errors.malformed("tts") from None
                await self._audio.put(PcmChunk(pcm, self.sample_rate))
            return False
        if kind == "response.done":
            self._pending = max(0, self._pending - 1)
            return False
        if kind in ("session.created", "session.updated"):
            if event.session is not None and event.session.sample_rate:
                self.sample_rate = event.session.sample_rate
            if kind == "session.created":
                if event.session is not None and event.session.id and not self.upstream_id:
                    self.upstream_id = event.session.id[:128]  # ``sess_...``: the upstream's name
                # Logged here rather than when opened: the line then carries the upstream's id.
                log.info(
                    "tts session opened (%s)",
                    self._label,
                    extra=upstream_fields("tts", self.upstream_id),
                )
            return False
        if kind == "session.finished":
            return True
        if kind == "error":
            raise errors.from_error_object(event.error, default_status=502)
        return False

    def _on_end(self) -> None:
        self._audio.end()

    def _expecting(self) -> bool:
        return self._pending > 0 or self._finishing

    # --- caller side ----------------------------------------------------------------------------------
    async def _send_event(self, event: dict[str, object]) -> None:
        await self._send(_encoder.encode(event).decode())

    async def send_text(self, text: str) -> None:
        """Speak ``text`` next (a sentence, usually); whitespace-only text is skipped.

        Raises:
            UpstreamError: the session failed (its reason) or the connection broke.
            RuntimeError: called after :meth:`finish`.
        """
        self._check_input("send_text")
        if not text.strip():
            return
        await self._send_event(
            {"event_id": _event_id(), "type": "input_text_buffer.append", "text": text}
        )
        await self._send_event({"event_id": _event_id(), "type": "input_text_buffer.commit"})
        self._pending += 1
        self.segments += 1
        self._touch()

    async def _send_finish(self) -> None:
        await self._send_event({"event_id": _event_id(), "type": "session.finish"})

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        """PCM chunks as the upstream produces them; ends after ``session.finished``.

        Raises:
            UpstreamError: an ``error`` event, a broken connection, or silence longer than ``timeouts.read``
                while audio was due.
        """
        while (chunk := await self._audio.get()) is not None:
            yield chunk
        if self._error is not None:
            raise detached(self._error)


class QwenRealtimeSynthesizer:
    """A :class:`~qwen_gateway.providers.base.Synthesizer` over the Qwen-TTS realtime WebSocket.

    ``url`` is ``REAL_TIME_AUDIO_URL`` (its ``model=`` query selects the model; ``model`` overrides it).
    ``queue_chunks`` bounds the PCM waiting for the caller: beyond it the upstream is not read (backpressure).
    """

    def __init__(
        self,
        *,
        url: str,
        voice: str,
        sample_rate: int,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        model: str | None = None,
        language_type: str | None = None,
        queue_chunks: int = 64,
        workspace: str = "",
    ) -> None:
        self._workspace = workspace
        self._url = with_model(url, model) if model else url
        self._model = model or model_of_url(url) or "qwen-tts-realtime"
        self._voice = voice
        self._sample_rate = sample_rate
        self._api_key = api_key
        self._timeouts = timeouts
        self._backoff = backoff
        self._language_type = language_type
        self._queue_chunks = queue_chunks

    @property
    def model(self) -> str:
        return self._model

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    async def _open(self, voice: str, api_key: str | None) -> QwenRealtimeSynthesisSession:
        config: dict[str, object] = {
            "voice": voice,
            "mode": "commit",
            "response_format": "pcm",
            "sample_rate": self._sample_rate,
        }
        if self._language_type:
            config["language_type"] = self._language_type
        session = await open_session(
            self._url,
            api_key=api_key or self._api_key,
            timeouts=self._timeouts,
            what="tts",
            workspace=self._workspace,
            make=lambda ws: QwenRealtimeSynthesisSession(
                ws,
                self._timeouts,
                self._sample_rate,
                self._queue_chunks,
                label=f"model={self._model} voice={voice}",
            ),
            start=lambda session: session._send_event(
                {"event_id": _event_id(), "type": "session.update", "session": config}
            ),
        )
        return session

    def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AbstractAsyncContextManager[QwenRealtimeSynthesisSession]:
        """Open one answer's connection; leaving the block early cancels and closes the upstream.

        Transient failures to connect (refused connection, 429/5xx handshake) are retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...).
        """
        return session_scope(
            self._backoff, lambda: self._open(voice or self._voice, api_key), "tts"
        )
