"""Redis for the quota tests: the server of ``QG_TEST_REDIS_URL`` (``scripts/redis.sh`` provides one under
``make test``) with a random key prefix per test, and throwaway ``redis-server`` processes the tests stop and
restart themselves."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

DEFAULT_URL = "redis://127.0.0.1:6379/9"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("QG_TEST_REDIS_URL", DEFAULT_URL)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0):
            pass
    except OSError:
        pytest.fail(f"no Redis answers at {url}: run the tests with `make test` (scripts/redis.sh)")
    return url


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    value = f"qgtest:{uuid.uuid4().hex[:12]}:"
    yield value
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=value + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """A ``redis-server`` of this test on its own port and directory, stopped and started at will."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail(
                "redis-server is not installed (scripts/redis.sh installs Debian's redis-server)"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *[
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            async with asyncio.timeout(10):
                await self.proc.wait()
            self.proc = None


@pytest.fixture
async def throwaway_redis(tmp_path: Path) -> AsyncIterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def keys_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "keys.txt"
    yield path
