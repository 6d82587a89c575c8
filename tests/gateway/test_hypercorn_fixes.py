"""The fixes to Hypercorn internals (``qwen_gateway.hypercorn_fixes``), each driven through a real socket: a
close frame for a stream wsproto cannot parse (1007), a completed closing handshake for an oversized message
(1009), compression declined unless configured and bounded when on, keep-alive sockets released when the
client closes, and a client dropped by the kernel logged as one line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import logging
import os
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, websocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from wsproto import Connection, ConnectionType
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from qwen_gateway import hypercorn_fixes
from qwen_gateway.config import Settings, load_settings
from qwen_gateway.server import serving

# ------------------------------------------------------------------------------------------ helpers


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = load_settings({}, dotenv=None, data_dir=tmp_path)
    fields: dict[str, Any] = {"max_frame_bytes": 32 * 1024, **overrides}  # message limit: 64 KiB
    return dataclasses.replace(base, **fields)


def _echo_app() -> Quart:
    app = Quart("echo")

    @app.websocket("/echo")
    async def echo() -> None:
        await websocket.accept()
        while True:
            data = await websocket.receive()
            await websocket.send(data if isinstance(data, str) else f"{len(data)} bytes")

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    return app


@asynccontextmanager
async def _server(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[str, int]]:
    async with serving(_echo_app(), _settings(tmp_path, **overrides)) as base_url:
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


def _frame(opcode: int, payload: bytes, *, rsv1: bool = False, fin: bool = True) -> bytes:
    """A masked client frame."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


def _deflate(data: bytes) -> bytes:
    """``data`` as one permessage-deflate message payload (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class RawWs:
    """A WebSocket client on a bare socket: sends any bytes, reads frames as the server wrote them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = b""

    @classmethod
    async def open(cls, port: int, *, deflate: bool = False) -> RawWs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        extension = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        writer.write(
            (
                "GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
            ).encode()
        )
        ws = cls(reader, writer)
        ws.headers = await reader.readuntil(b"\r\n\r\n")
        assert ws.headers.startswith(b"HTTP/1.1 101"), ws.headers
        return ws

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self) -> tuple[int, bytes] | None:
        """The next frame (opcode, payload), or None at EOF."""
        try:
            b0, b1 = await self.reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return None
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self, wait: float = 10.0) -> int | None:
        """Read up to the server's close frame; its code (None if the TCP connection ended without one)."""
        async with asyncio.timeout(wait):
            while True:
                got = await self.frame()
                if got is None:
                    return None
                opcode, payload = got
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])

    async def at_eof(self, wait: float = 10.0) -> bool:
        async with asyncio.timeout(wait):
            return await self.reader.read(65536) == b""

    def close(self) -> None:
        self.writer.close()


def _server_sockets(port: int, state: str) -> int:
    """Server-side TCP sockets of ``port`` in ``state`` (hex state of /proc/net/tcp: 08 = CLOSE_WAIT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port and parts[3] == state:
            count += 1
    return count


# ------------------------------------------------------------------------------------------ failing a stream


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        ws = await RawWs.open(port)
        await ws.send(_frame(0x1, b'{"seq": "\xff\xfe"}'))
        # 1007, not a bare drop
        assert await ws.close_code() == CloseReason.INVALID_FRAME_PAYLOAD_DATA
        assert await ws.at_eof()
        ws.close()


async def test_protocol_error_closes_with_1002(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        ws = await RawWs.open(port)
        await ws.send(_frame(0x1, b"hi", rsv1=True))  # compressed, but nothing was negotiated
        assert await ws.close_code() == CloseReason.PROTOCOL_ERROR
        assert await ws.at_eof()
        ws.close()


async def test_oversized_message_completes_the_closing_handshake(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        url = f"ws://127.0.0.1:{port}/echo"
        async with connect(url, ping_interval=None, max_size=None, close_timeout=10) as ws:
            await ws.send("x" * 100)
            assert await ws.recv() == "x" * 100
            with pytest.raises(ConnectionClosed):
                await ws.send("y" * (200 * 1024))  # over the 64 KiB message limit
                async with asyncio.timeout(10):
                    await ws.recv()
            # The client received 1009 and its answering close frame was read: a clean handshake.
            assert ws.close_code == CloseReason.MESSAGE_TOO_BIG
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_sent is not None
            async with asyncio.timeout(10):
                await ws.wait_closed()


async def test_a_client_still_sending_after_our_close_still_gets_the_close_frame(
    tmp_path: Path,
) -> None:
    # Without the lingering close, the data arriving after the server closed made the kernel reset the
    # connection, and the reset discarded the close frame the client had not read yet (1006).
    async with _server(tmp_path) as (_, port):
        ws = await RawWs.open(port)
        await ws.send(_frame(0x1, b'{"a": "\xff"}'))  # invalid UTF-8 in a text frame
        more = _frame(0x1, b"more " * 1000)
        with contextlib.suppress(ConnectionError):
            for _ in range(20):  # the client goes on sending (for less than the linger time)
                await ws.send(more)
                await asyncio.sleep(0.002)
        assert await ws.close_code() == CloseReason.INVALID_FRAME_PAYLOAD_DATA
        ws.close()


async def test_oversized_message_without_an_answer_is_closed_after_the_linger_time(
    tmp_path: Path,
) -> None:
    async with _server(tmp_path, ws_send_timeout=0.5) as (_, port):
        ws = await RawWs.open(port)
        await ws.send(_frame(0x1, b"z" * (100 * 1024)))
        assert await ws.close_code() == CloseReason.MESSAGE_TOO_BIG
        assert await ws.at_eof(wait=10)  # we never answered: the server closed after its timeout
        ws.close()


# ------------------------------------------------------------------------------------------ compression


async def test_compression_is_declined_by_default(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        url = f"ws://127.0.0.1:{port}/echo"
        async with connect(url, ping_interval=None) as ws:  # offers permessage-deflate
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("hello " * 100)
            assert await ws.recv() == "hello " * 100


async def test_compression_when_configured_works_and_bounds_inflation(tmp_path: Path) -> None:
    async with _server(tmp_path, ws_compression=True) as (_, port):
        url = f"ws://127.0.0.1:{port}/echo"
        async with connect(url, ping_interval=None) as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            await ws.send("hello " * 1000)
            assert await ws.recv() == "hello " * 1000
        # A bomb: 64 MiB of zeros in ~64 KiB of deflate. Inflation stops at the 64 KiB message limit.
        ws2 = await RawWs.open(port, deflate=True)
        assert b"permessage-deflate" in ws2.headers.lower()
        await ws2.send(_frame(0x2, _deflate(bytes(64 * 1024 * 1024)), rsv1=True))
        assert await ws2.close_code() == CloseReason.MESSAGE_TOO_BIG
        ws2.close()


def test_bounded_inflation_never_inflates_past_the_limit() -> None:
    limit = 10_000
    # Negotiate as Hypercorn does, then bound.
    pmd = PerMessageDeflate()
    pmd.accept("permessage-deflate")
    server = Connection(ConnectionType.SERVER, [pmd])
    hypercorn_fixes.BoundedPerMessageDeflate.bound(server, limit)
    (ext,) = server._proto.extensions
    assert isinstance(ext, hypercorn_fixes.BoundedPerMessageDeflate)
    # Within the limit: the message comes through whole.
    server.receive_data(_frame(0x1, _deflate(b"a" * 5000), rsv1=True))
    events = list(server.events())
    assert "".join(e.data for e in events) == "a" * 5000  # type: ignore[attr-defined]
    # Far beyond: a close (1009), and no more than limit + 1 bytes were ever inflated.
    server.receive_data(_frame(0x1, _deflate(b"b" * 50_000_000), rsv1=True))
    events = list(server.events())
    assert events[-1].code == CloseReason.MESSAGE_TOO_BIG  # type: ignore[attr-defined]
    assert ext._inflated <= limit + 1


# ------------------------------------------------------------------------------------------ TCP


async def test_closed_keep_alive_connections_release_their_sockets(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")  # keep-alive by default
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
            await writer.wait_closed()
        # Hypercorn's keep-alive timeout is 75 s; the sockets must go long before that.
        for _ in range(200):
            if _server_sockets(port, "08") == 0:
                break
            await asyncio.sleep(0.02)
        assert _server_sockets(port, "08") == 0  # no CLOSE_WAIT left


async def test_an_idle_keep_alive_connection_stays_usable(tmp_path: Path) -> None:
    async with _server(tmp_path) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(4)  # "pong"
            await asyncio.sleep(0.05)
        writer.close()


async def test_a_client_dropped_by_the_kernel_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import AsyncioSingleTask

    hypercorn_fixes.install()

    class DroppedWriter:
        def write_eof(self) -> None:
            pass

        def close(self) -> None:
            pass

        async def wait_closed(self) -> None:
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    server = TCPServer.__new__(TCPServer)
    server.writer = DroppedWriter()  # type: ignore[assignment]
    server.idle_task = AsyncioSingleTask()
    caplog.set_level(logging.DEBUG)
    await server._close()  # no exception escapes
    records = [r for r in caplog.records if r.name == "qwen_gateway.server"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.INFO, "client connection dropped")
    ]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_write_to_a_dropped_client_ends_the_connection_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.events import Closed, RawData

    hypercorn_fixes.install()

    class DroppedWriter:
        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    class Protocol:
        def __init__(self) -> None:
            self.events: list[Any] = []

        async def handle(self, event: Any) -> None:
            self.events.append(event)

    server = TCPServer.__new__(TCPServer)
    server.writer = DroppedWriter()  # type: ignore[assignment]
    server.send_lock = asyncio.Lock()
    server.protocol = Protocol()  # type: ignore[assignment]
    caplog.set_level(logging.DEBUG)
    # Hypercorn let the OSError escape into the application ("Error in ASGI Framework", a traceback).
    await server.protocol_send(RawData(data=b"x"))
    await server.protocol_send(RawData(data=b"y"))
    assert [type(e) for e in server.protocol.events] == [Closed, Closed]  # type: ignore[attr-defined]
    records = [r for r in caplog.records if r.name == "qwen_gateway.server"]
    assert [r.getMessage() for r in records] == ["client connection dropped"]  # once
