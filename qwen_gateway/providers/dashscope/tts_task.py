"""Speech synthesis over DashScope's task WebSocket (``api-ws/v1/inference``, task ``tts``): the CosyVoice models
(``cosyvoice-v1/v2/v3-flash/v3-plus``) and the qwen-audio TTS models (``qwen-audio-3.0/3.1-tts-flash``), which
the official SDK drives alike (``dashscope.audio.tts_v2.SpeechSynthesizer``, ``client.audio.tts.connect``).

One task per answer: ``run-task``, a ``continue-task`` per text segment, ``finish-task`` at the end, sent exactly
as the SDK's streaming ``SpeechSynthesizer`` sends them (its default ``volume``/``rate``/``pitch``/``seed``/``type``
parameters included; ``tests/referee`` compares the frames). Audio arrives as binary frames (raw PCM, as
requested), each after a ``sentence-synthesis`` event; ``task-finished`` ends the session and ``task-failed``
becomes an :class:`UpstreamError`.

The 23 s rule: DashScope fails a task whose client sends nothing for 23 s. The socket is opened with the session
(its handshake overlaps the chat request), but ``run-task`` is only sent with the first text segment, so a slow
(thinking) model's silence before its first sentence cannot kill the task. If the upstream closed the idle
socket meanwhile (it closes a socket with no task after 60 s), the task starts on a new one: nothing was said yet,
so that is safe. Once the task runs, segments come at the pace of the chat stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from ...errors import detached
from ...logs import upstream_fields
from ..base import PcmChunk
from .catalogue import CatalogueError, tts_model
from .policy import Backoff, Timeouts
from .ws import PcmQueue, TaskSession, open_session, open_ws, task_event_decoder

__all__ = ["TaskSynthesisRun", "TaskSynthesisSession", "TaskSynthesizer", "default_voice"]

log = logging.getLogger(__name__)

#: Voices of the Qwen-TTS family; configured with a task-protocol model they are replaced by its default voice.
QWEN_VOICES = frozenset(
    {"Cherry", "Serena", "Ethan", "Chelsie", "Dylan", "Jada", "Sunny", "Nofish", "Jennifer", "Ryan"}
)

#: What the task carries (the SDK's ``task_group`` / ``task`` / ``function``, repeated in every continue-task).
_TASK = {"task_group": "audio", "task": "tts", "function": "SpeechSynthesizer"}


def default_voice(model: str) -> str:
    """The catalogue's default voice of ``model`` (the CosyVoice v3 one for a model it does not know)."""
    try:
        return tts_model(model).default_voice or "longanyang"
    except CatalogueError:
        return "longanyang"


class TaskSynthesisRun(TaskSession):
    """One task (``run-task`` ... ``task-finished``) on one socket."""

    _what = "tts"

    def __init__(
        self,
        ws: ClientConnection,
        timeouts: Timeouts,
        task_id: str,
        model: str,
        sample_rate: int,
        queue_chunks: int,
    ) -> None:
        super().__init__(ws, timeouts, task_id)
        self.model = model
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
        self._check_input("send_text")
        if not text.strip():
            return
        await self._command(
            "continue-task", {"model": self.model, **_TASK, "input": {"text": text}}
        )
        self.segments += 1
        self._awaiting_answer = True
        self._touch()

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        while (chunk := await self._audio.get()) is not None:
            yield chunk
        if self._error is not None:
            raise detached(self._error)


class TaskSynthesisSession:
    """One answer spoken as one task; the socket is open, the task starts with the first text (module docstring).

    Implements :class:`~qwen_gateway.providers.base.SynthesisSession`.
    """

    def __init__(
        self, synthesizer: TaskSynthesizer, ws: ClientConnection, voice: str, api_key: str | None
    ) -> None:
        self._synth = synthesizer
        self._idle_ws: ClientConnection | None = ws
        self._voice = voice
        self._api_key = api_key
        self._run: TaskSynthesisRun | None = None
        self._lock = asyncio.Lock()
        self._finishing = False
        self._error: BaseException | None = None
        #: set once the task runs, or once it is known that none will (finish() before any text)
        self._ready = asyncio.Event()

    @property
    def task_id(self) -> str | None:
        """The running task's id (None before the first text)."""
        return self._run.task_id if self._run is not None else None

    @property
    def segments(self) -> int:
        """Segments sent to the upstream so far."""
        return self._run.segments if self._run is not None else 0

    async def _started(self) -> TaskSynthesisRun:
        async with self._lock:
            if self._error is not None:
                raise detached(self._error)
            if self._run is None:
                ws, self._idle_ws = self._idle_ws, None
                try:
                    self._run = await self._synth._start(ws, self._voice, self._api_key)
                except Exception as exc:
                    self._error = detached(exc)
                    raise
                finally:
                    self._ready.set()
            return self._run

    async def send_text(self, text: str) -> None:
        """Speak ``text`` next; whitespace-only text is skipped. The first text starts the task.

        Raises:
            UpstreamError: the task could not start or failed (its reason), or the connection broke.
            RuntimeError: called after :meth:`finish`.
        """
        if self._finishing:
            raise RuntimeError("send_text() after finish()")
        if not text.strip():
            return
        run = await self._started()
        await run.send_text(text)

    async def finish(self) -> None:
        """No more text: the upstream speaks the remainder, then :meth:`audio` ends (at once when nothing was
        said: no task is started then)."""
        if self._finishing:
            return
        self._finishing = True
        if self._run is None:
            self._ready.set()
            return
        await self._run.finish()

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        """PCM chunks as the upstream produces them; ends after ``task-finished``.

        Raises:
            UpstreamError: ``task-failed``, a broken connection, or silence longer than ``timeouts.read``
                while audio was due.
        """
        await self._ready.wait()
        if self._error is not None:
            raise detached(self._error)
        if self._run is None:
            return
        async for chunk in self._run.audio():
            yield chunk

    async def aclose(self) -> None:
        """Stop the task (if any) and close the socket."""
        run, self._run = self._run, None
        ws, self._idle_ws = self._idle_ws, None
        self._ready.set()
        if run is not None:
            await run._shutdown()
        if ws is not None:
            try:
                await ws.close()
            except BaseException:
                ws.transport.abort()
                raise


class TaskSynthesizer:
    """A :class:`~qwen_gateway.providers.base.Synthesizer` over the task WebSocket (CosyVoice, qwen-audio TTS)."""

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
        self._workspace = workspace
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

    def run_task_payload(self, voice: str) -> dict[str, Any]:
        """The ``run-task`` payload for ``voice``: the SDK's, with PCM at the configured rate."""
        return {
            "model": self._model,
            **_TASK,
            "input": {},
            "parameters": {
                "voice": voice,
                "volume": 50,
                "text_type": "PlainText",
                "sample_rate": self._sample_rate,
                "rate": 1.0,
                "format": "pcm",
                "pitch": 1.0,
                "seed": 0,
                "type": 0,
            },
        }

    async def _connect(self, api_key: str | None) -> ClientConnection:
        return await open_ws(
            self._url,
            api_key=api_key or self._api_key,
            timeouts=self._timeouts,
            what="tts",
            workspace=self._workspace,
        )

    async def _start(
        self, ws: ClientConnection | None, voice: str, api_key: str | None
    ) -> TaskSynthesisRun:
        """Run a task on ``ws`` (a new socket when it is gone); transient failures to start are retried."""
        spare = ws

        async def attempt() -> TaskSynthesisRun:
            nonlocal spare
            sock, spare = spare, None
            if sock is not None and sock.state is not State.OPEN:
                log.info("tts: the idle upstream socket was closed; starting the task on a new one")
                with suppress(Exception):
                    await sock.close()
                sock = None
            task_id = uuid.uuid4().hex
            run = await open_session(
                self._url,
                api_key=api_key or self._api_key,
                timeouts=self._timeouts,
                what="tts",
                make=lambda ws: TaskSynthesisRun(
                    ws, self._timeouts, task_id, self._model, self._sample_rate, self._queue_chunks
                ),
                start=lambda run: run._run_task(self.run_task_payload(voice)),
                workspace=self._workspace,
                ws=sock,
            )
            log.info(
                "tts task %s started (model=%s voice=%s)",
                task_id[:8],
                self._model,
                voice,
                extra=upstream_fields("tts", task_id),
            )
            return run

        return await self._backoff.run(attempt, "tts task start")

    @asynccontextmanager
    async def _session(
        self, voice: str, api_key: str | None
    ) -> AsyncIterator[TaskSynthesisSession]:
        ws = await self._backoff.run(lambda: self._connect(api_key), "tts connect")
        session = TaskSynthesisSession(self, ws, voice, api_key)
        try:
            yield session
        finally:
            await session.aclose()

    def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AbstractAsyncContextManager[TaskSynthesisSession]:
        """Open one answer's socket (the task starts with the first text); leaving the block early cancels the
        task and closes the upstream.

        Transient failures to connect or to start the task (refused connection, 429/5xx handshake, throttled
        ``run-task``) are retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...); from the first ``send_text``: ``run-task``
                failed (bad voice, model ...).
        """
        chosen = voice if voice and voice not in QWEN_VOICES else self._voice
        return self._session(chosen, api_key)
