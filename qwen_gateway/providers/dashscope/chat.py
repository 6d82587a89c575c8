"""Chat and VLM over DashScope's OpenAI-compatible endpoint (``QWEN_API_CHAT_URL``).

One shared transport (a lean HTTP/1.1 keep-alive pool, see ``http1.py``) serves every call. Streams are parsed
incrementally: each SSE ``data:`` payload is decoded into a small msgspec Struct and handed on as a
:class:`ChatDelta` that keeps the payload's raw bytes, so the OpenAI-compatible route can relay it untouched.

Retries (429 throttles, 5xx, connection errors) happen with backoff and jitter, and only while nothing has been
yielded to the caller; once a delta went out, a failure surfaces as :class:`UpstreamError`.

What is read is bounded (:class:`~.policy.ReadLimits`): a line or an event of a stream, a non-streamed body and an
error body; an answer over its bound is an ``upstream_response_too_large`` error and its connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import httpx
import msgspec

from ... import __version__
from ...errors import UpstreamError
from ...logs import upstream_fields
from ..base import ChatDelta, RelayBatch, ToolCallDelta, Usage
from . import errors
from .http1 import Endpoint, HttpxTransport, RequestHeaders, UpstreamResponse, UpstreamTransport
from .policy import Backoff, ReadLimits, Timeouts
from .sse import SseDecoder, SseEvent, SseTooLarge

log = logging.getLogger(__name__)

__all__ = [
    "DashScopeChat",
    "RelayBatch",
]  # RelayBatch: from providers.base, kept here for old imports


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    role: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = 0


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_json_encoder = msgspec.json.Encoder()
_EMPTY_DELTA = _Delta()
_DONE = b"[DONE]"
_HEAD_LIMIT = 64 * 1024
_USER_AGENT = f"qwen-gateway/{__version__}"
_REST_LIMIT = 1.0  # seconds to wait for the end of a stream's body after [DONE]
_REST_BYTES = 64 * 1024  # and bytes read meanwhile (more: the connection is dropped instead)


def _usage(u: _Usage) -> Usage:
    return Usage(
        prompt_tokens=u.prompt_tokens or 0,
        completion_tokens=u.completion_tokens or 0,
        total_tokens=u.total_tokens or 0,
    )


def _tool_calls(calls: list[_ToolCall]) -> tuple[ToolCallDelta, ...]:
    return tuple(
        ToolCallDelta(
            c.index,
            c.id or None,
            (c.function.name or None) if c.function else None,
            (c.function.arguments or "") if c.function else "",
        )
        for c in calls
    )


def parse_chunk(raw: bytes) -> ChatDelta:
    """One ``data:`` payload as a :class:`ChatDelta`.

    Raises:
        UpstreamError: the payload is an ``{"error": ...}`` event, or is not a chunk at all.
    """
    try:
        chunk = _chunk_decoder.decode(raw)
    except msgspec.DecodeError:
        raise errors.malformed("chat stream") from None
    if chunk.error is not None:
        raise errors.from_error_object(chunk.error, default_status=502)
    usage = _usage(chunk.usage) if chunk.usage is not None else None
    choices = chunk.choices
    if choices:
        choice = choices[0]
        d = choice.delta or _EMPTY_DELTA
        return ChatDelta(
            raw,
            d.content or "",
            d.reasoning_content or "",
            d.role,
            choice.finish_reason,
            usage,
            choice.index,
            _tool_calls(d.tool_calls) if d.tool_calls else (),
        )
    return ChatDelta(raw, usage=usage)


#: What a batch builder makes of the events of one read: (batch or None, saw [DONE], saw a finish_reason,
#: an error to raise after the batch).
_Built = tuple[Any, bool, bool, UpstreamError | None]


def _build_deltas(events: list[SseEvent]) -> _Built:
    """The events of one read as :class:`ChatDelta` objects."""
    deltas: list[ChatDelta] = []
    done = finished = False
    error: UpstreamError | None = None
    for event, raw in events:
        if raw == _DONE:
            done = True
            break
        if event == "error":
            error = _error_event(raw)
            break
        try:
            delta = parse_chunk(raw)
        except UpstreamError as exc:
            error = exc
            break
        if delta.finish_reason is not None:
            finished = True
        deltas.append(delta)
    return (deltas or None), done, finished, error


def _build_relay(events: list[SseEvent]) -> _Built:
    """The events of one read as a :class:`RelayBatch` (no per-chunk objects beyond the decoded chunk)."""
    payloads: list[bytes] = []
    texts: list[str] = []
    usage: Usage | None = None
    usage_only: list[int] = []
    done = finished = False
    error: UpstreamError | None = None
    decode = _chunk_decoder.decode
    for event, raw in events:
        if raw == _DONE:
            done = True
            break
        if event == "error":
            error = _error_event(raw)
            break
        try:
            chunk = decode(raw)
        except msgspec.DecodeError:
            error = errors.malformed("chat stream")
            break
        if chunk.error is not None:
            error = errors.from_error_object(chunk.error, default_status=502)
            break
        text = ""
        if chunk.choices:
            choice = chunk.choices[0]
            if choice.finish_reason is not None:
                finished = True
            delta = choice.delta
            if delta is not None and delta.content and choice.index == 0:
                text = delta.content
                texts.append(text)
        if chunk.usage is not None:
            usage = _usage(chunk.usage)
            if not chunk.choices:
                usage_only.append(len(payloads))
        payloads.append(raw)
    if not payloads and not done:
        return None, done, finished, error
    return (
        RelayBatch(payloads, "".join(texts), usage, tuple(usage_only), done),
        done,
        finished,
        error,
    )


def _same(batch: Any) -> Any:
    return batch


def _final_relay(batch: RelayBatch | None) -> RelayBatch:
    """``batch`` marked final (an empty final batch for None)."""
    if batch is None:
        return RelayBatch([], "", None, (), True)
    return batch._replace(final=True)


async def _read_rest(response: UpstreamResponse) -> None:
    """After ``[DONE]``: read what is left of the body (a few bytes), so the connection can be reused.

    Its failures are moot (the answer is complete); an upstream slow to end the body loses the connection
    instead of holding the caller up.
    """
    size = 0
    try:
        async with asyncio.timeout(_REST_LIMIT):
            while data := await response.receive():
                size += len(data)
                if size > _REST_BYTES:
                    return  # the caller's aclose() drops the connection
    except (httpx.TransportError, UpstreamError, TimeoutError):
        pass


def _error_event(raw: bytes) -> UpstreamError:
    """The error carried by an SSE ``error`` event or a JSON error body."""
    try:
        obj: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        obj = raw.decode("utf-8", "replace")
    if isinstance(obj, dict) and "error" in obj:
        obj = obj["error"]
    return errors.from_error_object(obj)


class DashScopeChat:
    """A :class:`~qwen_gateway.providers.base.ChatModel` over an OpenAI-compatible ``/chat/completions`` URL.

    ``transport`` carries the requests: an :class:`~.http1.Http1Pool` (the factory's default), an
    :class:`~.http1.HttpxTransport`, or an ``httpx.AsyncClient`` (wrapped in one). It is shared and not owned:
    closing it is the caller's business. ``model`` fills requests that name none. ``api_key`` is the default
    key; each call may override it (pass-through mode). ``limits`` bound what is read of each answer.

    Raises:
        ValueError: ``url`` is not an ``http(s)`` URL.
    """

    def __init__(
        self,
        transport: UpstreamTransport | httpx.AsyncClient,
        *,
        url: str,
        model: str,
        api_key: str,
        timeouts: Timeouts,
        backoff: Backoff,
        limits: ReadLimits | None = None,
        workspace: str = "",
    ) -> None:
        if isinstance(transport, httpx.AsyncClient):
            transport = HttpxTransport(transport)
        self._transport: UpstreamTransport = transport
        self._endpoint = Endpoint.parse(url)
        self._model = model
        self._api_key = api_key
        self._backoff = backoff
        self._timeouts = timeouts
        self._limits = limits or ReadLimits()
        self._workspace = workspace
        self._default_headers = (
            self._headers_for(api_key, stream=False),
            self._headers_for(api_key, stream=True),
        )

    @property
    def model(self) -> str:
        """The model used when a request names none."""
        return self._model

    def _headers_for(self, key: str | None, *, stream: bool) -> RequestHeaders:
        """Every header of a chat request (``Host`` and ``Content-Length`` are the transport's): the one place to
        add one."""
        headers = [
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream" if stream else "application/json"),
            ("Accept-Encoding", "identity"),
            ("User-Agent", _USER_AGENT),
        ]
        if key:
            headers.append(("Authorization", f"Bearer {key}"))
        if self._workspace:
            headers.append(("X-DashScope-WorkSpace", self._workspace))
        return RequestHeaders(headers)

    def _headers(self, api_key: str | None, *, stream: bool) -> RequestHeaders:
        if not api_key or api_key == self._api_key:
            return self._default_headers[stream]
        return self._headers_for(api_key, stream=stream)

    def _payload(self, body: Mapping[str, Any], *, stream: bool) -> bytes:
        data = dict(body)
        if not data.get("model"):
            data["model"] = self._model
        data["stream"] = stream
        if not stream:
            data.pop("stream_options", None)
        return _json_encoder.encode(data)

    async def _send(self, payload: bytes, headers: RequestHeaders) -> UpstreamResponse:
        response = await self._transport.request(
            self._endpoint, "POST", headers, payload, self._timeouts
        )
        if response.status >= 400:
            try:
                body = await response.read(self._limits.error_body)
            except UpstreamError:
                body = b""  # too long to be an error message: the status tells the error
            finally:
                await response.aclose()
            raise errors.from_http(response.status, body, response.headers)
        if log.isEnabledFor(logging.DEBUG):
            rid = errors.request_id_of(response.headers)
            log.debug("chat answered", extra=upstream_fields("chat", rid, status=response.status))
        return response

    async def stream(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[ChatDelta, None]:
        """Stream a completion of ``body`` (``stream`` forced on) as deltas; see :class:`ChatModel`.

        The generator owns one upstream response: close it (``contextlib.aclosing``) or cancel the consuming
        task to drop the connection early.

        Raises:
            UpstreamError: the upstream refused the request, failed mid-stream (an ``{"error":...}`` event
                included), or closed the stream before ``[DONE]`` / a ``finish_reason``.
            UpstreamTimeout: connect, first byte or the gap between two chunks took too long.
        """
        async with aclosing(self._stream(body, api_key, _build_deltas, _same)) as batches:
            async for deltas in batches:
                for delta in deltas:
                    yield delta

    def relay_batches(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[RelayBatch, None]:
        """Like :meth:`stream`, for a relay: the chunks that arrived together come as one :class:`RelayBatch`.

        A relay forwards each batch in one write: it saves per-chunk work when the upstream sends bursts, and
        delays nothing (the chunks of a batch were all there). The last batch is ``final`` (it may hold no
        chunk); it comes as soon as the upstream's ``[DONE]`` does, before the rest of the body is read.
        Raises like :meth:`stream`.
        """
        return self._stream(body, api_key, _build_relay, _final_relay)

    async def _stream(
        self,
        body: Mapping[str, Any],
        api_key: str | None,
        build: Callable[[list[SseEvent]], _Built],
        final: Callable[[Any], Any],
    ) -> AsyncGenerator[Any, None]:
        """The upstream's stream: one ``build(events)`` batch per read that made one; at the end of a body that
        finished without ``[DONE]``, ``final(batch or None)``."""
        payload = self._payload(body, stream=True)
        headers = self._headers(api_key, stream=True)
        limits = self._limits
        yielded = False
        attempt = 0
        while True:
            response: UpstreamResponse | None = None
            try:
                response = await self._send(payload, headers)
                decoder = SseDecoder(limits.event, limits.event)
                finished = False
                head = bytearray()  # the body so far while no event came: maybe not SSE at all
                while data := await response.receive():
                    try:
                        events = decoder.feed(data)
                    except SseTooLarge as exc:
                        raise errors.too_large("chat stream", exc.limit) from None
                    if not events:
                        if not yielded and len(head) < _HEAD_LIMIT:
                            head += data
                        continue
                    batch, done, saw_finish, error = build(events)
                    finished = finished or saw_finish
                    if batch is not None:
                        yielded = True
                        yield batch
                    if error is not None:
                        raise error
                    if done:
                        if not response.complete:
                            await _read_rest(response)
                        return
                # The body ended without [DONE]: maybe with an event not followed by its blank line.
                try:
                    tail = decoder.close()
                except SseTooLarge as exc:
                    raise errors.too_large("chat stream", exc.limit) from None
                batch, done, saw_finish, error = build(tail) if tail else (None, False, False, None)
                ended = done or finished or saw_finish
                if ended and error is None:
                    batch = final(batch)
                if batch is not None:
                    yielded = True
                    yield batch
                if error is not None:
                    raise error
                if ended:
                    return
                if not yielded and head.lstrip().startswith(b"{"):
                    raise _error_event(bytes(head))  # a JSON error body instead of a stream
                raise errors.closed_error("chat stream")
            except UpstreamError as exc:
                if yielded:
                    raise
                await self._backoff.retry_or_raise(exc, attempt, "chat stream")
            except httpx.TransportError as exc:
                err = errors.from_transport(exc, "chat stream")
                if yielded or (
                    isinstance(exc, httpx.TimeoutException)
                    and not isinstance(exc, httpx.ConnectTimeout)
                ):
                    raise err from None
                await self._backoff.retry_or_raise(err, attempt, "chat stream")
            finally:
                if response is not None:
                    await response.aclose()
            attempt += 1

    async def complete(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> dict[str, Any]:
        """Non-streaming completion of ``body`` (``stream`` forced off): the upstream's JSON body.

        Raises:
            UpstreamError: the upstream refused the request or answered something that is not a JSON object.
            UpstreamTimeout: connect or the answer took too long.
        """
        payload = self._payload(body, stream=False)
        headers = self._headers(api_key, stream=False)
        attempt = 0
        while True:
            try:
                response = await self._send(payload, headers)
                try:
                    content = await response.read(self._limits.body)
                finally:
                    await response.aclose()
                try:
                    result = msgspec.json.decode(content)
                except msgspec.DecodeError:
                    raise errors.malformed("chat completion") from None
                if not isinstance(result, dict):
                    raise errors.malformed("chat completion")
                if "error" in result and "choices" not in result:
                    raise errors.from_error_object(result["error"])
                return result
            except UpstreamError as exc:
                await self._backoff.retry_or_raise(exc, attempt, "chat completion")
            except httpx.TransportError as exc:
                err = errors.from_transport(exc, "chat completion")
                if isinstance(exc, httpx.TimeoutException) and not isinstance(
                    exc, httpx.ConnectTimeout
                ):
                    raise err from None
                await self._backoff.retry_or_raise(err, attempt, "chat completion")
            attempt += 1
