"""Streaming recognition over DashScope's task WebSocket (``api-ws/v1/inference``).

Models: ``paraformer-realtime-v2`` (default), ``paraformer-realtime-8k-v2``, ``fun-asr-realtime``, ``gummy-*``.
A session is one ``run-task``: audio goes up as binary frames while it is still arriving, partial and final
sentences (``result-generated``) come back, ``finish-task`` flushes, ``task-finished`` ends it; ``task-failed``
becomes an :class:`UpstreamError`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection

from ...audio_formats import SNIFF_BYTES, UnknownAudioFormat, sniff
from ...errors import UpstreamError, detached
from ...logs import upstream_fields
from ...tasks import forget_frames
from ..base import AudioFormat, RecognitionResult
from . import errors
from .catalogue import AsrModel, AsrProtocol
from .policy import Backoff, Timeouts
from .ws import TaskEvent, TaskSession, open_session, session_scope

__all__ = ["RealtimeRecognitionSession", "RealtimeRecognizer", "task_asr_parameters"]

log = logging.getLogger(__name__)

#: Largest binary frame sent upstream; bigger feeds are split into frames of this size, as the SDK's
#: ``Recognition.call`` splits a file (12,800 bytes: 400 ms of 16 kHz PCM), so both send the same frames.
MAX_AUDIO_FRAME = 12_800


class _Sentence(msgspec.Struct):
    text: str | None = ""
    sentence_end: bool | None = None
    begin_time: int | None = None
    end_time: int | None = None
    sentence_id: int | None = 0
    heartbeat: bool | None = None


class _Output(msgspec.Struct):
    sentence: _Sentence | None = None
    transcription: _Sentence | None = None  # gummy models


class _Payload(msgspec.Struct):
    output: _Output | None = None


class _Event(TaskEvent):
    payload: _Payload | None = None


_event_decoder = msgspec.json.Decoder(_Event)


def _result(sentence: _Sentence) -> RecognitionResult | None:
    if sentence.heartbeat:
        return None
    final = (
        sentence.sentence_end
        if sentence.sentence_end is not None
        else sentence.end_time is not None
    )
    text = sentence.text or ""
    if not text and not final:
        return None
    return RecognitionResult(
        text=text,
        is_final=bool(final),
        sentence_id=sentence.sentence_id or 0,
        begin_ms=sentence.begin_time,
        end_ms=sentence.end_time,
    )


class RealtimeRecognitionSession(TaskSession):
    """One utterance being recognised while its audio is still arriving (one upstream task).

    Results are buffered without limit on sentences but not on partials: an unread partial is replaced by a
    newer partial of the same sentence (each partial carries the sentence's whole text so far).
    """

    _what = "asr"

    def __init__(self, ws: ClientConnection, timeouts: Timeouts, task_id: str) -> None:
        super().__init__(ws, timeouts, task_id)
        self._results: deque[RecognitionResult] = deque()
        self._wakeup = asyncio.Event()
        self.audio_bytes = 0

    # --- reader side ----------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        if isinstance(message, bytes):
            return False  # the recogniser never sends binary; ignore
        event = self._decode_event(message, _event_decoder)
        if event is None:
            return False
        if event.header.event == "result-generated":
            output = event.payload.output if event.payload is not None else None
            sentence = (output.sentence or output.transcription) if output is not None else None
            if sentence is not None:
                result = _result(sentence)
                if result is not None:
                    self._push(result)
            return False
        return self._task_event(event.header)

    def _push(self, result: RecognitionResult) -> None:
        items = self._results
        if (
            not result.is_final
            and items
            and not items[-1].is_final
            and items[-1].sentence_id == result.sentence_id
        ):
            items[-1] = result
        else:
            items.append(result)
        self._wakeup.set()

    def _on_end(self) -> None:
        super()._on_end()
        self._wakeup.set()

    # --- caller side ----------------------------------------------------------------------------------
    async def feed(self, audio: bytes) -> None:
        """Send more audio (in order). Waits while the upstream applies flow control.

        Raises:
            UpstreamError: the task failed or the connection broke (the upstream's reason when it gave one).
            RuntimeError: called after :meth:`finish`.
        """
        self._check_input("feed")
        view = memoryview(audio)
        for offset in range(0, len(view), MAX_AUDIO_FRAME):
            await self._send(view[offset : offset + MAX_AUDIO_FRAME].tobytes())
        self.audio_bytes += len(audio)
        self._touch()

    async def results(self) -> AsyncGenerator[RecognitionResult, None]:
        """Partial and final results as they arrive; ends after ``task-finished``.

        Raises:
            UpstreamError: ``task-failed``, a broken connection, or no answer for ``timeouts.read``.
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


#: ``run-task`` parameters a model gets beyond ``format`` / ``sample_rate``: what the official SDK sends by default
#: for it (gummy: ``TranslationRecognizerRealtime`` / ``...Chat`` send ``transcription_enabled`` and
#: ``translation_enabled``; its unset ``source_language`` goes as null, which we leave out).
_TASK_PARAMETERS: dict[str, dict[str, object]] = {
    "gummy-realtime-v1": {"transcription_enabled": True, "translation_enabled": False},
    "gummy-chat-v1": {"transcription_enabled": True, "translation_enabled": False},
}


def task_asr_parameters(model: str) -> dict[str, object]:
    """The extra ``run-task`` parameters of ``model`` (a copy; empty for most models)."""
    return dict(_TASK_PARAMETERS.get(model, {}))


def _url_format(head: bytes) -> tuple[AudioFormat, int]:
    """The recogniser ``format`` and sample rate of a downloaded file starting with ``head``.

    Raises:
        UpstreamError: ``unsupported_audio_format`` (415), not audio the recognisers accept.
    """
    try:
        info = sniff(head)
    except UnknownAudioFormat as exc:
        raise UpstreamError(
            f"asr: the file at the URL: {exc.message}", code=exc.code, status=415
        ) from None
    return info.format, info.sample_rate or 16000


class RealtimeRecognizer:
    """A streaming :class:`~qwen_gateway.providers.base.Recognizer` over the task WebSocket.

    ``workspace``: sent as ``X-DashScope-WorkSpace`` in the handshake when set. ``parameters``: extra
    ``run-task`` parameters (``format`` and ``sample_rate`` are the session's).
    """

    def __init__(
        self,
        *,
        ws_url: str,
        model: str,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        http: httpx.AsyncClient | None = None,
        parameters: dict[str, object] | None = None,
        workspace: str = "",
        spec: AsrModel | None = None,
    ) -> None:
        self._url = ws_url
        self._model = model
        self._workspace = workspace
        self._api_key = api_key
        self._timeouts = timeouts
        self._backoff = backoff
        self._http = http
        self._parameters = dict(parameters or {})
        self._spec = spec or AsrModel(model, AsrProtocol.TASK)

    @property
    def model(self) -> str:
        return self._model

    @property
    def streaming(self) -> bool:
        return True

    def accepts(self, format: str, sample_rate: int) -> bool:
        """True when the model takes ``format`` at ``sample_rate`` as it is (its catalogue entry)."""
        return self._spec.accepts(format, sample_rate)

    async def _open(
        self, format: AudioFormat, sample_rate: int, api_key: str | None
    ) -> RealtimeRecognitionSession:
        task_id = uuid.uuid4().hex
        session = await open_session(
            self._url,
            api_key=api_key or self._api_key,
            timeouts=self._timeouts,
            what="asr",
            workspace=self._workspace,
            make=lambda ws: RealtimeRecognitionSession(ws, self._timeouts, task_id),
            start=lambda session: session._run_task(
                {
                    "task_group": "audio",
                    "task": "asr",
                    "function": "recognition",
                    "model": self._model,
                    "parameters": {
                        **self._parameters,
                        "format": format,
                        "sample_rate": sample_rate,
                    },
                    "input": {},
                }
            ),
        )
        log.info(
            "asr task %s started (model=%s format=%s)",
            task_id[:8],
            self._model,
            format,
            extra=upstream_fields("asr", task_id),
        )
        return session

    def session(
        self, *, format: AudioFormat, sample_rate: int, api_key: str | None = None
    ) -> AbstractAsyncContextManager[RealtimeRecognitionSession]:
        """Open a recognition task; leaving the block closes the upstream connection.

        Transient failures to start (refused connection, 429/5xx handshake, throttled ``run-task``) are retried.

        Raises:
            UpstreamError: the handshake was refused (bad key ...), or ``run-task`` failed.
        """
        return session_scope(self._backoff, lambda: self._open(format, sample_rate, api_key), "asr")

    async def transcribe_url(self, url: str, *, api_key: str | None = None) -> str:
        """Download ``url`` and stream it through a session; return the final sentences joined.

        The file's format and rate are read from its first bytes, by the same rules as an upload's
        (:func:`qwen_gateway.audio_formats.sniff`; raw PCM cannot be told from its bytes and is refused).

        Raises:
            UpstreamError: the download or the recognition failed, or the file is not accepted audio
                (``unsupported_audio_format``, before any recognition task).
        """
        if self._http is None:
            raise RuntimeError("transcribe_url needs an httpx client")
        try:
            async with self._http.stream("GET", url, timeout=self._timeouts.for_http()) as response:
                if response.status_code >= 400:
                    raise errors.from_http(response.status_code, await response.aread())
                chunks = response.aiter_bytes()
                head = b""
                async for chunk in chunks:
                    head += chunk
                    if len(head) >= SNIFF_BYTES:
                        break
                fmt, rate = _url_format(head)
                async with self.session(format=fmt, sample_rate=rate, api_key=api_key) as s:
                    texts: list[str] = []

                    async def collect() -> None:
                        async for result in s.results():
                            if result.is_final and result.text:
                                texts.append(result.text)

                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(collect())
                            if head:
                                await s.feed(head)
                            async for chunk in chunks:
                                await s.feed(chunk)
                            await s.finish()
                    except* UpstreamError as group:
                        forget_frames(group)
                        raise detached(group.exceptions[0]) from None
                    return "".join(texts)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, "asr download") from None
