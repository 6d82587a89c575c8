"""CosyVoice TTS over DashScope's task WebSocket (``api-ws/v1/inference``), the optional second engine.

One ``run-task`` per answer: ``continue-task`` per text segment, ``finish-task`` at the end. Audio arrives as
binary frames (raw PCM, as requested), each after a ``sentence-synthesis`` event; ``task-finished`` ends the
session and ``task-failed`` becomes an :class:`UpstreamError`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager

from websockets.asyncio.client import ClientConnection

from ...logs import upstream_fields
from ..base import PcmChunk
from .policy import Backoff, Timeouts
from .ws import PcmQueue, TaskSession, open_session, session_scope, task_event_decoder

__all__ = ["CosyVoiceSynthesisSession", "CosyVoiceSynthesizer", "default_voice"]

log = logging.getLogger(__name__)

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


class CosyVoiceSynthesisSession(TaskSession):
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
        super().__init__(ws, timeouts, task_id)
        self.sample_rate = sample_rate
        self._audio = PcmQueue(queue_chunks)
        self._awaiting_answer = False
        self.segments = 0

    # --- reader side ----------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        self._awaiting_answer = False
        if isinstance(message, bytes):
            if message:
                await self._audio.put(PcmChunk(message, self.sample_rate))
            return False
        event = self._decode_event(message, task_event_decoder)
        return event is not None and self._task_event(event.header)

    def _on_end(self) -> None:
        super()._on_end()
        self._audio.end()

    def _expecting(self) -> bool:
        return self._finishing or self._awaiting_answer

    # --- caller side ----------------------------------------------------------------------------------
    async def send_text(self, text: str) -> None:
        """Speak ``text`` next; whitespace-only text is skipped.

        Raises:
            UpstreamError: the task failed (its reason) or the connection broke.
            RuntimeError: called after :meth:`finish`.
        """
        self._check_input("send_text")
        if not text.strip():
            return
        await self._command("continue-task", {"input": {"text": text}})
        self.segments += 1
        self._awaiting_answer = True
        self._touch()

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        """PCM chunks as the upstream produces them; ends after ``task-finished``.

        Raises:
            UpstreamError: ``task-failed``, a broken connection, or silence longer than ``timeouts.read``
                while audio was due.
        """
        while (chunk := await self._audio.get()) is not None:
            yield chunk
        if self._error is not None:
            raise self._error


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
        workspace: str = "",
    ) -> None:
        self._url = ws_url
        self._model = model
        self._workspace = workspace
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
        task_id = uuid.uuid4().hex
        session = await open_session(
            self._url,
            api_key=api_key or self._api_key,
            timeouts=self._timeouts,
            what="tts",
            workspace=self._workspace,
            make=lambda ws: CosyVoiceSynthesisSession(
                ws, self._timeouts, task_id, self._sample_rate, self._queue_chunks
            ),
            start=lambda session: session._run_task(
                {
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
                }
            ),
        )
        log.info(
            "tts task %s started (model=%s voice=%s)",
            task_id[:8],
            self._model,
            voice,
            extra=upstream_fields("tts", task_id),
        )
        return session

    def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AbstractAsyncContextManager[CosyVoiceSynthesisSession]:
        """Open one answer's task; leaving the block early cancels and closes the upstream.

        Transient failures to start (refused connection, 429/5xx handshake, throttled ``run-task``) are retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...) or ``run-task`` failed (bad voice ...).
        """
        chosen = voice if voice and voice not in QWEN_VOICES else self._voice
        return session_scope(self._backoff, lambda: self._open(chosen, api_key), "tts")
