"""The OpenAI-compatible chat API, driven by the official ``openai`` SDK against the app under Hypercorn."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from qwen_gateway.simulator import Fault

from .conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway, start_gateway

REPLY = "你好！我是一个测试回复。Here is **bold** text, 3.14 and 50%."


_clients: list[openai.AsyncOpenAI] = []


def client(gw: Gateway, key: str = GATEWAY_KEY) -> openai.AsyncOpenAI:
    c = openai.AsyncOpenAI(base_url=gw.api_base, api_key=key, max_retries=0, timeout=20)
    _clients.append(c)
    return c


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def png_data_url(width: int = 32, height: int = 32) -> str:
    """A real PNG (solid colour) as a data URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x20\x80\xc0" * width for _ in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


async def test_non_streaming_completion(gateway: Gateway) -> None:
    gateway.sim.set_reply(REPLY)
    resp = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "你好！"}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == REPLY
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    req = gateway.sim.log.chat_requests[-1]
    assert req.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert req.body["model"] == "qwen-plus"


async def test_streaming_with_usage(gateway: Gateway) -> None:
    gateway.sim.set_reply(REPLY)
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "你好！"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_streaming_without_usage_relays_no_usage_chunk(gateway: Gateway) -> None:
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # ... although the gateway asked the upstream for usage, to store it with the history.
    assert gateway.sim.log.chat_requests[-1].body["stream_options"] == {"include_usage": True}


async def test_sse_wire_format_and_headers(gateway: Gateway) -> None:
    gateway.sim.set_reply("短回复。")
    body = {"messages": [{"role": "user", "content": "你好！"}], "stream": True}
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{gateway.api_base}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", "X-Conversation-Id": "conv-sse"},
        ) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        assert resp.headers["x-conversation-id"] == "conv-sse"
        assert resp.headers["x-request-id"]
        raw = (await resp.aread()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_defaults_system_prompt_and_extras_pass_through(gateway: Gateway) -> None:
    await client(gateway).chat.completions.create(
        model="",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.7,
        extra_body={"enable_search": True, "top_k": 5, "search_options": {"forced_search": True}},
    )
    body = gateway.sim.log.chat_requests[-1].body
    assert body["model"] == gateway.settings.chat_model
    assert body["messages"][0] == {
        "role": "system",
        "content": gateway.settings.default_system_prompt,
    }
    assert body["enable_search"] is True and body["top_k"] == 5
    assert body["search_options"] == {"forced_search": True}
    assert body["temperature"] == 0.7

    await client(gateway).chat.completions.create(
        model="qwen-max",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    body = gateway.sim.log.chat_requests[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == "be brief" and body["model"] == "qwen-max"


async def test_image_parts_route_to_the_vlm_model(gateway: Gateway) -> None:
    png = png_data_url()
    resp = await client(gateway).chat.completions.create(
        model="",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png}},
                    {"type": "text", "text": "这是什么？"},
                ],
            }
        ],
    )
    assert resp.choices[0].message.content
    assert gateway.sim.log.chat_requests[-1].body["model"] == gateway.settings.vlm_model


async def test_n_greater_than_one_is_honoured(gateway: Gateway) -> None:
    resp = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], n=2
    )
    assert [c.index for c in resp.choices] == [0, 1]


async def test_models_list(gateway: Gateway) -> None:
    models = await client(gateway).models.list()
    ids = [m.id for m in models.data]
    s = gateway.settings
    assert s.chat_model in ids and s.vlm_model in ids and s.asr_model in ids
    assert any("tts" in i for i in ids)


async def test_wrong_key_is_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        await client(gateway, key="wrong").chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        await client(gateway, key="wrong").models.list()
    assert gateway.sim.log.chat_requests == []


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, None),
        ({"model": 3, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({}, None),
    ],
)
async def test_bad_requests_are_400(
    gateway: Gateway, payload: dict[str, object], param: str | None
) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{gateway.api_base}/chat/completions",
            json=payload,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        )
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if param:
        assert err["param"].startswith(param)
    assert gateway.sim.log.chat_requests == []


async def test_invalid_json_and_oversized_body(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            f"{gateway.api_base}/chat/completions", content=b"{not json", headers=headers
        )
        big = await http.post(
            f"{gateway.api_base}/chat/completions",
            content=b"x" * (gateway.settings.max_body_bytes + 1),
            headers=headers,
        )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"


async def test_sdk_sees_openai_bad_request_error(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError):
        await client(gateway).chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}], temperature=3.5
        )


async def test_upstream_429_after_retries_is_rate_limit_error(gateway: Gateway) -> None:
    gateway.sim.faults.add(Fault.http_error(429, code="limit_requests", times=None))
    with pytest.raises(openai.RateLimitError) as info:
        await client(gateway).chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "limit_requests"
    assert len(gateway.sim.log.chat_requests) == 1 + gateway.settings.upstream_retries


async def test_upstream_429_then_success_is_retried(gateway: Gateway) -> None:
    gateway.sim.faults.add(Fault.http_error(429, code="insufficient_quota", times=2))
    gateway.sim.set_reply("ok")
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "ok"
    assert len(gateway.sim.log.chat_requests) == 3


async def test_upstream_429_retry_after_is_relayed(tmp_path: Path) -> None:
    async for gateway in start_gateway(tmp_path, upstream_retries=0):
        gateway.sim.faults.add(
            Fault.http_error(429, code="limit_requests", times=None, retry_after=7)
        )
        async with httpx.AsyncClient() as http:
            resp = await http.post(
                f"{gateway.api_base}/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
            )
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["error"]["code"] == "limit_requests"


@pytest.mark.parametrize(
    ("status", "code", "expected", "exc"),
    [
        (400, "data_inspection_failed", 400, openai.BadRequestError),
        (401, "invalid_api_key", 502, openai.APIStatusError),
        (403, "access_denied", 502, openai.APIStatusError),
        (404, "model_not_found", 404, openai.NotFoundError),
        (500, "internal_error", 502, openai.InternalServerError),
        (503, None, 503, openai.InternalServerError),
    ],
)
async def test_upstream_errors_map_to_openai_errors(
    gateway: Gateway, status: int, code: str | None, expected: int, exc: type[Exception]
) -> None:
    gateway.sim.faults.add(Fault.http_error(status, code=code, times=None))
    with pytest.raises(exc) as info:
        await client(gateway).chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == expected
    body = info.value.body
    assert isinstance(body, dict) and body.get("message")


async def test_chunks_reach_the_client_before_the_upstream_finishes(gateway: Gateway) -> None:
    gateway.sim.set_reply("第一句话。第二句话。第三句话。第四句话。")
    gateway.sim.faults.add(Fault.stall(after_chunks=3, seconds=None))
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 2:
            break
    upstream = gateway.sim.log.chat_requests[-1]
    assert (
        not upstream.completed and not upstream.closed
    )  # the simulator is still holding the stream
    await stream.close()


async def test_client_disconnect_cancels_the_upstream_request(gateway: Gateway) -> None:
    gateway.sim.faults.add(Fault.stall(after_chunks=2, seconds=None))
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for _ in stream:
        break
    await stream.close()
    await gateway.sim.log.wait_closed("chat", timeout=5)
    upstream = gateway.sim.log.chat_requests[-1]
    assert upstream.closed and not upstream.completed
    assert upstream.connection.close_reason == "client"


async def test_error_after_first_byte_ends_the_stream_cleanly(gateway: Gateway) -> None:
    gateway.sim.faults.add(Fault.drop(after_chunks=3))
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{gateway.api_base}/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        ) as resp,
    ):
        assert resp.status_code == 200
        raw = (await resp.aread()).decode()
    events = [e[6:] for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-2])
    assert err["error"]["code"] and err["error"]["message"]


async def test_mid_stream_upstream_error_event_is_relayed(gateway: Gateway) -> None:
    gateway.sim.faults.add(Fault.stream_error(after_chunks=2))
    stream = await client(gateway).chat.completions.create(
        model="qwen-plus", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_seed_curl_example(gateway: Gateway) -> None:
    """The seed README's curl example, as written (with a real key)."""
    gateway.sim.set_reply("你好！我如何帮助你？")
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            "/v1/chat/completions".join([gateway.base_url, ""]),
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"},
            content=json.dumps(
                {
                    "model": "qwen-plus",
                    "messages": [{"role": "user", "content": "你好！"}],
                    "stream": False,
                }
            ),
        )
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "你好！我如何帮助你？"}
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


async def test_history_rows_for_each_exchange(gateway: Gateway) -> None:
    gateway.sim.set_reply("答案一。")
    c = client(gateway)
    await c.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "问题一"}],
        extra_headers={"X-Conversation-Id": "conv-hist"},
    )
    gateway.sim.set_reply("答案二。")
    stream = await c.chat.completions.create(
        model="qwen-plus",
        messages=[{"role": "user", "content": "问题二"}],
        stream=True,
        extra_headers={"X-Conversation-Id": "conv-hist"},
    )
    async for _ in stream:
        pass
    storage = gateway.services.storage
    await asyncio.wait_for(storage.outbox.drained(), 10)
    turns = await storage.history.conversation(
        "conv-hist", owner=gateway.services.keys.owner(GATEWAY_KEY)
    )
    assert [(t.user_content, t.assistant_content) for t in turns] == [
        ("问题一", "答案一。"),
        ("问题二", "答案二。"),
    ]
    assert all(t.channel == "chat" and t.status == "completed" for t in turns)
    assert all(t.total_tokens > 0 for t in turns)


async def test_cors_preflight(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path, cors_origins=("https://app.example",)):
        async with httpx.AsyncClient() as http:
            pre = await http.options(
                f"{gw.api_base}/chat/completions",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )
            other = await http.options(
                f"{gw.api_base}/chat/completions", headers={"Origin": "https://evil.example"}
            )
            get = await http.get(
                f"{gw.api_base}/models",
                headers={"Origin": "https://app.example", "Authorization": f"Bearer {GATEWAY_KEY}"},
            )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert "access-control-allow-origin" not in other.headers
        assert get.headers["access-control-allow-origin"] == "https://app.example"


async def test_key_passthrough_uses_the_callers_key(tmp_path: Path) -> None:
    async for gw in start_gateway(tmp_path, key_passthrough=True):
        gw.sim.set_reply("ok")
        resp = await client(gw, key=UPSTREAM_KEY).chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "hi"}]
        )
        assert resp.choices[0].message.content == "ok"
        with pytest.raises(
            openai.AuthenticationError
        ):  # the caller's own key failed: a 401 for them
            await client(gw, key="sk-not-valid").chat.completions.create(
                model="qwen-plus", messages=[{"role": "user", "content": "hi"}]
            )


async def test_unknown_path_is_openai_error(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{gateway.base_url}/v1/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
