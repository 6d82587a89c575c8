"""HTTP speech synthesis (``qwen3-tts-flash``, ``qwen-tts``): DashScope serves these models over HTTP only.

Each text segment is one ``POST`` to ``/api/v1/services/aigc/multimodal-generation/generation`` (``QG_TTS_HTTP_URL``,
by default derived from ``DASHSCOPE_HTTP_BASE_URL``) with ``X-DashScope-SSE: enable`` and the body the official
SDK sends (``dashscope.audio.qwen_tts.SpeechSynthesizer.call(..., stream=True)``)::

    {"model": "qwen3-tts-flash", "input": {"text": "...", "voice": "Cherry"}, "parameters": {}}

The answer is a native SSE stream: events whose ``output.audio.data`` carries base64 PCM16LE at 24 kHz, mono,
with ``output.finish_reason`` ``"null"``, then one with ``"stop"`` (and the whole file's ``url``, not used here);
an ``event:error`` event (or a ``code`` in the data) is a failure.

Segments are spoken strictly in order, one request after the other, on the chat's keep-alive transport
(:mod:`.http1`: no new connection per segment). The cost of that simplicity: each segment after the first starts only when the previous
one's audio has been received, so one upstream time-to-first-audio per segment is added to the answer's
synthesis time. The client does not hear it as long as each segment's audio arrives faster than it plays, which
is the case for DashScope's streaming (audio for a sentence arrives in well under its duration).

Failures are :class:`UpstreamError`: a refused request (non-2xx) or a failure before a segment's first audio is
retried with backoff when transient (429, 5xx, connection errors); once audio of a segment was handed on it is
not (that audio would be spoken twice). Reads are bounded (an SSE event, an error body) and every read has the
read timeout.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import msgspec

from ...errors import UpstreamError, detached
from ..base import PcmChunk
from . import errors
from .http1 import Endpoint, RequestHeaders, UpstreamResponse, UpstreamTransport
from .policy import Backoff, Timeouts
from .sse import SseDecoder
from .ws import PcmQueue

__all__ = ["HttpSynthesisSession", "HttpSynthesizer"]

log = logging.getLogger(__name__)

#: PCM rate of the streamed audio (qwen3-tts-flash and qwen-tts stream 24 kHz only).
SAMPLE_RATE = 24000
#: Largest SSE event accepted (base64 PCM of one event is tens of KB).
MAX_EVENT_BYTES = 4 * 1024 * 1024
#: Largest error body read.
MAX_ERROR_BYTES = 64 * 1024
#: Text segments queued ahead of the request in flight before ``send_text`` waits.
MAX_PENDING_TEXTS = 64

_encoder = msgspec.json.Encoder()


class _Audio(msgspec.Struct):
    data: str | None = None


class _Output(msgspec.Struct):
    finish_reason: str | None = None
    audio: _Audio | None = None


class _Event(msgspec.Struct):
    output: _Output | None = None
    code: str | None = None
    message: str | None = None


_event_decoder = msgspec.json.Decoder(_Event)


async def _read_bounded(response: UpstreamResponse, limit: int) -> bytes:
    body = bytearray()
    while chunk := await response.receive():
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[:limit])


class HttpSynthesisSession:
    """One answer: segments queued by :meth:`send_text` are spoken one POST each, in order (module docstring).

    Implements :class:`~qwen_gateway.providers.base.SynthesisSession`; its worker task is created and cancelled
    by the session itself.
    """

    def __init__(self, synthesizer: HttpSynthesizer, voice: str, api_key: str | None) -> None:
        self._synth = synthesizer
        self._voice = voice
        self._api_key = api_key
        self._texts: asyncio.Queue[str | None] = asyncio.Queue(MAX_PENDING_TEXTS)
        self._audio = PcmQueue(synthesizer.queue_chunks)
        self._error: UpstreamError | None = None
        self._finishing = False
        self._carry = b""  # an odd byte of PCM waiting for its pair
        self.segments = 0
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="tts-http")

    # --- caller side ----------------------------------------------------------------------------------
    async def send_text(self, text: str) -> None:
        """Speak ``text`` next; whitespace-only text is skipped.

        Raises:
            UpstreamError: an earlier segment failed (its reason).
            RuntimeError: called after :meth:`finish`.
        """
        if self._error is not None:
            raise detached(self._error)
        if self._finishing:
            raise RuntimeError("send_text() after finish()")
        if not text.strip():
            return
        await self._texts.put(text)
        self.segments += 1

    async def finish(self) -> None:
        """No more text: :meth:`audio` ends once every queued segment was spoken. Later calls do nothing."""
        if self._finishing:
            return
        self._finishing = True
        await self._texts.put(None)

    async def audio(self) -> AsyncGenerator[PcmChunk, None]:
        """PCM chunks as they arrive; ends after :meth:`finish` once everything was spoken.

        Raises:
            UpstreamError: a segment failed (refused, broken stream, timeout, error event).
        """
        while (chunk := await self._audio.get()) is not None:
            yield chunk
        if self._error is not None:
            raise detached(self._error)

    async def aclose(self) -> None:
        """Stop the request in flight (its connection is dropped) and the worker."""
        worker = self._worker
        if not worker.done():
            worker.cancel()
            await asyncio.wait({worker})

    # --- worker ---------------------------------------------------------------------------------------
    async def _work(self) -> None:
        try:
            while (text := await self._texts.get()) is not None:
                await self._speak(text)
        except UpstreamError as err:
            self._error = detached(err)
            log.info("tts http failed: status=%s code=%s", err.status, err.code)
        except Exception:
            log.exception("tts http: unexpected failure")
            self._error = errors.malformed("tts")
        finally:
            self._audio.end()

    async def _speak(self, text: str) -> None:
        """One segment: POST, then hand on its audio; retried while none of its audio was handed on."""
        synth = self._synth
        attempt = 0
        while True:
            heard = [False]
            try:
                await self._request(text, heard)
                return
            except UpstreamError as err:
                if heard[0]:
                    raise
                await synth.backoff.retry_or_raise(err, attempt, "tts request")
            attempt += 1

    async def _request(self, text: str, heard: list[bool]) -> None:
        synth = self._synth
        try:
            response = await synth.transport.request(
                synth.endpoint,
                "POST",
                synth.request_headers(self._api_key),
                _encoder.encode(synth.request_body(text, self._voice)),
                synth.timeouts,
            )
            try:
                await self._read(response, heard)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            err = errors.from_transport(exc, "tts request")
            if isinstance(exc, httpx.TimeoutException) and not isinstance(
                exc, httpx.ConnectTimeout | httpx.PoolTimeout
            ):
                err.transient = False  # the read timeout was waited already: not again
            raise err from None

    async def _read(self, response: UpstreamResponse, heard: list[bool]) -> None:
        if response.status >= 400:
            body = await _read_bounded(response, MAX_ERROR_BYTES)
            raise errors.from_http(response.status, body, response.headers)
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "text/event-stream":
            # Not a stream (a JSON answer names the audio by URL only): not what was asked for.
            raise UpstreamError(
                f"tts: the upstream answered {media or 'no content type'}, not a stream",
                code="upstream_bad_response",
                status=502,
            )
        decoder = SseDecoder()
        unread = 0
        while chunk := await response.receive():
            unread += len(chunk)
            if unread > MAX_EVENT_BYTES:
                raise errors.malformed("tts")
            events = decoder.feed(chunk)
            if events:
                unread = 0
            for name, data in events:
                if await self._event(data, name, heard):
                    return
        for name, data in decoder.close():
            if await self._event(data, name, heard):
                return
        raise errors.closed_error("tts")

    async def _event(self, data: bytes, name: str | None, heard: list[bool]) -> bool:
        """Handle one event; True when the segment is complete."""
        try:
            event = _event_decoder.decode(data)
        except msgspec.DecodeError:
            raise errors.malformed("tts") from None
        if name == "error" or event.code:
            raise errors.from_error_object(
                {"code": event.code, "message": event.message}, default_status=502
            )
        output = event.output
        if output is None:
            raise errors.malformed("tts")
        audio = output.audio.data if output.audio is not None else None
        if audio:
            try:
                pcm = self._carry + binascii.a2b_base64(audio)
            except binascii.Error:
                raise errors.malformed("tts") from None
            cut = len(pcm) - len(pcm) % 2
            self._carry = pcm[cut:]
            if cut:
                heard[0] = True
                await self._audio.put(PcmChunk(pcm[:cut], SAMPLE_RATE))
        return output.finish_reason == "stop"


class HttpSynthesizer:
    """A :class:`~qwen_gateway.providers.base.Synthesizer` over HTTP streaming synthesis.

    ``transport`` carries the requests (the factory shares the chat's); ``url`` is
    :attr:`~qwen_gateway.config.Settings.tts_http_endpoint`; ``workspace`` is sent as
    ``X-DashScope-WorkSpace`` when set; ``language_type`` (``Chinese``, ``English`` ...) when set.
    """

    def __init__(
        self,
        transport: UpstreamTransport,
        *,
        url: str,
        model: str,
        voice: str,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        workspace: str = "",
        language_type: str | None = None,
        queue_chunks: int = 64,
    ) -> None:
        self.transport = transport
        self.url = url
        self.endpoint = Endpoint.parse(url)
        self._model = model
        self._voice = voice or "Cherry"
        self._api_key = api_key
        self.timeouts = timeouts
        self.backoff = backoff
        self._workspace = workspace
        self._language_type = language_type
        self.queue_chunks = queue_chunks

    @property
    def model(self) -> str:
        return self._model

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def request_body(self, text: str, voice: str) -> dict[str, Any]:
        """The JSON body for one segment (the SDK's shape)."""
        source: dict[str, Any] = {"text": text, "voice": voice}
        if self._language_type:
            source["language_type"] = self._language_type
        return {"model": self._model, "parameters": {}, "input": source}

    def request_headers(self, api_key: str | None) -> RequestHeaders:
        """The headers of one segment's request."""
        key = api_key or self._api_key
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if self._workspace:
            headers["X-DashScope-WorkSpace"] = self._workspace
        return RequestHeaders(headers)

    @asynccontextmanager
    async def _session(
        self, voice: str, api_key: str | None
    ) -> AsyncIterator[HttpSynthesisSession]:
        session = HttpSynthesisSession(self, voice, api_key)
        try:
            yield session
        finally:
            await session.aclose()

    def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AbstractAsyncContextManager[HttpSynthesisSession]:
        """One answer's session (no connection is opened before the first segment); leaving the block early
        stops the request in flight."""
        return self._session(voice or self._voice, api_key)
