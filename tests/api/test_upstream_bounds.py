"""An upstream answer the gateway will not read (over ``QG_UPSTREAM_MAX_EVENT_BYTES`` /
``QG_UPSTREAM_MAX_BODY_BYTES``, or framed in a way HTTP/1.1 does not allow) is an OpenAI-style 502 for the caller,
never a 500; the gateway keeps serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from .conftest import GATEWAY_KEY, start_gateway

HEADERS = {"Authorization": f"Bearer {GATEWAY_KEY}"}
HELLO = [{"role": "user", "content": "hi"}]
OK_CHUNK = b'{"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}'


class RawUpstream:
    """Answers every request with ``answers[n]`` in turn (the last one again after the list)."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = answers
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
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
                writer.write(self.answers[min(self.requests, len(self.answers) - 1)])
                self.requests += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def sse_answer(*payloads: bytes) -> bytes:
    body = b"".join(b"data: " + p + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_an_answer_over_the_bounds_is_a_502_and_the_next_call_works(
    tmp_path: Path, stream: bool
) -> None:
    big = json.dumps({"choices": [{"index": 0, "delta": {"content": "长" * 50_000}}]}).encode()
    completion = json.dumps(
        {"object": "chat.completion", "choices": [{"message": {"content": "长" * 50_000}}]}
    ).encode()
    too_big = (
        sse_answer(big)
        if stream
        else b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(completion), completion)
    )
    async with RawUpstream(too_big, sse_answer(OK_CHUNK)) as upstream:
        async for gw in start_gateway(
            tmp_path,
            chat_url=upstream.url,
            upstream_max_event_bytes=64 * 1024,
            upstream_max_body_bytes=64 * 1024,
        ):
            async with httpx.AsyncClient(timeout=20) as http:
                url = f"{gw.api_base}/chat/completions"
                body = {"messages": HELLO, "stream": stream}
                resp = await http.post(url, json=body, headers=HEADERS)
                assert resp.status_code == 502
                error = resp.json()["error"]
                assert error["code"] == "upstream_response_too_large"
                assert "65536" in error["message"]
                again = await http.post(
                    url, json={"messages": HELLO, "stream": True}, headers=HEADERS
                )
                assert again.status_code == 200 and '"ok"' in again.text
            assert upstream.requests == 2  # refused at once: not retried


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["superscript-content-length", "gzip-chunked"],
)
async def test_an_answer_that_cannot_be_framed_is_a_502(tmp_path: Path, answer: bytes) -> None:
    async with RawUpstream(answer) as upstream:
        async for gw in start_gateway(tmp_path, chat_url=upstream.url, upstream_retries=0):
            async with httpx.AsyncClient(timeout=20) as http:
                for stream in (False, True):
                    resp = await http.post(
                        f"{gw.api_base}/chat/completions",
                        json={"messages": HELLO, "stream": stream},
                        headers=HEADERS,
                    )
                    assert resp.status_code == 502
                    assert resp.json()["error"]["code"].startswith("upstream_")
