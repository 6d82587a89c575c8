"""The streaming relay's edges, against the app under Hypercorn: batches as they arrive, [DONE] exactly once
(also when the upstream sends none), which usage chunks are left out, several choices, and the history record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwen_gateway.providers import ChatDelta, ChatModel, RelayBatch, relay_one_by_one
from qwen_gateway.simulator import SimulatorConfig

from .conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway, start_gateway

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}


def chunk(
    content: str | None = None, *, finish: str | None = None, usage: bool = False, **kw: object
) -> bytes:
    choices = (
        []
        if kw.get("no_choices")
        else [
            {
                "index": 0,
                "delta": {} if content is None else {"content": content},
                "finish_reason": finish,
            }
        ]
    )
    body: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "choices": choices}
    body["usage"] = (
        {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5} if usage else None
    )
    return json.dumps(body, ensure_ascii=False).encode()


class ScriptedUpstream:
    """An OpenAI-compatible upstream that streams a fixed list of SSE payloads (chunked), then ends the body."""

    def __init__(self, payloads: list[bytes], *, done: bool) -> None:
        self.payloads = payloads
        self.done = done
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                events = [b"data: " + p + b"\n\n" for p in self.payloads]
                if self.done:
                    events.append(b"data: [DONE]\n\n")
                for event in events:  # one write each, so the gateway may see them apart
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    await asyncio.sleep(0.002)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def sse(gw: Gateway, body: dict[str, object], conversation: str) -> list[str]:
    """The gateway's SSE answer as a list of ``data`` values."""
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(
            f"{gw.api_base}/chat/completions",
            json=body,
            headers={**HEADERS, "X-Conversation-Id": conversation},
        )
    assert resp.status_code == 200
    events = [e for e in resp.text.split("\n\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [e[6:] for e in events]


@pytest.fixture
async def paced(tmp_path: Path) -> AsyncIterator[Gateway]:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=400.0, chat_chunk_tokens=1)
    async for gw in start_gateway(tmp_path, config):
        yield gw


async def test_a_paced_stream_is_relayed_whole_with_one_done(paced: Gateway) -> None:
    paced.sim.set_reply("一二三四五六七八九十。")
    data = await sse(
        paced, {"messages": [{"role": "user", "content": "hi"}], "stream": True}, "conv-r1"
    )
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    chunks = [json.loads(d) for d in data[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        == "一二三四五六七八九十。"
    )
    assert all(c["choices"] for c in chunks)  # the usage chunk the gateway asked for is not relayed
    await asyncio.wait_for(paced.services.storage.outbox.drained(), 10)
    [turn] = await paced.services.storage.history.conversation(
        "conv-r1", owner=paced.services.keys.owner(GATEWAY_KEY)
    )
    assert turn.assistant_content == "一二三四五六七八九十。" and turn.total_tokens > 0
    assert turn.first_token_ms is not None and turn.status == "completed"


async def test_several_choices_are_all_relayed_and_the_first_is_stored(gateway: Gateway) -> None:
    gateway.sim.set_reply("答案。")
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "n": 2}
    data = await sse(gateway, body, "conv-r2")
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1}
    await asyncio.wait_for(gateway.services.storage.outbox.drained(), 10)
    [turn] = await gateway.services.storage.history.conversation(
        "conv-r2", owner=gateway.services.keys.owner(GATEWAY_KEY)
    )
    assert turn.assistant_content == "答案。"


class PlainChatModel:
    """A ChatModel that cannot tell which chunks arrived together: the route relays it a chunk at a time."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner

    def stream(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncIterator[ChatDelta]:
        return self.inner.stream(body, api_key=api_key)

    async def complete(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> dict[str, Any]:
        return await self.inner.complete(body, api_key=api_key)

    def relay_batches(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[RelayBatch, None]:
        return relay_one_by_one(self.stream(body, api_key=api_key))


@pytest.mark.parametrize("plain_model", [False, True], ids=["batches", "plain-model"])
@pytest.mark.parametrize("upstream_done", [True, False], ids=["done", "no-done"])
@pytest.mark.parametrize("include_usage", [True, False], ids=["usage", "no-usage"])
async def test_usage_chunks_and_the_end_of_an_upstream_stream(
    tmp_path: Path, upstream_done: bool, include_usage: bool, plain_model: bool
) -> None:
    """Only chunks without choices are usage chunks (a finish chunk carrying usage is relayed); a body that
    ends after the finish_reason without [DONE] still ends the relayed stream with one [DONE]."""
    payloads = [
        chunk(""),
        chunk("你好"),
        chunk("！"),
        chunk(None, finish="stop", usage=True),
        chunk(usage=True, no_choices=True),
    ]
    async with ScriptedUpstream(payloads, done=upstream_done) as upstream:
        async for gw in start_gateway(tmp_path, chat_url=upstream.url):
            if plain_model:
                gw.services.providers.chat = PlainChatModel(gw.services.providers.chat)
            body: dict[str, object] = {
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            data = await sse(gw, body, "conv-r3")
            await asyncio.wait_for(gw.services.storage.outbox.drained(), 10)
            [turn] = await gw.services.storage.history.conversation(
                "conv-r3", owner=gw.services.keys.owner(GATEWAY_KEY)
            )
    expected = payloads if include_usage else payloads[:-1]
    assert data == [p.decode() for p in expected] + ["[DONE]"]  # byte for byte, in order
    assert turn.assistant_content == "你好！" and turn.total_tokens == 5
