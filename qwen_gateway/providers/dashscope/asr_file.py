"""File recognition (the seed's path): an asynchronous DashScope task over the native HTTP API.

The audio must already be at a URL DashScope can fetch (the uploaded object): submit the task with
``X-DashScope-Async: enable``, poll ``/tasks/{id}`` with backoff, then fetch the ``transcription_url`` result file.
Two input styles, chosen by the model's catalogue protocol (:class:`~.catalogue.AsrProtocol`):

* ``FILE_URLS`` (``paraformer-v1/v2``, ``paraformer-8k-v*``, ``fun-asr``, ``sensevoice-v1``,
  ``qwen-audio-3.1-asr-flash-filetrans``): ``input.file_urls`` (a list), answered with ``output.results[]``;
* ``FILE_URL`` (``qwen3-asr-flash-filetrans``, the SDK's ``QwenTranscription``): ``input.file_url`` (one
  string), answered with ``output.result`` (one ``transcription_url``).

Both result files carry ``transcripts[].text``. With a workspace every DashScope request (submit, poll) carries
``X-DashScope-WorkSpace``; the result download is a signed object URL and gets no DashScope header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn

import httpx
import msgspec

from ...errors import UpstreamError, UpstreamTimeout
from ...logs import upstream_fields
from ..base import AudioFormat, RecognitionSession
from . import errors
from .catalogue import AsrProtocol
from .http1 import read_httpx_body
from .policy import Backoff, ReadLimits, Timeouts

__all__ = ["FileRecognizer"]

log = logging.getLogger(__name__)

_RUNNING = frozenset({"PENDING", "RUNNING", "SUSPENDED"})


class _SubResult(msgspec.Struct):
    transcription_url: str | None = None
    subtask_status: str | None = None
    code: str | None = None
    message: str | None = None


class _TaskOutput(msgspec.Struct):
    task_id: str | None = None
    task_status: str | None = None
    results: list[_SubResult] | None = None
    #: the Qwen-ASR answer's single result (``output.result.transcription_url``)
    result: _SubResult | None = None
    code: str | None = None
    message: str | None = None


class _TaskAnswer(msgspec.Struct):
    output: _TaskOutput | None = None
    code: str | None = None
    message: str | None = None


class _Transcript(msgspec.Struct):
    text: str | None = ""
    channel_id: int | None = 0


class _ResultFile(msgspec.Struct):
    transcripts: list[_Transcript] | None = None


_task_decoder = msgspec.json.Decoder(_TaskAnswer)

#: The ``input`` of a submission, by input style.
_INPUTS: dict[AsrProtocol, Callable[[str], dict[str, Any]]] = {
    AsrProtocol.FILE_URLS: lambda url: {"file_urls": [url]},
    AsrProtocol.FILE_URL: lambda url: {"file_url": url},
}
_result_decoder = msgspec.json.Decoder(_ResultFile)


class FileRecognizer:
    """A non-streaming :class:`~qwen_gateway.providers.base.Recognizer`: submit a URL, poll, fetch the text.

    ``protocol``: the input style, ``AsrProtocol.FILE_URLS`` (``input.file_urls``) or ``AsrProtocol.FILE_URL``
    (``input.file_url``), from the model's catalogue row. ``workspace``: sent as ``X-DashScope-WorkSpace`` when set.
    ``poll_initial`` / ``poll_max``: the first delay between polls and its cap (it doubles every 3 polls, as the
    DashScope SDK does). ``limits.body`` bounds every answer read (task status, result file), ``limits.error_body``
    an error's body.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        http_base: str,
        model: str,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        protocol: AsrProtocol = AsrProtocol.FILE_URLS,
        workspace: str = "",
        poll_initial: float = 0.5,
        poll_max: float = 5.0,
        parameters: dict[str, Any] | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        if protocol not in _INPUTS:
            raise ValueError(f"FileRecognizer: {protocol} is not a file-recognition protocol")
        self._http = http
        self._base = http_base.rstrip("/")
        self._model = model
        self._protocol = protocol
        self._workspace = workspace
        self._api_key = api_key
        self._timeouts = timeouts
        self._backoff = backoff
        self._poll_initial = poll_initial
        self._poll_max = poll_max
        self._parameters = dict(parameters or {})
        self._timeout = timeouts.for_http()
        self._limits = limits or ReadLimits()

    @property
    def model(self) -> str:
        return self._model

    @property
    def streaming(self) -> bool:
        return False

    def accepts(self, format: str, sample_rate: int) -> bool:
        """File models download the stored upload as it is; the gateway never transcodes for them."""
        return True

    def session(
        self, *, format: AudioFormat, sample_rate: int, api_key: str | None = None
    ) -> AbstractAsyncContextManager[RecognitionSession]:
        """Not available: a file model needs the audio at a URL; use :meth:`transcribe_url`."""
        raise NotImplementedError(
            f"{self._model} is a file-recognition model: upload the audio and call transcribe_url()"
        )

    async def _request(
        self, method: str, url: str, *, api_key: str | None, what: str, **kwargs: Any
    ) -> bytes:
        """One HTTP exchange with retries on transient failures; the body of a 2xx answer (bounded)."""
        attempt = 0
        while True:
            try:
                request = self._http.build_request(method, url, timeout=self._timeout, **kwargs)
                response = await self._http.send(request, stream=True)
                status = response.status_code
                if status < 400:
                    return await read_httpx_body(response, self._limits.body)
                try:
                    body = await read_httpx_body(response, self._limits.error_body)
                except UpstreamError:
                    body = b""  # too long to be an error message: the status tells the error
                err = errors.from_http(status, body, response.headers)
            except httpx.TransportError as exc:
                err = errors.from_transport(exc, what)
                if isinstance(exc, httpx.TimeoutException) and not isinstance(
                    exc, httpx.ConnectTimeout
                ):
                    raise err from None
            await self._backoff.retry_or_raise(err, attempt, what)
            attempt += 1

    @property
    def protocol(self) -> AsrProtocol:
        return self._protocol

    def _headers(self, api_key: str | None) -> dict[str, str]:
        """The headers of every DashScope request: the key, and the workspace when one is set."""
        key = api_key or self._api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if self._workspace:
            headers["X-DashScope-WorkSpace"] = self._workspace
        return headers

    @staticmethod
    def _decode_task(body: bytes, what: str) -> _TaskOutput:
        try:
            answer = _task_decoder.decode(body)
        except msgspec.DecodeError:
            raise errors.malformed(what) from None
        if answer.output is None:
            if answer.code:
                raise errors.from_task_failed(answer.code, answer.message)
            raise errors.malformed(what)
        return answer.output

    @staticmethod
    def _task_failed(output: _TaskOutput) -> NoReturn:
        raise errors.from_task_failed(
            output.code or output.task_status or "upstream_error",
            output.message or f"recognition task {output.task_status}",
        )

    async def transcribe_url(self, url: str, *, api_key: str | None = None) -> str:
        """Recognise the audio at ``url``; return its text (channels joined by newlines).

        Raises:
            UpstreamError: submission refused, task or sub-task failed, result unreadable.
            UpstreamTimeout: the whole task took longer than ``timeouts.task``.
        """
        headers = {**self._headers(api_key), "X-DashScope-Async": "enable"}
        body = {
            "model": self._model,
            "input": _INPUTS[self._protocol](url),
            "parameters": self._parameters,
        }
        try:
            async with asyncio.timeout(self._timeouts.task):
                raw = await self._request(
                    "POST",
                    f"{self._base}/services/audio/asr/transcription",
                    api_key=api_key,
                    what="asr submit",
                    content=msgspec.json.encode(body),
                    headers={**headers, "Content-Type": "application/json"},
                )
                output = self._decode_task(raw, "asr submit")
                task_id = output.task_id
                if not task_id:
                    raise errors.malformed("asr submit")
                log.info(
                    "asr file task %s submitted (model=%s)",
                    task_id[:8],
                    self._model,
                    extra=upstream_fields("asr_file", task_id),
                )
                output = await self._poll(task_id, api_key)
                return await self._fetch_text(output)
        except TimeoutError:
            raise UpstreamTimeout("asr file task did not finish in time") from None

    async def _poll(self, task_id: str, api_key: str | None) -> _TaskOutput:
        delay = self._poll_initial
        polls = 0
        while True:
            await asyncio.sleep(delay)
            raw = await self._request(
                "GET",
                f"{self._base}/tasks/{task_id}",
                api_key=api_key,
                what="asr poll",
                headers=self._headers(api_key),
            )
            output = self._decode_task(raw, "asr poll")
            status = output.task_status
            if status == "SUCCEEDED":
                return output
            if status not in _RUNNING:
                log.info(
                    "asr file task %s ended: %s",
                    task_id[:8],
                    status,
                    extra=upstream_fields("asr_file", task_id),
                )
                self._task_failed(output)
            polls += 1
            if polls % 3 == 0:
                delay = min(delay * 2, self._poll_max)

    async def _fetch_text(self, output: _TaskOutput) -> str:
        results = output.results or ([output.result] if output.result is not None else [])
        ok = [r for r in results if r.subtask_status in (None, "SUCCEEDED") and r.transcription_url]
        if not ok:
            failed = results[0] if results else None
            raise errors.from_task_failed(
                (failed.code if failed else None) or "upstream_error",
                (failed.message if failed else None) or "recognition produced no result",
            )
        texts: list[str] = []
        for result in ok:
            assert result.transcription_url is not None
            # A signed object URL: no Authorization header (it would clash with the signature).
            raw = await self._request(
                "GET", result.transcription_url, api_key=None, what="asr result"
            )
            try:
                parsed = _result_decoder.decode(raw)
            except msgspec.DecodeError:
                raise errors.malformed("asr result") from None
            for transcript in parsed.transcripts or []:
                if transcript.text:
                    texts.append(transcript.text)
        return "\n".join(texts)
