"""``POST /compatible-mode/v1/chat/completions``: DashScope's OpenAI-compatible chat, streamed or not.

Validation answers the 400s of ``dashscope-protocols.md`` §1.2/§2 with DashScope's messages; a stream is
``data: {json}`` events — a role chunk, text chunks, a finish chunk, a usage chunk only with
``stream_options.include_usage`` — then ``data: [DONE]`` (§1.4). ``enable_thinking`` streams
``reasoning_content`` first; ``n`` (1-4) interleaves choices.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from .asgi import BodyTooLarge, HttpRequest, bearer_key, dumps
from .corpus import count_tokens, pick_reasoning, pick_reply, tokenize
from .errors import compat_body, find_family
from .faults import Fault
from .records import ChatRequestRecord
from .state import SimulatorState, ToolCallScript

__all__ = ["handle_chat"]


_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
_DATA_URI_LIMIT = 10 * 1024 * 1024
_BAD_URL = "The provided URL does not appear to be valid. Ensure it is correctly formatted."
_STREAM_FAULTS = frozenset({"stall", "drop", "stream_error", "malformed"})
_COALESCE_BYTES = 32 * 1024
_DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """A request DashScope would refuse: status, code (compat or native) and message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param


@dataclass
class _Plan:
    """A validated request."""

    model: str
    stream: bool
    include_usage: bool
    n: int
    thinking: bool
    max_tokens: int | None
    stop: list[str]
    json_mode: bool
    prompt: str
    prompt_tokens: int
    images: list[bytes] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    has_images: bool = False


async def handle_chat(state: SimulatorState, req: HttpRequest) -> None:
    """Serve one chat completion request."""
    log = state.log
    conn = log.open("chat", req.path, req.headers)
    request_id = str(uuid.uuid4())
    rec = ChatRequestRecord(request_id, conn, req.headers, b"")
    log.chat_requests.append(rec)
    reason = "error"
    try:
        try:
            rec.raw = await req.body(state.config.max_body_bytes)
        except BodyTooLarge:
            await _send_error(req, rec, ApiError(413, "Request body too large."))
            reason = "rejected"
            return
        call = _ChatCall(state, req, rec)
        outcome = await req.unless_disconnected(call.run())
        # None: the client went away
        reason = outcome if outcome is not None else ("complete" if rec.completed else "client")
    except asyncio.CancelledError:
        reason = "shutdown"
        raise
    finally:
        log.close(conn, reason, status=rec.status)


async def _send_error(
    req: HttpRequest,
    rec: ChatRequestRecord,
    err: ApiError,
    headers: dict[str, str] | None = None,
) -> None:
    family = find_family(err.status, err.code)
    body = compat_body(family, rec.request_id, message=err.message, param=err.param, type=err.type)
    rec.status = err.status
    rec.error_code = family.compat_code
    await req.respond_json(err.status, body, {"x-request-id": rec.request_id, **(headers or {})})


class _ChatCall:
    def __init__(self, state: SimulatorState, req: HttpRequest, rec: ChatRequestRecord) -> None:
        self.state = state
        self.cfg = state.config
        self.req = req
        self.rec = rec
        self.arrived = 0.0  # loop time the request was taken up (after an injected delay)
        self.tool: ToolCallScript | None = None  # the scripted tool call choice 0 makes

    async def run(self) -> str:
        state, req, rec = self.state, self.req, self.rec
        call = rec.request_id
        delay = state.faults.take("chat", frozenset({"delay"}), call).get("delay")
        if delay is not None:
            await asyncio.sleep(delay.seconds or 0.0)
        # Generation time counts from here, as a client sees it: parsing, validating and counting the prompt's
        # tokens happen within the time to first token, not before it (however long the conversation is).
        self.arrived = asyncio.get_running_loop().time()
        if not self.cfg.key_ok(bearer_key(req.headers)):
            await _send_error(req, rec, ApiError(401, find_family(401).compat_message))
            return "rejected"
        injected = state.faults.take("chat", frozenset({"http_error"}), call).get("http_error")
        if injected is not None:
            family = find_family(injected.status, injected.code)
            headers = {}
            if injected.retry_after is not None:
                headers["retry-after"] = f"{injected.retry_after:g}"
            err = ApiError(
                injected.status, injected.message or family.compat_message, code=family.compat_code
            )
            await _send_error(req, rec, err, headers)
            return "rejected"
        try:
            try:
                body = msgspec.json.decode(rec.raw)
            except msgspec.DecodeError:
                raise ApiError(400, "We could not parse the JSON body of your request.") from None
            rec.body = body
            plan = _validate(body, self.cfg)
            rec.stream = plan.stream
            rec.images = plan.images
            await self._fetch_images(plan)
        except ApiError as err:
            await _send_error(req, rec, err)
            return "rejected"
        kinds = _STREAM_FAULTS if plan.stream else frozenset({"stall", "drop", "malformed"})
        faults = state.faults.take("chat", kinds, call)
        texts, finish = self._replies(body, plan)
        self.tool = state.tool_calls.take(body)
        if self.tool is not None:  # choice 0 says the script's text, then calls the tool
            texts[0], finish[0] = self.tool.text, "tool_calls"
        rec.replies = texts
        reasoning = pick_reasoning(plan.prompt) if plan.thinking else ""
        rec.reasoning = reasoning
        if plan.stream:
            return await self._stream(plan, texts, finish, reasoning, faults)
        return await self._complete(plan, texts, finish, faults)

    # ------------------------------------------------------------------ replies
    def _replies(self, body: dict[str, Any], plan: _Plan) -> tuple[list[str], list[str]]:
        fixed = self.state.replies.take(body)
        texts: list[str] = []
        finish: list[str] = []
        for i in range(plan.n):
            text = (
                fixed
                if fixed is not None
                else pick_reply(plan.prompt, vision=plan.has_images, index=i)
            )
            if plan.json_mode and fixed is None:
                first = text.strip().splitlines()[0].lstrip("#").strip() if text.strip() else ""
                text = dumps({"answer": first}).decode()
            reason = "stop"
            for s in plan.stop:
                if s and s in text:
                    text = text[: text.index(s)]
            if plan.max_tokens is not None:
                tokens = tokenize(text)
                if len(tokens) > plan.max_tokens:
                    text = "".join(tokens[: plan.max_tokens])
                    reason = "length"
            texts.append(text)
            finish.append(reason)
        return texts, finish

    def _usage(self, plan: _Plan, texts: list[str], reasoning: str) -> dict[str, Any]:
        completion = sum(count_tokens(t) for t in texts)
        reasoning_tokens = count_tokens(reasoning) * len(texts) if reasoning else 0
        completion += reasoning_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": plan.prompt_tokens + completion,
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return usage

    async def _fetch_images(self, plan: _Plan) -> None:
        if not (self.cfg.fetch_image_urls and plan.image_urls):
            return
        timeout = httpx.Timeout(self.cfg.image_fetch_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            for url in plan.image_urls:
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    raise ApiError(400, "Failed to download multimodal content.") from None
                if response.status_code != 200:
                    raise ApiError(400, "Failed to download multimodal content.")
                self.rec.images.append(response.content)

    # ------------------------------------------------------------------ non-streaming
    async def _complete(
        self, plan: _Plan, texts: list[str], finish: list[str], faults: dict[str, Fault]
    ) -> str:
        req, rec = self.req, self.rec
        generation = self.cfg.ttft
        if self.cfg.tokens_per_second > 0:
            generation += max(count_tokens(t) for t in texts) / self.cfg.tokens_per_second
        wait = self.arrived + generation - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        choices: list[dict[str, Any]] = [
            {
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "index": i,
                "logprobs": None,
            }
            for i, (text, reason) in enumerate(zip(texts, finish, strict=True))
        ]
        if self.tool is not None:
            choices[0]["message"]["tool_calls"] = [
                {
                    "id": self._tool_call_id(),
                    "type": "function",
                    "index": 0,
                    "function": {"name": self.tool.name, "arguments": self.tool.arguments},
                }
            ]
        body = {
            "choices": choices,
            "object": "chat.completion",
            "usage": self._usage(plan, texts, "") | {"prompt_tokens_details": {"cached_tokens": 0}},
            "created": int(time.time()),
            "system_fingerprint": None,
            "model": plan.model,
            "id": f"chatcmpl-{rec.request_id}",
        }
        rec.status = 200
        stall = faults.get("stall")
        if stall is not None:
            await _stall(stall)
        data = dumps(body)
        if "malformed" in faults:
            data = (faults["malformed"].payload or "").encode() or data[: len(data) // 2]
        if "drop" in faults:
            await req.start(200, "application/json", {"x-request-id": rec.request_id})
            await req.write(data[: len(data) // 2])
            return "dropped"
        rec.completed = True
        await req.respond(200, data, "application/json", {"x-request-id": rec.request_id})
        return "complete"

    # ------------------------------------------------------------------ streaming
    async def _stream(
        self,
        plan: _Plan,
        texts: list[str],
        finish: list[str],
        reasoning: str,
        faults: dict[str, Fault],
    ) -> str:
        req, rec, cfg = self.req, self.rec, self.cfg
        created = int(time.time())
        tail = dumps(
            {
                "object": "chat.completion.chunk",
                "usage": None,
                "created": created,
                "system_fingerprint": None,
                "model": plan.model,
                "id": f"chatcmpl-{rec.request_id}",
            }
        )[1:]

        def chunk(choice: dict[str, Any]) -> bytes:
            return b'data: {"choices":[' + dumps(choice) + b"]," + tail + b"\n\n"

        # Steps: step 0 holds the role chunks; every later step is one generated chunk per choice.
        per_choice = [
            self._choice_events(i, texts[i], finish[i], reasoning, plan.thinking, chunk)
            for i in range(plan.n)
        ]
        steps: list[list[bytes]] = []
        for i in range(max(len(events) for events in per_choice)):
            steps.append([events[i] for events in per_choice if i < len(events)])
        if plan.include_usage:
            usage = self._usage(plan, texts, reasoning)
            steps[-1].append(
                b'data: {"choices":[],'
                + dumps(
                    {
                        "object": "chat.completion.chunk",
                        "usage": usage,
                        "created": created,
                        "system_fingerprint": None,
                        "model": plan.model,
                        "id": f"chatcmpl-{rec.request_id}",
                    }
                )[1:]
                + b"\n\n"
            )
        steps[-1].append(_DONE)

        await req.start(
            200,
            "text/event-stream;charset=UTF-8",
            {"cache-control": "no-cache", "x-request-id": rec.request_id},
        )
        rec.status = 200
        by_position = {f.after: f for f in faults.values()}
        loop = asyncio.get_running_loop()
        step_seconds = (
            cfg.chat_chunk_tokens / cfg.tokens_per_second if cfg.tokens_per_second else 0.0
        )
        pending = bytearray()
        start = self.arrived
        for index, step in enumerate(steps):
            # The role chunk goes out with the first token, at ttft.
            due = start + cfg.ttft + max(0, index - 1) * step_seconds
            wait = due - loop.time()
            if wait > 0:
                if pending:
                    await req.write(bytes(pending))
                    pending.clear()
                await asyncio.sleep(wait)
            for event in step:
                if rec.events_sent in by_position:
                    outcome = await self._stream_fault(faults, rec.events_sent, pending)
                    if outcome is not None:
                        return outcome
                pending += event
                rec.events_sent += 1
                if step_seconds or len(pending) >= _COALESCE_BYTES:
                    await req.write(bytes(pending))
                    pending.clear()
        rec.completed = True
        await req.write(bytes(pending), more=False)
        return "complete"

    async def _stream_fault(
        self, faults: dict[str, Fault], position: int, pending: bytearray
    ) -> str | None:
        req, rec = self.req, self.rec
        if pending:
            await req.write(bytes(pending))
            pending.clear()
        malformed = faults.get("malformed")
        if malformed is not None and malformed.after == position:
            bad = malformed.payload or 'data: {"choices":[{"delta":{"content":"\u4f60'
            await req.write(bad.encode() + b"\n\n")
        stall = faults.get("stall")
        if stall is not None and stall.after == position:
            await _stall(stall)
        error = faults.get("stream_error")
        if error is not None and error.after == position:
            payload = {
                "error": {
                    "code": error.code,
                    "message": error.message,
                    "type": error.code,
                    "param": None,
                },
                "id": f"chatcmpl-{rec.request_id}",
                "request_id": rec.request_id,
            }
            rec.error_code = error.code
            await req.write(b"data: " + dumps(payload) + b"\n\n", more=False)
            return "failed"
        drop = faults.get("drop")
        if drop is not None and drop.after == position:
            return "dropped"
        return None

    def _choice_events(
        self,
        index: int,
        text: str,
        finish_reason: str,
        reasoning: str,
        thinking: bool,
        chunk: Any,
    ) -> list[bytes]:
        n = self.cfg.chat_chunk_tokens
        events = [
            chunk(
                {
                    "delta": {"content": "", "role": "assistant"},
                    "index": index,
                    "logprobs": None,
                    "finish_reason": None,
                }
            )
        ]
        r_tokens = tokenize(reasoning) if reasoning else ()
        for i in range(0, len(r_tokens), n):
            events.append(
                chunk(
                    {
                        "delta": {
                            "content": None,
                            "reasoning_content": "".join(r_tokens[i : i + n]),
                        },
                        "index": index,
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
        tokens = tokenize(text)
        pieces = ["".join(tokens[i : i + n]) for i in range(0, len(tokens), n)]
        with_text = self.cfg.finish_chunk_with_text and pieces and not (index == 0 and self.tool)
        for j, piece in enumerate(pieces):
            delta: dict[str, Any] = {"content": piece}
            if thinking:
                delta["reasoning_content"] = None
            last = j == len(pieces) - 1
            events.append(
                chunk(
                    {
                        "finish_reason": finish_reason if (with_text and last) else None,
                        "delta": delta,
                        "index": index,
                        "logprobs": None,
                    }
                )
            )
        if index == 0 and self.tool is not None:
            events.extend(self._tool_events(self.tool, chunk))
        if not with_text:
            events.append(
                chunk(
                    {
                        "finish_reason": finish_reason,
                        "delta": {"content": ""},
                        "index": index,
                        "logprobs": None,
                    }
                )
            )
        return events

    def _tool_call_id(self) -> str:
        return f"call_{self.rec.request_id.replace('-', '')[:24]}"

    def _tool_events(
        self, tool: ToolCallScript, chunk: Callable[[dict[str, Any]], bytes]
    ) -> list[bytes]:
        """A tool call as DashScope streams it: the id, type and name with empty arguments, then the arguments
        in pieces of a few characters."""

        def call(fragment: dict[str, Any]) -> bytes:
            return chunk(
                {
                    "delta": {"content": None, "tool_calls": [{"index": 0, **fragment}]},
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": None,
                }
            )

        head = {
            "id": self._tool_call_id(),
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        args = tool.arguments
        step = 8
        return [call(head)] + [
            call({"function": {"arguments": args[i : i + step]}}) for i in range(0, len(args), step)
        ]


async def _stall(fault: Fault) -> None:
    if fault.seconds is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(fault.seconds)


# ---------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(body: Any, cfg: Any) -> _Plan:
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter.")
    if not model.lower().startswith(tuple(cfg.known_model_prefixes)):
        raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.")
    messages = body.get("messages")
    if messages is None:
        raise ApiError(400, "'messages' is a required property", param="messages")
    if not isinstance(messages, list):
        raise ApiError(400, f"{dumps(messages).decode()} is not of type 'array' - 'messages'")
    if not messages:
        raise ApiError(400, "[] is too short - 'messages'", param="messages")
    vision = any(marker in model.lower() for marker in cfg.vl_model_markers)
    images: list[bytes] = []
    image_urls: list[str] = []
    has_images = False
    prompt_tokens = 0
    prompt = ""
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(400, "Each message must be an object.", param="messages")
        role = message.get("role")
        if role not in _ROLES:
            raise ApiError(
                400, "Role must be in [system, user, assistant, tool]", param="messages.role"
            )
        content = message.get("content")
        text = ""
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            if not vision:
                raise ApiError(400, "input content must be a string.")
            parts: list[str] = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise ApiError(400, "text part must have a string 'text'.")
                    parts.append(part["text"])
                elif kind == "image_url":
                    has_images = True
                    prompt_tokens += 1280
                    url = _image_url(part)
                    if url.startswith("data:"):
                        images.append(_decode_data_url(url))
                    else:
                        image_urls.append(url)
                elif kind is None:
                    raise ApiError(400, "Each content part must have a 'type'.")
            text = "\n".join(parts)
        elif content is None:
            if role not in ("assistant", "tool"):
                raise ApiError(400, "input content must be a string.")
        else:
            raise ApiError(400, "input content must be a string.")
        prompt_tokens += count_tokens(text) + 3
        if role == "user" and text:
            prompt = text

    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature < 2):
        raise ApiError(400, "Temperature should be in [0.0, 2.0)", param="temperature")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ApiError(400, "Range of top_p should be (0.0, 1.0]", param="top_p")
    presence = body.get("presence_penalty")
    if presence is not None and (not _is_number(presence) or not -2 <= presence <= 2):
        raise ApiError(
            400, "Range of presence_penalty should be [-2.0, 2.0]", param="presence_penalty"
        )
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= cfg.max_output_tokens
    ):
        raise ApiError(
            400, f"Range of max_tokens should be [1, {cfg.max_output_tokens}]", param="max_tokens"
        )
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4:
        raise ApiError(400, "Range of n should be [1, 4]", param="n")
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiError(400, f"{seed!r} is not of type 'integer' - 'seed'", code="invalid_value")
        if seed < 0:
            raise ApiError(
                400,
                f"{seed} is lesser than the minimum of 0 - 'seed'",
                code="invalid_value",
                type="invalid_request_error",
            )
        if seed > 2**31 - 1:
            raise ApiError(
                400,
                f"{seed} is greater than the maximum of 2147483647 - 'seed'",
                code="invalid_value",
                type="invalid_request_error",
            )
    stop_raw = body.get("stop")
    stop: list[str] = []
    if isinstance(stop_raw, str):
        stop = [stop_raw]
    elif isinstance(stop_raw, list):
        stop = [s for s in stop_raw if isinstance(s, str)]
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and (
        cfg.usage_chunk_always
        or (isinstance(options, dict) and options.get("include_usage") is True)
    )
    thinking = body.get("enable_thinking") is True
    if thinking and not stream:
        raise ApiError(
            400,
            "parameter.enable_thinking must be set to false for non-streaming calls",
            param="enable_thinking",
        )
    response_format = body.get("response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") == "json_object"
    if json_mode:
        if thinking:
            raise ApiError(400, "Json mode is not supported when enable_thinking is true.")
        if "json" not in dumps(messages).decode().lower():
            raise ApiError(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                "type 'json_object'.",
                param="messages",
            )
    return _Plan(
        model=model,
        stream=stream,
        include_usage=include_usage,
        n=n,
        thinking=thinking and cfg.thinking,
        max_tokens=max_tokens,
        stop=stop,
        json_mode=json_mode,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        images=images,
        image_urls=image_urls,
        has_images=has_images,
    )


def _image_url(part: dict[str, Any]) -> str:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str):
        raise ApiError(400, "image_url must be an object with a 'url'.", param="image_url")
    if not url.startswith(("http://", "https://", "data:")):
        raise ApiError(400, _BAD_URL)
    return url


_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.S)


def _decode_data_url(url: str) -> bytes:
    m = _DATA_URL.match(url)
    if m is None or ";base64" not in m.group(2):
        raise ApiError(400, _BAD_URL)
    if len(url) > _DATA_URI_LIMIT:
        raise ApiError(400, f"Exceeded limit on max bytes per data-uri item : {_DATA_URI_LIMIT}")
    try:
        data = base64.b64decode(url[m.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, _BAD_URL) from None
    size = image_size(data)
    if size is not None:
        width, height = size
        if width <= 10 or height <= 10:
            raise ApiError(
                400,
                "<400> InternalError.Algo.InvalidParameter: The image length and width do not meet "
                f"the model restrictions. [height:{height} or width:{width} must be larger than 10]",
            )
        if max(width, height) / min(width, height) > 200:
            raise ApiError(
                400,
                "<400> InternalError.Algo.InvalidParameter: The image length and width do not meet "
                "the model restrictions. [aspect ratio must not exceed 200:1]",
            )
    return data


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, JPEG or GIF image, or None when not recognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 <= len(data):
            if data[pos] != 0xFF:
                pos += 1
                continue
            marker = data[pos + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                pos += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return int(width), int(height)
            pos += 2 + length
    return None
