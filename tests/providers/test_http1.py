"""The chat upstream's lean HTTP/1.1 pool over loopback, under asyncio and uvloop: keep-alive reuse, every body
framing and coding, stale and closed connections, each timeout, hang-ups, malformed answers, early close and
cancellation; and the httpx transport taking over when the environment names a proxy."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import random
import ssl
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from qwen_gateway.providers.dashscope.factory import build_providers
from qwen_gateway.providers.dashscope.http1 import (
    Endpoint,
    Http1Pool,
    HttpxTransport,
    RequestHeaders,
)
from qwen_gateway.providers.dashscope.policy import Timeouts
from qwen_gateway.simulator import Simulator

from .conftest import FAST, client_tasks, free_port, make_settings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Runner = Callable[[Coroutine[Any, Any, None]], None]

RUNNERS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
QUICK = Timeouts(connect=2.0, read=2.0, write=2.0)
LIMIT = 1024 * 1024
HEADERS = RequestHeaders({"Content-Type": "application/json", "Authorization": "Bearer sk-x"})


class Server:
    """A loopback server running ``handler`` for every connection; it records what it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        #: set when a connection's client hung up (the server read EOF).
        self.client_left = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions?x=1"

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request's head and body (None at EOF)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.client_left.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body

    async def wait_eof(self, reader: asyncio.StreamReader) -> None:
        """Read until the client hangs up."""
        while await reader.read(65536):
            pass
        self.client_left.set()


def ok(body: bytes, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode() + body


def chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    out = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ]
    for piece in pieces:
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


async def post(pool: Http1Pool, server: Server, body: bytes = b"{}", **kw: Any) -> bytes:
    response = await pool.request(
        Endpoint.parse(server.url), "POST", HEADERS, body, kw.get("timeouts", QUICK)
    )
    try:
        assert response.status == 200
        return await response.read(LIMIT)
    finally:
        await response.aclose()


# --- reuse and framing ----------------------------------------------------------------------------------------
@RUNNERS
def test_keep_alive_reuses_one_connection_and_sends_a_proper_request(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (body := await server.read_request(reader)) is not None:
                writer.write(ok(json.dumps({"echo": body.decode()}).encode()))

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                for n in range(3):
                    answer = await post(pool, server, json.dumps({"n": n}).encode())
                    assert json.loads(answer) == {"echo": json.dumps({"n": n})}
                assert server.connections == 1 and pool.idle_connections() == 1
            finally:
                await pool.aclose()
            head = server.requests[0].split(b"\r\n\r\n")[0].decode()
            lines = head.split("\r\n")
            assert lines[0] == "POST /v1/chat/completions?x=1 HTTP/1.1"
            port = server.url.split(":")[2].split("/")[0]
            assert f"Host: 127.0.0.1:{port}" in lines
            assert "Authorization: Bearer sk-x" in lines and "Content-Length: 8" in lines

    run(scenario())


@RUNNERS
def test_chunked_bodies_arriving_in_any_split(run: Runner) -> None:
    events = [
        b"data: " + json.dumps({"i": i, "t": "你好" * i}).encode() + b"\n\n" for i in range(12)
    ]
    wire = chunked(events, trailer=b"X-Trailer: yes\r\n")
    rng = random.Random(7)
    splits = [[1] * len(wire)] + [sorted(rng.sample(range(1, len(wire)), 9)) for _ in range(6)]

    async def scenario() -> None:
        plan = iter(splits)

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.read_request(reader) is not None:
                cuts = next(plan)
                if cuts == [1] * len(wire):
                    pieces = [wire[i : i + 1] for i in range(len(wire))]
                else:
                    pieces = [
                        wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)
                    ]
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                for _ in splits:
                    assert await post(pool, server) == b"".join(events)
                assert server.connections == 1  # the trailer was read: the connection stayed usable
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_a_body_ending_with_the_connection_and_connection_close(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            if server.connections == 1:  # no length: the body ends when the server closes
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                writer.write(b'{"until":')
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b'"close"}')
            else:
                writer.write(ok(b'{"n":2}', "Connection: close"))
                await writer.drain()
                await server.wait_eof(reader)

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                assert await post(pool, server) == b'{"until":"close"}'
                assert await post(pool, server) == b'{"n":2}'
                assert pool.idle_connections() == 0  # neither connection may be reused
                await asyncio.wait_for(server.client_left.wait(), 5)
                assert server.connections == 2
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_gzip_and_deflate_bodies_are_decoded(run: Runner) -> None:
    payload = json.dumps({"text": "压缩" * 200}).encode()
    raw_deflate = zlib.compressobj(wbits=-15)
    bodies = [
        (gzip.compress(payload), "gzip"),
        (zlib.compress(payload), "deflate"),
        (raw_deflate.compress(payload) + raw_deflate.flush(), "deflate"),
    ]

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for body, coding in bodies:
                await server.read_request(reader)
                writer.write(ok(body, f"Content-Encoding: {coding}"))

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                for _ in bodies:
                    assert await post(pool, server) == payload
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_interim_responses_are_skipped(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"{}"))

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                assert await post(pool, server) == b"{}"
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_a_connection_closed_by_the_server_while_idle_is_not_reused(run: Runner) -> None:
    async def scenario() -> None:
        closed = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(
                ok(b"{}")
            )  # keep-alive announced, then the server's idle timeout closes it
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            closed.set()

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                assert await post(pool, server) == b"{}"
                await asyncio.wait_for(closed.wait(), 5)  # the FIN is in the pool's socket now
                for _ in range(3):  # ... and the loop hands it to the connection
                    await asyncio.sleep(0)
                assert await post(pool, server) == b"{}"
                assert server.connections == 2
            finally:
                await pool.aclose()

    run(scenario())


# --- failures -------------------------------------------------------------------------------------------------
@RUNNERS
def test_timeouts_and_refused_connections(run: Runner) -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await server.wait_eof(reader)  # never answers

        async with Server(silent) as server:
            pool = Http1Pool()
            try:
                short = Timeouts(connect=2.0, read=0.2, write=2.0)
                with pytest.raises(httpx.ReadTimeout):
                    await post(pool, server, timeouts=short)
                await asyncio.wait_for(server.client_left.wait(), 5)  # the connection was dropped
                refused = Endpoint.parse(f"http://127.0.0.1:{free_port()}/v1")
                with pytest.raises(httpx.ConnectError):
                    await pool.request(refused, "POST", HEADERS, b"{}", QUICK)
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_a_full_pool_times_out_then_frees_its_slot(run: Runner) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{")
                await writer.drain()
                await release.wait()
                writer.write(b"}XX")  # two bytes past the body: the connection must not be reused

        async with Server(handler) as server:
            pool = Http1Pool(max_connections=1)
            try:
                endpoint = Endpoint.parse(server.url)
                held = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                short = Timeouts(connect=0.2, read=2.0, write=2.0)
                with pytest.raises(httpx.PoolTimeout):
                    await pool.request(endpoint, "POST", HEADERS, b"{}", short)
                release.set()
                assert await held.read(LIMIT) == b"{}"
                await held.aclose()
                release.clear()
                late = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                await late.aclose()
                assert server.connections == 2
            finally:
                await pool.aclose()

    run(scenario())


@pytest.mark.parametrize(
    ("answer", "where"),
    [
        (b"", "head"),  # hung up without answering
        (b"HTTP/1.1 200 OK\r\nContent-Le", "head"),  # hung up mid-head
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "body"),
        (b"HTTP/2 200\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "head"),  # "²".isdigit() is True
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "body"),
    ],
)
@RUNNERS
def test_broken_answers_are_remote_protocol_errors(run: Runner, answer: bytes, where: str) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                endpoint = Endpoint.parse(server.url)
                if where == "head":
                    with pytest.raises(httpx.RemoteProtocolError):
                        await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                else:
                    response = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                    with pytest.raises(httpx.RemoteProtocolError):
                        await response.read(LIMIT)
                    await response.aclose()
                assert pool.idle_connections() == 0
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_closing_a_response_early_or_cancelling_drops_the_connection(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await server.wait_eof(reader)  # the rest never comes

        async with Server(handler) as server:
            pool = Http1Pool(max_connections=1)
            endpoint = Endpoint.parse(server.url)
            try:
                response = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                assert await response.receive() == b"first"
                await response.aclose()
                await asyncio.wait_for(server.client_left.wait(), 5)

                server.client_left.clear()
                started = asyncio.Event()

                async def reader_task() -> None:
                    r = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                    try:
                        assert await r.receive() == b"first"
                        started.set()
                        await r.receive()  # waits: the server sends nothing more
                    finally:
                        await r.aclose()

                task = asyncio.create_task(reader_task())
                await asyncio.wait_for(started.wait(), 5)
                task.cancel()
                await asyncio.wait({task})
                await asyncio.wait_for(server.client_left.wait(), 5)
                # the single slot is free again, and nothing of the pool is left running
                third = await pool.request(endpoint, "POST", HEADERS, b"{}", QUICK)
                await third.aclose()
                assert client_tasks() == []
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_large_bodies_flow_and_a_stuck_upstream_is_a_write_timeout(run: Runner) -> None:
    big = b"x" * (4 * 1024 * 1024)
    huge = b"y" * (64 * 1024 * 1024)

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            body = await server.read_request(reader)
            assert body == big
            writer.write(ok(b"{}"))
            await reader.readuntil(b"\r\n\r\n")  # the next request's head, and no more
            await asyncio.sleep(30)

        async with Server(handler) as server:
            pool = Http1Pool()
            try:
                assert await post(pool, server, big) == b"{}"
                stuck = Timeouts(connect=2.0, read=2.0, write=0.3)
                with pytest.raises(httpx.WriteTimeout):
                    await pool.request(Endpoint.parse(server.url), "POST", HEADERS, huge, stuck)
            finally:
                await pool.aclose()

    run(scenario())


@RUNNERS
def test_aclose_closes_idle_connections_and_refuses_requests(run: Runner) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(ok(b"{}"))
            await server.wait_eof(reader)

        async with Server(handler) as server:
            pool = Http1Pool()
            assert await post(pool, server) == b"{}"
            await pool.aclose()
            await asyncio.wait_for(server.client_left.wait(), 5)
            assert pool.is_closed
            with pytest.raises(RuntimeError):
                await post(pool, server)

    run(scenario())


def test_headers_that_could_split_a_request_are_refused() -> None:
    for value in ("a\r\nX-Injected: 1", "a\nb", "nul\0", "中文"):
        with pytest.raises(httpx.LocalProtocolError):
            RequestHeaders({"Authorization": value})
    with pytest.raises(httpx.LocalProtocolError):
        RequestHeaders({"Bad Name": "x"})
    assert RequestHeaders({"A": "b"}).block == b"A: b\r\n"


def test_endpoints_parse_hosts_ports_and_targets() -> None:
    e = Endpoint.parse("https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions")
    assert (e.tls, e.host, e.port, e.host_header) == (
        True,
        "dashscope.aliyuncs.com",
        443,
        e.host.encode(),
    )
    assert e.target == b"/compatible-mode/v1/chat/completions"
    v6 = Endpoint.parse("http://[::1]:8080?q=1")
    assert (v6.host, v6.port, v6.host_header, v6.target) == ("::1", 8080, b"[::1]:8080", b"/?q=1")
    for bad in ("ftp://h/x", "http:///x", "http://h:99999/"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)


# --- the proxy fallback -----------------------------------------------------------------------------------------
class ForwardProxy:
    """An HTTP forward proxy for plain-http targets: records each request line, forwards in origin form."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        back: asyncio.Task[None] | None = None
        try:
            while True:  # one request after the other on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                line, _, rest = head.partition(b"\r\n")
                method, target, version = line.decode().split(" ")
                self.lines.append(f"{method} {target}")
                url = httpx.URL(target)
                length = 0
                for header in rest.split(b"\r\n"):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":", 1)[1])
                body = await reader.readexactly(length)
                if up_writer is None:
                    up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
                    back = asyncio.create_task(self._pipe(up_reader, writer))
                up_writer.write(
                    f"{method} {url.raw_path.decode()} {version}\r\n".encode() + rest + body
                )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if back is not None:
                back.cancel()
                await asyncio.gather(back, return_exceptions=True)
            if up_writer is not None:
                up_writer.close()
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        dst.close()


async def test_an_environment_proxy_sends_chat_through_httpx(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(sim)
    direct = build_providers(settings, tuning=FAST)
    try:
        assert isinstance(direct.chat_transport, Http1Pool)
    finally:
        await direct.aclose()

    sim.set_reply("经过代理。")
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        providers = build_providers(settings, tuning=FAST)
        try:
            assert isinstance(providers.chat_transport, HttpxTransport)
            deltas = [
                d
                async for d in providers.chat.stream(
                    {"messages": [{"role": "user", "content": "hi"}]}
                )
            ]
            async for _ in providers.chat.stream({"messages": [{"role": "user", "content": "hi"}]}):
                pass
            result = await providers.chat.complete(
                {"messages": [{"role": "user", "content": "hi"}]}
            )
        finally:
            await providers.aclose()
    assert "".join(d.content for d in deltas) == "经过代理。"
    assert result["choices"][0]["message"]["content"] == "经过代理。"
    assert proxy.lines == [f"POST {settings.chat_url}"] * 3
    assert (
        proxy.connections == 1
    )  # a stream read to its end leaves its connection for the next request


# --- TLS ----------------------------------------------------------------------------------------------------
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate (and its key) for 127.0.0.1, in PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qwen-gateway test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@RUNNERS
def test_https_with_verified_certificates_and_keep_alive(run: Runner, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (body := await read_request(reader)) is not None:
                writer.write(ok(b'{"tls":' + body + b"}"))

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint.parse(f"https://127.0.0.1:{port}/v1/chat/completions")
        pool = Http1Pool(ssl_context=trusting)
        try:
            for n in range(2):
                response = await pool.request(endpoint, "POST", HEADERS, b"%d" % n, QUICK)
                assert (response.status, await response.read(LIMIT)) == (200, b'{"tls":%d}' % n)
                await response.aclose()
            assert pool.idle_connections() == 1  # one TLS connection, reused
            untrusting = Http1Pool()  # httpx's default trust store does not know this certificate
            with pytest.raises(httpx.ConnectError):
                await untrusting.request(endpoint, "POST", HEADERS, b"0", QUICK)
            await untrusting.aclose()
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()

    run(scenario())


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)
