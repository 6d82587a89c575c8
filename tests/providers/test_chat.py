"""DashScopeChat against the simulator over loopback: streaming, non-streaming, VLM, every fault family,
retries only before the first delta, cancellation closing the upstream connection."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from contextlib import aclosing
from typing import Any

import pytest

from qwen_gateway.errors import UpstreamError, UpstreamTimeout
from qwen_gateway.providers.base import ChatDelta, ChatModel, Usage
from qwen_gateway.providers.dashscope import build_providers
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import FAST, KEY, FileServer, cancel_after, client_tasks, free_port, make_settings

REPLY = "你好世界。今天天气很好。"
USER = {"messages": [{"role": "user", "content": "你好"}]}


def png(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def collect(chat: ChatModel, body: dict[str, Any], **kw: Any) -> list[ChatDelta]:
    return [d async for d in chat.stream(body, **kw)]


# --- happy paths -------------------------------------------------------------------------------------------
async def test_stream_yields_role_text_finish_and_usage(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    deltas = await collect(providers.chat, {**USER, "stream_options": {"include_usage": True}})

    assert deltas[0].role == "assistant" and deltas[0].content == ""
    assert "".join(d.content for d in deltas) == REPLY
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    usage = deltas[-1].usage
    assert isinstance(usage, Usage) and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # raw is the data payload exactly as sent: it decodes to the same chunk
    for d in deltas:
        assert json.loads(d.raw)["object"] == "chat.completion.chunk"
    request = sim.log.chat_requests[-1]
    assert request.body["stream"] is True
    assert request.body["model"] == "qwen-plus"  # filled from Settings.chat_model
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("sim_config", [SimulatorConfig(api_key=KEY, finish_chunk_with_text=True)])
async def test_finish_reason_chunk_may_carry_the_last_text(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    deltas = await collect(providers.chat, USER)
    finishing = [d for d in deltas if d.finish_reason]
    assert len(finishing) == 1 and finishing[0].content == "。"
    assert "".join(d.content for d in deltas) == REPLY
    assert deltas[-1] is finishing[0]  # no usage chunk when not asked for


async def test_reasoning_content_is_kept_apart(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    deltas = await collect(providers.chat, {**USER, "model": "qwen3-plus", "enable_thinking": True})
    reasoning = "".join(d.reasoning for d in deltas)
    assert reasoning and reasoning == sim.log.chat_requests[-1].reasoning
    assert "".join(d.content for d in deltas) == REPLY


async def test_complete_returns_the_json_body(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    result = await providers.chat.complete({**USER, "stream_options": {"include_usage": True}})
    assert result["choices"][0]["message"]["content"] == REPLY
    assert result["usage"]["total_tokens"] > 0
    body = sim.log.chat_requests[-1].body
    assert body["stream"] is False and "stream_options" not in body


async def test_vlm_sends_image_parts_with_the_vlm_model(sim: Simulator, providers: Any) -> None:
    sim.set_reply("一只猫。")
    image = base64.b64encode(png(16, 16)).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "这是什么？"},
                ],
            }
        ]
    }
    deltas = await collect(providers.vlm, body)
    assert "".join(d.content for d in deltas) == "一只猫。"
    assert sim.log.chat_requests[-1].body["model"] == "qwen-vl-plus"
    # the same parts to a text model are refused by the upstream: a typed 400
    with pytest.raises(UpstreamError) as info:
        await collect(providers.chat, body)
    assert (info.value.status, info.value.code) == (400, "invalid_parameter_error")


async def test_api_key_override_is_sent_instead_of_the_default(
    sim: Simulator, providers: Any
) -> None:
    with pytest.raises(UpstreamError) as info:
        await collect(providers.chat, USER, api_key="sk-someone-else")
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert "someone-else" not in str(info.value)
    assert sim.log.chat_requests[-1].headers["authorization"] == "Bearer sk-someone-else"
    assert len(sim.log.chat_requests) == 1  # a 401 is not retried


# --- error families ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_parameter_error", "invalid_parameter_error"),
        (400, "data_inspection_failed", "data_inspection_failed"),
        (401, "invalid_api_key", "invalid_api_key"),
        (403, "access_denied", "access_denied"),
        (404, "model_not_found", "model_not_found"),
    ],
)
async def test_permanent_errors_surface_typed_without_retry(
    sim: Simulator, providers: Any, status: int, code: str, expected: str
) -> None:
    sim.faults.add(Fault.http_error(status, code=code, endpoint="chat"))
    with pytest.raises(UpstreamError) as info:
        await collect(providers.chat, USER)
    assert (info.value.status, info.value.code, info.value.transient) == (status, expected, False)
    assert len(sim.log.chat_requests) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "limit_requests"),
        (429, "limit_burst_rate"),
        (429, "insufficient_quota"),
        (500, "internal_error"),
        (503, "model_unavailable"),
    ],
)
async def test_transient_errors_are_retried_then_succeed(
    sim: Simulator, providers: Any, status: int, code: str
) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.http_error(status, code=code, endpoint="chat", times=2))
    deltas = await collect(providers.chat, USER)
    assert "".join(d.content for d in deltas) == REPLY
    assert [r.status for r in sim.log.chat_requests] == [status, status, 200]


async def test_transient_errors_surface_after_the_last_retry(
    sim: Simulator, providers: Any
) -> None:
    sim.faults.add(Fault.http_error(429, code="insufficient_quota", endpoint="chat", times=None))
    with pytest.raises(UpstreamError) as info:
        await collect(providers.chat, USER)
    assert (info.value.status, info.value.code, info.value.transient) == (
        429,
        "insufficient_quota",
        True,
    )
    assert len(sim.log.chat_requests) == 3  # one call + upstream_retries (2)
    with pytest.raises(UpstreamError):
        await providers.chat.complete(USER)
    assert len(sim.log.chat_requests) == 6


async def test_non_streaming_call_retries_too(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.http_error(503, endpoint="chat"))
    result = await providers.chat.complete(USER)
    assert result["choices"][0]["message"]["content"] == REPLY
    assert len(sim.log.chat_requests) == 2


async def test_connection_refused_is_retried_then_typed(sim: Simulator) -> None:
    settings = make_settings(sim, chat_url=f"http://127.0.0.1:{free_port()}/v1/chat/completions")
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamError) as info:
            await collect(providers.chat, USER)
        assert (info.value.code, info.value.status, info.value.transient) == (
            "upstream_unavailable",
            502,
            True,
        )
    finally:
        await providers.aclose()


async def test_drop_before_the_first_delta_is_retried(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.drop(0, endpoint="chat"))
    deltas = await collect(providers.chat, USER)
    assert "".join(d.content for d in deltas) == REPLY
    await sim.wait_closed(
        "chat"
    )  # the simulator's handler may still be finishing the stream we read
    assert [r.connection.close_reason for r in sim.log.chat_requests] == ["dropped", "complete"]


async def test_drop_mid_stream_is_not_retried(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.drop(4, endpoint="chat"))
    got: list[ChatDelta] = []
    with pytest.raises(UpstreamError) as info:
        async for delta in providers.chat.stream(USER):
            got.append(delta)
    assert info.value.code == "upstream_closed"
    assert len(got) == 4
    assert len(sim.log.chat_requests) == 1


async def test_mid_stream_error_event_surfaces_typed_and_is_not_retried(
    sim: Simulator, providers: Any
) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.stream_error(3))
    got: list[ChatDelta] = []
    with pytest.raises(UpstreamError) as info:
        async for delta in providers.chat.stream(USER):
            got.append(delta)
    assert (info.value.status, info.value.code) == (400, "data_inspection_failed")
    assert "inappropriate" in info.value.message
    assert len(got) == 3 and len(sim.log.chat_requests) == 1


async def test_malformed_chunk_surfaces_typed(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.malformed("chat", after=2))
    with pytest.raises(UpstreamError) as info:
        await collect(providers.chat, USER)
    assert info.value.code == "upstream_bad_response"
    assert len(sim.log.chat_requests) == 1


async def test_silence_mid_stream_is_an_idle_timeout(sim: Simulator) -> None:
    sim.set_reply(REPLY)
    sim.faults.add(Fault.stall(3, None, endpoint="chat"))
    providers = build_providers(make_settings(sim, read_timeout=0.3), tuning=FAST)
    try:
        with pytest.raises(UpstreamTimeout):
            await collect(providers.chat, USER)
        assert len(sim.log.chat_requests) == 1
        await sim.wait_closed("chat")
        assert sim.log.chat_requests[0].connection.close_reason == "client"
    finally:
        await providers.aclose()


async def test_no_first_byte_in_time_is_a_timeout(sim: Simulator) -> None:
    sim.faults.add(Fault.delay(5.0, endpoint="chat"))
    providers = build_providers(make_settings(sim, read_timeout=0.3), tuning=FAST)
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await collect(providers.chat, USER)
        assert (info.value.status, info.value.code) == (504, "upstream_timeout")
    finally:
        await providers.aclose()


# --- cancellation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, tokens_per_second=50.0, chat_chunk_tokens=1)]
)
async def test_cancelling_a_stream_closes_the_upstream_and_leaves_no_task(
    sim: Simulator, providers: Any
) -> None:
    sim.set_reply("一二三四五六七八九十" * 20)  # ~4 s at 50 tokens/s
    started = asyncio.Event()
    got: list[ChatDelta] = []

    async def consume() -> None:
        async for delta in providers.chat.stream(USER):
            got.append(delta)
            if len(got) == 3:
                started.set()

    await cancel_after(started, consume)
    await sim.wait_closed("chat", timeout=5)
    record = sim.log.chat_requests[0]
    assert record.connection.close_reason == "client" and not record.completed
    assert client_tasks() == []


@pytest.mark.parametrize("sim_config", [SimulatorConfig(api_key=KEY, tokens_per_second=50.0)])
async def test_closing_the_stream_early_closes_the_upstream(sim: Simulator, providers: Any) -> None:
    sim.set_reply("一二三四五六七八九十" * 20)
    async with aclosing(providers.chat.stream(USER)) as stream:
        async for delta in stream:
            if delta.content:
                break
    await sim.wait_closed("chat", timeout=5)
    assert sim.log.chat_requests[0].connection.close_reason == "client"
    assert client_tasks() == []


async def test_an_sse_error_event_is_typed(sim: Simulator, providers: Any) -> None:
    sim.set_reply(REPLY)
    error = '{"error":{"code":"data_inspection_failed","message":"Output data may contain inappropriate content."}}'
    sim.faults.add(Fault.malformed("chat", after=2, payload=f"event: error\ndata: {error}"))
    got: list[ChatDelta] = []
    with pytest.raises(UpstreamError) as info:
        async for delta in providers.chat.stream(USER):
            got.append(delta)
    assert (info.value.status, info.value.code) == (400, "data_inspection_failed")
    assert len(got) == 2


async def test_a_json_error_body_instead_of_a_stream_is_typed(
    sim: Simulator, file_server: FileServer
) -> None:
    """A compatible server answering 200 with a JSON error (no SSE) still gives a typed error."""
    file_server.files["v1/chat/completions"] = (
        b'{"error":{"message":"The model does not exist.","code":"model_not_found"}}'
    )
    settings = make_settings(sim, chat_url=file_server.url("v1/chat/completions"))
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamError) as info:
            await collect(providers.chat, USER)
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (404, "model_not_found")
