"""CosyVoice TTS over DashScope's task WebSocket (``api-ws/v1/inference``), the optional second engine.

One ``run-task`` per answer: ``continue-task`` per text segment, ``finish-task`` at the end. Audio arrives as
binary frames (raw PCM, as requested), each after a ``sentence-synthesis`` event; ``task-finished`` ends the
session and ``task-failed`` becomes an :class:`UpstreamError`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from websockets.asyncio.client import ClientConnection

from ...errors import UpstreamError
from ..base import PcmChunk
from . import errors
from .policy import Backoff, Timeouts
from .ws import WsSession, open_ws

__all__ = ["CosyVoiceSynthesisSession", "CosyVoiceSynthesizer", "default_voice"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

#: Voices of the Qwen-TTS family; configured with a CosyVoice model they are replaced by the model's default.
QWEN_VOICES = frozenset(
    {"Cherry", "Serena", "Ethan", "Chelsie", "Dylan", "Jada", "Sunny", "Nofish", "Jennifer", "Ryan"}
)


def default_voice(model: str) -> str:
    """A voice that exists for the CosyVoice ``model`` generation."""
    if model.startswith("cosyvoice-v1"):
        return "longxiaochun"
    if model.startswith("cosyvoice-v2"):
        return "longxiaochun_v2"
    return "longanyang"


class _Header(msgspec.Struct):
    event: str = ""
    task_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class _Event(msgspec.Struct):
    header: _Header


_event_decoder = msgspec.json.Decoder(_Event)
_END = None


class CosyVoiceSynthesisSession(WsSession):
    """One answer being spoken as one CosyVoice task."""

    _what = "tts"

    def __init__(
        self,
        ws: ClientConnection,
        timeouts: Timeouts,
        task_id: str,
        sample_rate: int,
        queue_chunks: int,
    ) -> None:
        super().__init__(ws, timeouts)
        self.task_id = task_id
        self.sample_rate = sample_rate
        self._started = asyncio.Event()
        self._audio: asyncio.Queue[PcmChunk | None] = asyncio.Queue(queue_chunks)
        self._ended = False
        self._finishing = False
        self._awaiting_answer = False
        self.segments = 0

    # --- reader side ----------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        self._awaiting_answer = False
        if isinstance(message, bytes):
            if message:
                await self._audio.put(PcmChunk(message, self.sample_rate))
            return False
        try:
            header = _event_decoder.decode(message).header
        except msgspec.DecodeError:
            raise errors.malformed("tts") from None
        if header.task_id and header.task_id != self.task_id:
            return False
        name = header.event
        if name == "task-started":
            self._started.set()
            return False
        if name == "task-finished":
            return True
        if name == "task-failed":
            raise errors.from_task_failed(header.error_code, header.error_message)
        return False

    def _on_end(self) -> None:
        self._ended = True
        self._started.set()
        if not self._audio.full():
            self._audio.put_nowait(_END)

    def _expecting(self) -> bool:
        return self._finishing or self._awaiting_answer

    # --- caller side ----------------------------------------------------------------------------------
    async def _command(self, action: str, input: dict[str, object]) -> None:
        await self._send(
            _encoder.encode(
                {
                    "header": {"action": action, "task_id": self.task_id, "streaming": "duplex"},
                    "payload": {"input": input},
                }
            ).decode()
        )

    async def _wait_started(self) -> None:
        try:
            async with asyncio.timeout(self._timeouts.connect):
                await self._started.wait()
        except TimeoutError:
            raise UpstreamError(
                "tts: upstream did not start the task in time",
                code="upstream_timeout",
                status=504,
                transient=True,
            ) from None
        self._check_open()
        if self._complete:
            raise errors.closed_error("tts")

    async def send_text(self, text: str) -> None:
        """Speak ``text`` next; whitespace-only text is skipped.

        Raises:
            UpstreamError: the task failed (its reason) or the connection broke.
            RuntimeError: called after :meth:`finish`.
        """
        self._check_open()
        if self._finishing:
            raise RuntimeError("send_text() after finish()")
        if not text.strip():
            return
        await self._command("continue-task", {"text": text})
        self.segments += 1
        self._awaiting_answer = True
        self._touch()

    async def finish(self) -> None:
        """No more text: the upstream speaks what is left, then :meth:`audio` ends."""
        if self._finishing:
            return
        self._finishing = True
        await self._command("finish-task", {})
        self._touch()

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        """PCM chunks as the upstream produces them; ends after ``task-finished``.

        Raises:
            UpstreamError: ``task-failed``, a broken connection, or silence longer than ``timeouts.read``
                while audio was due.
        """
        queue = self._audio
        while True:
            if self._ended and queue.empty():
                if self._error is not None:
                    raise self._error
                return
            chunk = await queue.get()
            if chunk is not _END:
                yield chunk


class CosyVoiceSynthesizer:
    """A :class:`~qwen_gateway.providers.base.Synthesizer` over CosyVoice (``cosyvoice-v1/v2/v3*``)."""

    def __init__(
        self,
        *,
        ws_url: str,
        model: str,
        voice: str,
        sample_rate: int,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        queue_chunks: int = 64,
    ) -> None:
        self._url = ws_url
        self._model = model
        self._voice = voice if voice and voice not in QWEN_VOICES else default_voice(model)
        self._sample_rate = sample_rate
        self._api_key = api_key
        self._timeouts = timeouts
        self._backoff = backoff
        self._queue_chunks = queue_chunks

    @property
    def model(self) -> str:
        return self._model

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def voice(self) -> str:
        """The default voice (a Qwen voice name configured here is replaced by the model's default)."""
        return self._voice

    async def _open(self, voice: str, api_key: str | None) -> CosyVoiceSynthesisSession:
        ws = await open_ws(
            self._url, api_key=api_key or self._api_key, timeouts=self._timeouts, what="tts"
        )
        task_id = uuid.uuid4().hex
        session = CosyVoiceSynthesisSession(
            ws, self._timeouts, task_id, self._sample_rate, self._queue_chunks
        )
        try:
            session._start_reader()
            await session._send(
                _encoder.encode(
                    {
                        "header": {"action": "run-task", "task_id": task_id, "streaming": "duplex"},
                        "payload": {
                            "task_group": "audio",
                            "task": "tts",
                            "function": "SpeechSynthesizer",
                            "model": self._model,
                            "parameters": {
                                "text_type": "PlainText",
                                "voice": voice,
                                "format": "pcm",
                                "sample_rate": self._sample_rate,
                            },
                            "input": {},
                        },
                    }
                ).decode()
            )
            await session._wait_started()
        except BaseException:
            await session._shutdown()
            raise
        log.info("tts task %s started (model=%s voice=%s)", task_id[:8], self._model, voice)
        return session

    @asynccontextmanager
    async def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AsyncIterator[CosyVoiceSynthesisSession]:
        """Open one answer's task; leaving the block early cancels and closes the upstream.

        Transient failures to start (refused connection, 429/5xx handshake, throttled ``run-task``) are retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...) or ``run-task`` failed (bad voice ...).
        """
        chosen = voice if voice and voice not in QWEN_VOICES else self._voice
        session = await self._backoff.run(lambda: self._open(chosen, api_key), "tts session start")
        try:
            yield session
        finally:
            await session._shutdown()
