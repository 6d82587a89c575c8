"""What the chat and file-recognition clients read from an HTTP upstream is bounded: SSE lines and events, whole
bodies, error bodies, decompressed sizes. Over a bound: ``upstream_response_too_large`` and the connection is
dropped. Both chat transports (the lean pool, and httpx when a proxy applies) behave alike; the httpx one keeps
its connections for reuse after a stream."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.dashscope import DashScopeChat, FileRecognizer
from qwen_gateway.providers.dashscope.http1 import (
    Endpoint,
    Http1Pool,
    HttpxTransport,
    RequestHeaders,
    UpstreamTransport,
)
from qwen_gateway.providers.dashscope.policy import Backoff, ReadLimits, Timeouts
from qwen_gateway.providers.dashscope.sse import SseDecoder, SseTooLarge

QUICK = Timeouts(connect=2.0, read=2.0, write=2.0)
NO_RETRY = Backoff(retries=0)
KIB = 1024
CHUNK = b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
LAST = b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
HELLO = [{"role": "user", "content": "hi"}]


# --- the SSE decoder -------------------------------------------------------------------------------------------
def test_a_line_over_the_bound_is_refused_whatever_its_pieces() -> None:
    decoder = SseDecoder(max_line=1000, max_event=1000)
    assert decoder.feed(b"data: ") == []
    for _ in range(99):  # 6 + 990 bytes: still within the bound
        assert decoder.feed(b"x" * 10) == []
    with pytest.raises(SseTooLarge) as info:
        decoder.feed(b"x" * 10)
    assert info.value.limit == 1000
    with pytest.raises(SseTooLarge):  # in one piece too, and on either path
        SseDecoder(max_line=1000).feed(b"data: " + b"x" * 1000 + b"\n\n")
    with pytest.raises(SseTooLarge):
        SseDecoder(max_line=1000).feed(b": comment " + b"x" * 1000 + b"\r\n")
    with pytest.raises(SseTooLarge):
        SseDecoder(max_line=1000).feed(b"data: " + b"x" * 1000)  # no end of line yet


def test_an_event_over_the_bound_is_refused_however_many_lines_carry_it() -> None:
    decoder = SseDecoder(max_line=100, max_event=250)
    line = b"data: " + b"y" * 49 + b"\n"  # 49 bytes of data and the newline joining them: 50
    assert decoder.feed(line * 5 + b"\n") == [(None, b"\n".join([b"y" * 49] * 5))]
    with pytest.raises(SseTooLarge) as info:
        decoder.feed(line * 6)
    assert info.value.limit == 250
    with pytest.raises(SseTooLarge):  # the one-split path of plain events checks them too
        SseDecoder(max_line=10_000, max_event=250).feed(b"data: " + b"z" * 251 + b"\n\n")
    big = SseDecoder(max_line=10_000, max_event=250)
    assert big.feed(b"data: " + b"z" * 250 + b"\n\n") == [(None, b"z" * 250)]
    tail = SseDecoder(max_line=300, max_event=250)
    assert tail.feed(b"data: " + b"w" * 260) == []
    with pytest.raises(SseTooLarge):  # and an event left unfinished at the end
        tail.close()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=3),
)
def test_a_long_line_in_any_pieces_gives_the_line_it_would_in_one(
    sizes: list[int], newline_in: int
) -> None:
    """Pieces held for an unfinished line are joined once: whatever the cut, the same events."""
    payload = bytes(i % 26 + 97 for i in range(sum(sizes)))
    stream = b"data: " + payload + b"\n\n" + b"data: next\n\n"[: 6 + newline_in]
    pieces, pos = [], 0
    for size in [6, *sizes, len(stream)]:
        if pos < len(stream):
            pieces.append(stream[pos : pos + size])
            pos += size
    decoder = SseDecoder(max_line=2000, max_event=2000)
    events = [e for piece in pieces for e in decoder.feed(piece)] + decoder.close()
    whole = SseDecoder(max_line=2000, max_event=2000)
    assert events == whole.feed(stream) + whole.close()
    assert events[0] == (None, payload)


# --- a scripted upstream -----------------------------------------------------------------------------------------
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


class Upstream:
    """Answers the n-th request with ``answers[n]`` (the last one again after the list); counts connections."""

    def __init__(self, *answers: bytes | Answer) -> None:
        self.answers = list(answers)
        self.requests = 0
        self.connections = 0
        self.hung_up = asyncio.Event()  # a client closed a connection
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                answer = self.answers[min(self.requests, len(self.answers) - 1)]
                self.requests += 1
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                else:
                    await answer(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
        finally:
            writer.close()


def response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse(*payloads: bytes, done: bool = True) -> bytes:
    events = b"".join(b"data: " + p + b"\n\n" for p in payloads)
    return events + (b"data: [DONE]\n\n" if done else b"")


def chunked(body: bytes, *headers: str, piece: int = 4096) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
    out = [("\r\n".join([*head, *headers]) + "\r\n\r\n").encode()]
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


@pytest.fixture(params=["http1", "httpx"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamTransport]:
    if request.param == "http1":
        pool = Http1Pool()
        try:
            yield pool
        finally:
            await pool.aclose()
    else:
        async with httpx.AsyncClient(trust_env=False) as client:
            yield HttpxTransport(client)


def chat(transport: UpstreamTransport, url: str, limits: ReadLimits) -> DashScopeChat:
    return DashScopeChat(
        transport,
        url=url,
        model="qwen-plus",
        api_key="sk-test",
        timeouts=QUICK,
        backoff=NO_RETRY,
        limits=limits,
    )


async def stream_text(model: DashScopeChat) -> str:
    return "".join([d.content async for d in model.stream({"messages": HELLO})])


# --- chat: streams ------------------------------------------------------------------------------------------
async def test_a_stream_line_that_never_ends_is_cut_at_the_bound(
    transport: UpstreamTransport,
) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata: \r\n")
        piece = b"x" * 8192
        for _ in range(1000):  # 8 MiB without a newline, unless the client hangs up first
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()

    async with Upstream(endless) as upstream:
        model = chat(transport, upstream.url, ReadLimits(event=64 * KIB))
        with pytest.raises(UpstreamError) as info:
            await stream_text(model)
        assert (info.value.code, info.value.status) == ("upstream_response_too_large", 502)
        assert not info.value.transient
        await asyncio.wait_for(upstream.hung_up.wait(), 5)  # the connection was dropped


async def test_an_event_over_the_bound_fails_the_stream_and_events_within_it_pass(
    transport: UpstreamTransport,
) -> None:
    big = json.dumps({"choices": [{"index": 0, "delta": {"content": "长" * 30_000}}]}).encode()
    async with Upstream(chunked(sse(CHUNK, big, LAST)), chunked(sse(CHUNK, LAST))) as upstream:
        model = chat(transport, upstream.url, ReadLimits(event=64 * KIB))
        with pytest.raises(UpstreamError) as info:
            await stream_text(model)
        assert info.value.code == "upstream_response_too_large"
        assert await stream_text(model) == "hi"
        assert upstream.connections == 2  # the refused answer's connection was not reused


async def test_a_gzip_stream_is_decoded_and_a_gzip_bomb_is_cut(
    transport: UpstreamTransport,
) -> None:
    fine = gzip.compress(sse(CHUNK, CHUNK, LAST))
    bomb = gzip.compress(
        b"data: " + b"0" * (64 * 1024 * KIB)
    )  # 64 MiB of one line, 64 KiB compressed
    assert len(bomb) < 100 * KIB
    async with Upstream(
        chunked(fine, "Content-Encoding: gzip"), chunked(bomb, "Content-Encoding: gzip")
    ) as upstream:
        model = chat(transport, upstream.url, ReadLimits(event=256 * KIB))
        assert await stream_text(model) == "hihi"
        with pytest.raises(UpstreamError) as info:
            await stream_text(model)
        assert info.value.code == "upstream_response_too_large"


# --- chat: whole bodies ---------------------------------------------------------------------------------------
def completion(text: str) -> bytes:
    return json.dumps(
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}
    ).encode()


async def test_a_completion_over_the_body_bound_is_refused(transport: UpstreamTransport) -> None:
    small, large = completion("好"), completion("好" * 100_000)
    async with Upstream(
        response(large, "Content-Type: application/json"),
        response(gzip.compress(large), "Content-Encoding: gzip"),
        response(small, "Content-Type: application/json"),
    ) as upstream:
        model = chat(transport, upstream.url, ReadLimits(body=128 * KIB))
        for _ in range(2):  # plain, then small on the wire but large once decompressed
            with pytest.raises(UpstreamError) as info:
                await model.complete({"messages": HELLO})
            assert info.value.code == "upstream_response_too_large"
        result = await model.complete({"messages": HELLO})
        assert result["choices"][0]["message"]["content"] == "好"


async def test_an_error_body_over_its_bound_leaves_the_status_to_tell_the_error(
    transport: UpstreamTransport,
) -> None:
    huge = json.dumps({"error": {"code": "invalid_value", "message": "x" * 200_000}}).encode()
    small = json.dumps({"error": {"code": "model_not_found", "message": "no such model"}}).encode()
    async with Upstream(
        response(huge, status="400 Bad Request"), response(small, status="404 Not Found")
    ) as upstream:
        model = chat(transport, upstream.url, ReadLimits(error_body=64 * KIB))
        with pytest.raises(UpstreamError) as info:
            await model.complete({"messages": HELLO})
        assert (info.value.status, info.value.code) == (400, "invalid_request_error")
        with pytest.raises(UpstreamError) as info:
            await stream_text(model)
        assert (info.value.status, info.value.code) == (404, "model_not_found")
        assert info.value.message == "no such model"


# --- the transports' framing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",  # '²' in Latin-1: str.isdigit() says yes
        "HTTP/1.1 200 OK\r\nContent-Length: ３\r\n\r\n".encode(),  # a full-width digit
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
    ids=["superscript-length", "fullwidth-length", "gzip-chunked", "gzip-transfer"],
)
async def test_a_head_we_cannot_frame_is_a_typed_upstream_error(
    transport: UpstreamTransport, head: bytes
) -> None:
    body = gzip.compress(sse(CHUNK, LAST))
    framed = head + (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if b"chunked" in head else body)
    async with Upstream(framed) as upstream:
        model = chat(transport, upstream.url, ReadLimits())
        with pytest.raises(UpstreamError) as info:
            await stream_text(model)
        assert info.value.status == 502
        with pytest.raises(UpstreamError):
            await model.complete({"messages": HELLO})


async def test_a_decompressed_body_comes_in_bounded_pieces() -> None:
    payload = b"a" * (8 * 1024 * KIB)
    async with Upstream(response(zlib.compress(payload), "Content-Encoding: deflate")) as upstream:
        pool = Http1Pool()
        try:
            answer = await pool.request(
                Endpoint.parse(upstream.url), "POST", RequestHeaders({}), b"{}", QUICK
            )
            sizes = []
            while data := await answer.receive():
                sizes.append(len(data))
            assert sum(sizes) == len(payload) and max(sizes) <= 256 * KIB
            assert pool.idle_connections() == 1  # read to its end: kept for reuse
        finally:
            await pool.aclose()


async def test_the_httpx_transport_reuses_a_connection_after_a_stream() -> None:
    async with (
        Upstream(chunked(sse(CHUNK, LAST))) as upstream,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        model = chat(HttpxTransport(client), upstream.url, ReadLimits())
        for _ in range(3):
            assert await stream_text(model) == "hi"
        assert upstream.requests == 3 and upstream.connections == 1


# --- file recognition -----------------------------------------------------------------------------------------
class Body(httpx.AsyncByteStream):
    """A response body that arrives as a stream (bytes given to ``httpx.Response`` count as already read)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 16 * KIB):
            yield self.data[i : i + 16 * KIB]


def recognizer(handler: Callable[[httpx.Request], httpx.Response], limits: ReadLimits) -> Any:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    engine = FileRecognizer(
        client,
        http_base="http://dashscope.test/api/v1",
        model="paraformer-v2",
        api_key="sk-test",
        timeouts=QUICK,
        backoff=NO_RETRY,
        poll_initial=0.0,
        poll_max=0.0,
        limits=limits,
    )
    return client, engine


async def test_file_recognition_reads_are_bounded() -> None:
    task = {"output": {"task_id": "t1", "task_status": "SUCCEEDED"}}
    results = {"results": [{"transcription_url": "http://files.test/r.json"}]}
    big_result = {"transcripts": [{"text": "字" * 100_000}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.test":
            raw = json.dumps(big_result).encode()
            headers = {"Content-Encoding": "gzip"}
            return httpx.Response(200, stream=Body(gzip.compress(raw)), headers=headers)
        if request.method == "POST":
            return httpx.Response(200, stream=Body(json.dumps(task).encode()))
        answer = {"output": {**task["output"], **results}}
        return httpx.Response(200, stream=Body(json.dumps(answer).encode()))

    client, engine = recognizer(handler, ReadLimits(body=64 * KIB))
    async with client:
        with pytest.raises(UpstreamError) as info:
            await engine.transcribe_url("http://objects.test/a.mp3")
    assert info.value.code == "upstream_response_too_large"

    client, engine = recognizer(handler, ReadLimits(body=1024 * KIB))
    async with client:
        assert await engine.transcribe_url("http://objects.test/a.mp3") == "字" * 100_000

    def refusing(request: httpx.Request) -> httpx.Response:
        body = b'{"code":"Throttling","message":"' + b"y" * 100_000 + b'"}'
        return httpx.Response(429, stream=Body(body))

    client, engine = recognizer(refusing, ReadLimits(error_body=4 * KIB))
    async with client:
        with pytest.raises(UpstreamError) as info:
            await engine.transcribe_url("http://objects.test/a.mp3")
    assert (info.value.status, info.value.code) == (429, "limit_requests")
