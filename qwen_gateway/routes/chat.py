"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible chat API.

The request is validated with the protocol's Structs, then the caller's JSON (unknown fields and DashScope extras
included) is forwarded to the upstream with three changes only: ``model`` defaults to ``QWEN_CHAT_MODEL`` (or
``QWEN_VLM_MODEL`` when the messages carry images), ``DEFAULT_SYSTEM_PROMPT`` is prepended when the caller sent no
system message, and streaming calls always ask the upstream for usage (the usage chunk is relayed only when the
caller asked for it). Streamed chunks are relayed byte for byte as they arrive, those that arrived together in one
write (``[DONE]`` with the last of them). Upstream errors before the first byte become the matching OpenAI error
and status; after it, an error chunk and a clean end of the stream. The exchange is journaled for the history
once the response is on its way.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import msgspec
from quart import Blueprint, Response, g, request

from protocol import ChatCompletionRequest

from ..auth import bearer_token
from ..errors import UpstreamError
from ..logs import upstream_fields
from ..metrics import UPSTREAM_WAIT
from ..providers import RelayBatch
from ..quota import Lease, Refusal
from ..storage import TurnRecord, TurnStatus
from .common import (
    authorized,
    caller_allowed,
    caller_limits,
    error_response,
    is_json,
    limit_response,
    not_json,
    read_body,
    services,
    unauthorized,
)

__all__ = ["chat_blueprint", "upstream_error_response"]

log = logging.getLogger("qwen_gateway.routes.chat")

_decode_request = msgspec.json.Decoder(ChatCompletionRequest).decode


def _for_dashscope(messages: list[Any]) -> list[Any]:
    """OpenAI message forms DashScope refuses, in the form it takes: the ``developer`` role is ``system``,
    and content given as text parts only is that text (text-only models take only a string)."""
    out = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if message.get("role") == "developer":
                message = {**message, "role": "system"}
            if (
                isinstance(content, list)
                and content
                and all(isinstance(p, dict) and p.get("type") == "text" for p in content)
            ):
                message = {**message, "content": "\n".join(str(p.get("text", "")) for p in content)}
        out.append(message)
    return out


def _whole_numbers(value: Any) -> Any:
    """``value`` with every float that is a whole number (``1.0``) turned into an int, at any depth."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


_SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
_DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.Encoder().encode
# Write ids need to be unique, not secret: a random prefix per process and a counter.
_WRITE_PREFIX = f"chat-{secrets.token_hex(8)}-"
_write_counter = itertools.count(1)


def _new_write_id() -> str:
    return f"{_WRITE_PREFIX}{next(_write_counter):x}"


def upstream_error_response(exc: UpstreamError, *, caller_key: bool = False) -> Response:
    """Map an upstream failure to the OpenAI error and HTTP status our caller should see.

    401/403 mean *our* DashScope key failed (a gateway fault: 502) unless the caller's own key was used
    (pass-through mode). 5xx become 502/503/504.
    """
    status = exc.status
    if status in (401, 403) and not caller_key:
        status = 502
    elif status in (504, 408) or exc.code == "upstream_timeout":
        status = 504
    elif status not in (400, 401, 403, 404, 413, 422, 429, 503):
        status = 502  # other 5xx and anything unexpected: a bad gateway
    headers = {}
    if status == 429 and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    message = exc.message
    if status == 502 and exc.status in (401, 403):
        message = f"The upstream rejected the gateway's credentials: {exc.message}"
    return error_response(
        status, message, code=exc.code, type=exc.type, param=exc.param, headers=headers
    )


def _frames(batch: RelayBatch, wants_usage: bool) -> bytes:
    """The SSE events relaying ``batch`` (usage-only chunks left out unless the caller asked for usage), and
    ``[DONE]`` after the final batch."""
    payloads = batch.payloads
    if batch.usage_only and not wants_usage:
        payloads = [p for i, p in enumerate(payloads) if i not in batch.usage_only]
    data = b"".join([b"data: " + p + b"\n\n" for p in payloads]) if payloads else b""
    return data + _DONE if batch.final else data


def _has_images(messages: list[Any]) -> bool:
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in (
                    "image_url",
                    "video_url",
                    "video",
                ):
                    return True
    return False


def _user_text(messages: list[Any]) -> str:
    """The last user message as text (image parts noted), for history."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = []
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "text":
                        texts.append(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        texts.append("[image]")
                return " ".join(texts)
    return ""


class _Closing:
    """The SSE body: ``body`` relayed; on ``aclose`` (Quart calls it once the response ends, also when the
    body was never iterated, e.g. the client left first) the upstream stream is closed and the upstream slot
    given back, which the generator's own ``finally`` cannot do when it never started."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        stream: Any,
        release: Callable[[], None],
    ) -> None:
        self._body = body
        self._stream = stream
        self._release = release

    def __aiter__(self) -> _Closing:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._body)

    async def aclose(self) -> None:
        try:
            await self._body.aclose()  # type: ignore[attr-defined]
            await self._stream.aclose()
        finally:
            self._release()


class _BadConversationId(ValueError):
    """The caller named a conversation id that cannot be one (it is echoed in a header)."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


def _conversation_id(body: Mapping[str, Any]) -> str:
    """The conversation the caller named (``X-Conversation-Id``, else the ``user`` field), or a new one.

    An id longer than 128 characters gives a new conversation (as before); one with control characters is
    refused (:class:`_BadConversationId`): it could not be echoed in the ``X-Conversation-Id`` response header.
    """
    cid = request.headers.get("X-Conversation-Id", "").strip()
    param: str | None = None
    where = "X-Conversation-Id"
    if not cid and isinstance(body.get("user"), str):
        cid = body["user"].strip()
        param, where = "user", "user"
    if any(unicodedata.category(c) == "Cc" for c in cid):
        raise _BadConversationId(
            f"Invalid {where}: a conversation id cannot contain control characters", param
        )
    if not cid or len(cid) > 128:
        cid = (
            f"conv-{secrets.token_hex(16)}"  # unguessable: it lets a voice session load the history
        )
    return cid


def chat_blueprint() -> Blueprint:
    bp = Blueprint("chat", __name__)

    @bp.post("/v1/chat/completions")
    async def completions() -> Response:
        svc = services()
        settings = svc.settings
        token = bearer_token(request.headers.get("Authorization"))
        if not caller_allowed(token):
            return unauthorized()

        raw = await read_body(settings.max_body_bytes)
        if raw is None:
            return error_response(
                413,
                f"Request body too large (limit {settings.max_body_bytes} bytes)",
                code="request_too_large",
            )
        # Checked after reading: an answer that leaves the body unread would reset the socket.
        if not is_json(request.mimetype):
            return not_json()
        try:
            try:
                _decode_request(raw)
                body: dict[str, Any] = msgspec.json.decode(raw)
            except msgspec.ValidationError as exc:
                if "got `float`" not in str(exc):
                    raise
                # JSON has one number type: 1.0 is the integer 1 (as in JSON Schema, hence in our
                # OpenAPI document). Whole floats become ints, then the request is checked again.
                body = _whole_numbers(msgspec.json.decode(raw))
                msgspec.convert(body, ChatCompletionRequest)
        except msgspec.ValidationError as exc:
            return error_response(
                400, f"Invalid request: {exc}", code="invalid_value", param=_param(exc)
            )
        except msgspec.DecodeError as exc:
            return error_response(400, f"Invalid JSON body: {exc}", code="invalid_json")
        except RecursionError:  # msgspec's answer to JSON nested deeper than the interpreter allows
            return error_response(400, "Invalid JSON body: nested too deeply", code="invalid_json")

        messages = body["messages"] = _for_dashscope(body["messages"])
        images = _has_images(messages)
        if not body.get("model"):
            body["model"] = settings.vlm_model if images else settings.chat_model
        if settings.default_system_prompt and not any(
            isinstance(m, dict) and m.get("role") == "system" for m in messages
        ):
            body["messages"] = [
                {"role": "system", "content": settings.default_system_prompt},
                *messages,
            ]

        try:
            conversation_id = _conversation_id(body)
        except _BadConversationId as exc:
            return error_response(400, str(exc), code="invalid_value", param=exc.param)
        # the conversation is the caller's: another key naming the same id has another conversation
        owner = svc.keys.owner(token)
        quotas = svc.quotas
        slot = await quotas.admit_upstream(owner, caller_limits(token), ("tokens",))
        if isinstance(slot, Refusal):
            log.info("limit reached", extra={"fields": {"limit": slot.kind}})
            if svc.metrics.enabled:
                svc.metrics.quota_refused(slot.kind)
            return limit_response(slot)
        name = svc.keys.policy(token).name
        if name:
            await quotas.name_owner(name, owner)
        try:
            return await _complete(svc, body, token, owner, conversation_id, images, slot)
        except BaseException:
            quotas.release_soon(slot)
            raise

    async def _complete(
        svc: Any,
        body: dict[str, Any],
        token: str | None,
        owner: str,
        conversation_id: str,
        images: bool,
        slot: Lease,
    ) -> Response:
        """The upstream call of an admitted request; ``slot`` (an upstream session) is released when the
        answer has been relayed."""
        settings = svc.settings
        passthrough = settings.key_passthrough
        caller_key = token if passthrough else None
        messages = body["messages"]
        quotas = svc.quotas
        request_id: str = g.request_id
        chat = svc.providers.vlm if images else svc.providers.chat
        started = time.perf_counter()
        user_text = _user_text(messages)
        record = _Recorder(
            svc, owner, conversation_id, request_id, str(body["model"]), user_text, started
        )
        extra_headers = {"X-Conversation-Id": conversation_id}

        if not body.get("stream"):
            waited = time.perf_counter()
            try:
                result = await chat.complete(body, api_key=caller_key)
            except UpstreamError as exc:
                log.info("upstream error", extra=_upstream_error_fields(exc))
                return upstream_error_response(exc, caller_key=passthrough)
            finally:  # X-Gateway-Overhead-Ms: the whole upstream call is not the gateway's time
                request.scope[UPSTREAM_WAIT] = time.perf_counter() - waited
                quotas.release_soon(slot)
            record.from_response(result)
            return Response(_encode(result), content_type="application/json", headers=extra_headers)

        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_body = dict(body)
        upstream_body["stream_options"] = {
            **(body.get("stream_options") or {}),
            "include_usage": True,
        }
        stream = chat.relay_batches(upstream_body, api_key=caller_key)
        waited = time.perf_counter()
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        except UpstreamError as exc:
            await stream.aclose()
            quotas.release_soon(slot)
            log.info("upstream error", extra=_upstream_error_fields(exc))
            return upstream_error_response(exc, caller_key=passthrough)
        finally:  # X-Gateway-Overhead-Ms: the upstream's time to its first bytes is not the gateway's
            request.scope[UPSTREAM_WAIT] = time.perf_counter() - waited

        async def relay() -> AsyncIterator[bytes]:
            done_sent = False
            try:
                if first is not None:
                    record.add(first)
                    data = _frames(first, wants_usage)
                    done_sent = first.final
                    if data:
                        yield data
                    async for batch in stream:
                        record.add(batch)
                        data = _frames(batch, wants_usage)
                        done_sent = batch.final
                        if data:
                            yield data
                record.finish("completed")
            except UpstreamError as exc:
                record.finish("failed")
                err = {
                    "error": {
                        "message": exc.message,
                        "type": exc.type or "api_error",
                        "param": exc.param,
                        "code": exc.code,
                    }
                }
                yield b"data: " + _encode(err) + b"\n\n"
            except BaseException:
                record.finish("interrupted")
                raise
            finally:
                await stream.aclose()
                quotas.release_soon(slot)
            if not done_sent:
                yield _DONE

        resp = Response(
            _Closing(relay(), stream, lambda: quotas.release_soon(slot)),
            content_type="text/event-stream; charset=utf-8",
            headers={**_SSE_HEADERS, **extra_headers},
        )
        resp.timeout = None
        return resp

    @bp.get("/v1/models")
    async def models() -> Response:
        if not authorized():
            return unauthorized()
        s = services().settings
        tts_model = s.tts_model_name
        seen: dict[str, str] = {}
        for model, kind in (
            (s.chat_model, "chat"),
            (s.vlm_model, "vlm"),
            (s.asr_model, "asr"),
            (tts_model, "tts"),
        ):
            seen.setdefault(model, kind)
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "dashscope", "capability": kind}
            for m, kind in seen.items()
        ]
        return Response(
            json.dumps({"object": "list", "data": data}), content_type="application/json"
        )

    return bp


def _param(exc: msgspec.ValidationError) -> str | None:
    text = str(exc)
    marker = "at `$."
    if marker in text:
        return text.split(marker, 1)[1].rstrip("`")
    return None


class _Recorder:
    """Collects one exchange and writes it through the outbox when it ends (never blocks the response)."""

    def __init__(
        self,
        svc: Any,
        owner: str,
        conversation_id: str,
        request_id: str,
        model: str,
        user: str,
        started: float,
    ) -> None:
        self.svc = svc
        self.owner = owner
        self.conversation_id = conversation_id
        self.request_id = request_id
        self.model = model
        self.user = user
        self.started = started
        self.parts: list[str] = []
        self.first_token_ms: float | None = None
        self.usage: tuple[int, int, int] | None = None
        self.done = False
        self.status: TurnStatus = "completed"
        self.total_ms = 0.0

    def add(self, batch: RelayBatch) -> None:
        if batch.content:
            if self.first_token_ms is None:
                self.first_token_ms = (time.perf_counter() - self.started) * 1000
            self.parts.append(batch.content)
        if batch.usage is not None:
            u = batch.usage
            self.usage = (u.prompt_tokens, u.completion_tokens, u.total_tokens)

    def from_response(self, result: Mapping[str, Any]) -> None:
        try:
            self.parts = [str(result["choices"][0]["message"].get("content") or "")]
        except (KeyError, IndexError, TypeError, AttributeError):
            self.parts = []
        usage = result.get("usage") or {}
        if isinstance(usage, dict):
            self.usage = (
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                int(usage.get("total_tokens") or 0),
            )
        self.finish("completed")

    def finish(self, status: TurnStatus) -> None:
        """The exchange ended with ``status``: journal it once the response is on its way."""
        if self.done:
            return
        self.done = True
        self.status = status
        self.total_ms = (time.perf_counter() - self.started) * 1000
        # Deferred to the next turn of the event loop: building and validating the record and handing it to
        # the journal thread stay off the response's path (the journal's fsync is never waited for anyway).
        asyncio.get_running_loop().call_soon(self._submit)

    def _submit(self) -> None:
        prompt, completion, total = self.usage or (0, 0, 0)
        self.svc.quotas.record(self.owner, {"tokens": total})
        first = self.first_token_ms
        try:
            # Checked once, by the outbox (a record breaking its constraints raises ValueError there).
            self.svc.storage.outbox.submit_nowait(
                TurnRecord(
                    write_id=_new_write_id(),
                    owner=self.owner,
                    conversation_id=self.conversation_id,
                    request_id=self.request_id,
                    channel="chat",
                    model=self.model,
                    user_content=self.user,
                    assistant_content="".join(self.parts),
                    status=self.status,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=total,
                    first_token_ms=None if first is None else max(0, round(first)),
                    total_ms=max(0, round(self.total_ms)),
                )
            )
        except (
            Exception
        ):  # a bug, or the outbox is closed (journal failures are logged by the outbox)
            log.exception("could not journal the exchange")


def _upstream_error_fields(exc: UpstreamError) -> dict[str, Any]:
    return upstream_fields("chat", exc.request_id, status=exc.status, code=exc.code)
