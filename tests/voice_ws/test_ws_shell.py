"""The connection shell (``qwen_gateway.ws``) under Hypercorn, driven by a real ``websockets`` client.

A tiny endpoint built on :class:`WsConnection` stands in for the voice routes: it echoes frames, floods on request,
closes, or fails, and records how each connection ended.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypercorn.asyncio import serve
from quart import Quart, websocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from qwen_gateway.config import Settings, load_settings
from qwen_gateway.server import hypercorn_config, listen
from qwen_gateway.ws import CloseInfo, EndReason, WsConnection, WsLimits, set_unread_timeout


def _error_frame(code: str, message: str) -> str:
    return json.dumps({"error": {"message": message, "code": code}})


@dataclass
class Record:
    info: CloseInfo | None = None
    cancelled: bool = False
    produced: int = 0
    producer_cancelled: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


def shell_app(limits: WsLimits, records: list[Record]) -> Quart:
    app = Quart("shell-test")

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        rec = Record()
        records.append(rec)
        conn = WsConnection(websocket._get_current_object(), limits, error_frame=_error_frame)

        async def flood(n: int, size: int) -> None:
            try:
                for i in range(n):
                    await conn.send(f"{i:08d}" + "x" * (size - 8))
                    rec.produced += 1
                conn.close(1000, "")
            except asyncio.CancelledError:
                rec.producer_cancelled = True
                raise

        async def on_open() -> None:
            await conn.send("hello")

        async def on_frame(frame: str | bytes) -> None:
            assert isinstance(frame, str)
            cmd, _, arg = frame.partition(":")
            if cmd == "flood":
                n, size = arg.split(",")
                conn.spawn(flood(int(n), int(size)), name="flood")
            elif cmd == "close":
                await conn.send("bye")
                conn.close(1000)
            elif cmd == "boom":
                raise RuntimeError("bug in on_frame")
            elif cmd == "sleep":
                conn.spawn(asyncio.sleep(3600), name="sleeper")
            else:
                await conn.send("echo:" + frame)

        try:
            rec.info = await conn.run(on_frame, on_open=on_open)
        except asyncio.CancelledError:
            rec.cancelled = True
            raise
        finally:
            rec.done.set()

    return app


@asynccontextmanager
async def serve_app(app: Quart, settings: Settings, *, unread: float | None) -> AsyncIterator[str]:
    """``qwen_gateway.server.serving`` plus ``set_unread_timeout`` on the listening socket."""
    sock = listen("127.0.0.1", 0)
    if unread is not None:
        assert set_unread_timeout(sock, unread)
    port = sock.getsockname()[1]
    config = hypercorn_config(settings, sock)
    sock.detach()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


def established() -> set[tuple[int, int]]:
    """(local port, remote port) of every ESTABLISHED IPv4 TCP socket of this host (Linux)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01":
            out.add((int(parts[1].split(":")[1], 16), int(parts[2].split(":")[1], 16)))
    return out


def _settings(tmp_path: Path) -> Settings:
    return load_settings({}, dotenv=None, data_dir=tmp_path)


async def test_frames_in_order_and_close_after_queued_frames(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=5, idle_timeout=30)
    async with serve_app(shell_app(limits, records), _settings(tmp_path), unread=None) as url:
        async with connect(url, ping_interval=None) as ws:
            assert await ws.recv() == "hello"
            for i in range(20):
                await ws.send(f"m{i}")
            for i in range(20):
                assert await ws.recv() == f"echo:m{i}"
            await ws.send("close")
            assert await ws.recv() == "bye"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1000
        await asyncio.wait_for(records[0].done.wait(), 5)
    info = records[0].info
    assert info is not None
    assert info.reason is EndReason.CLOSED
    assert info.frames_received == 21 and info.frames_sent == 22


async def test_slow_reader_gets_every_frame_and_the_producer_waits(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=10, idle_timeout=30, queue_size=4)
    n, size = 400, 60_000  # 24 MB: far more than kernel buffers and the queue hold
    async with serve_app(shell_app(limits, records), _settings(tmp_path), unread=None) as url:
        async with connect(
            url, ping_interval=None, max_queue=1, max_size=None, compression=None
        ) as ws:
            assert await ws.recv() == "hello"
            await ws.send(f"flood:{n},{size}")
            # The client reads nothing for a while: the producer must stall, far short of n.
            for _ in range(50):
                await asyncio.sleep(0.02)
            stalled_at = records[0].produced
            await asyncio.sleep(0.3)
            assert records[0].produced == stalled_at, "producer kept going while nothing was read"
            assert stalled_at < n // 2
            # Now read slowly: every frame arrives, in order, none dropped.
            for i in range(n):
                frame = await ws.recv()
                assert frame[:8] == f"{i:08d}" and len(frame) == size
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await asyncio.wait_for(records[0].done.wait(), 5)
    assert records[0].info is not None and records[0].info.reason is EndReason.CLOSED


async def test_client_that_reads_nothing_is_evicted_and_its_socket_closed(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=0.5, idle_timeout=30, queue_size=4, close_timeout=0.3)
    app = shell_app(limits, records)
    async with (
        serve_app(app, _settings(tmp_path), unread=1.0) as url,
        connect(url, ping_interval=None, max_queue=1, max_size=None, compression=None) as ws,
    ):
        await ws.send("flood:100000,60000")  # 6 GB if nothing pushed back
        await asyncio.wait_for(records[0].done.wait(), 10)
        rec = records[0]
        assert rec.info is not None
        assert rec.info.reason is EndReason.SEND_TIMEOUT
        assert rec.info.code == 4008
        assert rec.producer_cancelled, "the producer task must be cancelled with the connection"
        assert rec.produced < 200  # kernel buffers + the 4-frame queue, not the flood
        # The server's TCP socket is really closed while the client still reads nothing
        # (without the kernel deadline it would stay ESTABLISHED, pinned by the full buffers).
        client_port = ws.transport.get_extra_info("sockname")[1]
        server_port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with asyncio.timeout(10):
            while (server_port, client_port) in established():  # noqa: ASYNC110 (OS state)
                await asyncio.sleep(0.05)
        # Reading again, the client gets what its own buffers held, then sees the drop.
        received = 0
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
                    received += 1
        assert received <= rec.produced
    assert not [
        t for t in asyncio.all_tasks() if t.get_name() in {"flood", "ws-writer", "ws-reader"}
    ]


async def test_idle_connection_gets_typed_error_and_close(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=5, idle_timeout=0.3)
    async with serve_app(shell_app(limits, records), _settings(tmp_path), unread=None) as url:
        async with connect(url, ping_interval=None) as ws:
            assert await ws.recv() == "hello"
            await ws.send("sleep")  # a task that would run forever must not keep the connection
            error = json.loads(await ws.recv())
            assert error["error"]["code"] == "idle_timeout"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4000
        await asyncio.wait_for(records[0].done.wait(), 5)
    assert records[0].info is not None and records[0].info.reason is EndReason.IDLE_TIMEOUT


async def test_failure_in_a_task_is_an_internal_error_1011(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=5, idle_timeout=30)
    app = shell_app(limits, records)
    async with (
        serve_app(app, _settings(tmp_path), unread=None) as url,
        connect(url, ping_interval=None) as ws,
    ):
        assert await ws.recv() == "hello"
        await ws.send("boom")
        error = json.loads(await ws.recv())
        assert error["error"]["code"] == "internal_error"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1011
    assert records[0].info is not None and records[0].info.reason is EndReason.INTERNAL_ERROR


async def test_client_disconnect_cancels_every_task(tmp_path: Path) -> None:
    records: list[Record] = []
    limits = WsLimits(send_timeout=5, idle_timeout=30, queue_size=2)
    async with serve_app(shell_app(limits, records), _settings(tmp_path), unread=None) as url:
        ws = await connect(url, ping_interval=None, max_queue=1, compression=None)
        await ws.send("flood:100000,1000")
        await asyncio.sleep(0.2)
        ws.transport.abort()  # abrupt: no close frame
        await asyncio.wait_for(records[0].done.wait(), 5)
        rec = records[0]
        assert rec.cancelled and rec.producer_cancelled and rec.info is None
        assert not [t for t in asyncio.all_tasks() if t.get_name() in {"flood", "ws-writer"}]


def test_set_unread_timeout_sets_the_socket_option() -> None:
    with socket.socket() as sock:
        assert set_unread_timeout(sock, 2.5)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500


def test_limits_from_settings(tmp_path: Path) -> None:
    s = load_settings({"QG_WS_SEND_TIMEOUT": "3", "QG_WS_IDLE_TIMEOUT": "40"}, dotenv=None)
    limits = WsLimits.from_settings(s)
    assert (limits.send_timeout, limits.idle_timeout) == (3.0, 40.0)
    assert limits.queue_size > 0
