"""Fixtures for the DashScope client tests: the simulator on a loopback port, settings pointing at it, the
providers built from them, and a check that a client left no task running."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from qwen_gateway.config import Settings, load_settings
from qwen_gateway.providers.dashscope import Providers, Tuning, build_providers
from qwen_gateway.simulator import Simulator, SimulatorConfig

#: Short backoff and polling so that retries and file tasks cost milliseconds.
FAST = Tuning(retry_base=0.01, retry_cap=0.05, poll_initial=0.01, poll_max=0.05, close_timeout=0.5)
KEY = "sk-test-key"


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Override in a test module (or parametrize) to change simulator knobs."""
    return SimulatorConfig(api_key=KEY)


@pytest.fixture
async def sim(sim_config: SimulatorConfig) -> AsyncIterator[Simulator]:
    async with Simulator(sim_config, host="127.0.0.1", port=0) as simulator:
        yield simulator


def make_settings(sim: Simulator, **overrides: Any) -> Settings:
    """Settings whose four upstream URLs point at ``sim``."""
    values: dict[str, Any] = {
        "qwen_api_key": KEY,
        "upstream_retries": 2,
        "connect_timeout": 5.0,
        "read_timeout": 10.0,
    }
    values.update(overrides)
    return load_settings(sim.env, dotenv=None, **values)


@pytest.fixture
def settings(sim: Simulator) -> Settings:
    return make_settings(sim)


@pytest.fixture
async def providers(settings: Settings) -> AsyncIterator[Providers]:
    built = build_providers(settings, tuning=FAST)
    try:
        yield built
    finally:
        await built.aclose()


_CLIENT_MARKERS = (
    "/qwen_gateway/providers/",
    "/websockets/asyncio/client",
    "/websockets/asyncio/connection",
    "/httpcore/",
    "/httpx/",
)


def client_tasks() -> list[asyncio.Task[Any]]:
    """Running tasks whose coroutine belongs to our clients or their HTTP/WebSocket libraries."""
    found: list[asyncio.Task[Any]] = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        coro: Any = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
        filename = code.co_filename if code is not None else ""
        if any(marker in filename for marker in _CLIENT_MARKERS):
            found.append(task)
    return found


async def cancel_after(
    started: asyncio.Event, body: Callable[[], Awaitable[None]]
) -> asyncio.Task[None]:
    """Run ``body`` as a task, wait until it sets ``started``, cancel it and wait for it to end."""
    task = asyncio.create_task(body())
    waiter = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()  # surfaces an unexpected failure of the body
        raise AssertionError("the body finished before it could be cancelled")
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()
    return task


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FileServer:
    """A minimal loopback HTTP/1.1 server answering GET ``/<name>`` with registered bytes (else 404)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, name: str) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/{name}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.requests.append(path)
            body = self.files.get(path.lstrip("/"))
            if body is None:
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                )
                writer.write(body)
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    async with FileServer() as server:
        yield server
