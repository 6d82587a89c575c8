"""Fixtures for the storage tests: a MariaDB database per test run, both history engines, a TCP proxy, fake OSS.

MariaDB: the server named by ``QG_TEST_DB_HOST/PORT/USER/PASSWORD`` (``make test`` exports them), else
127.0.0.1:3306 as root with an empty password. When no server answers, the MariaDB tests FAIL if ``CI`` is set and
are skipped with the reason otherwise. Each run creates its own databases (``qg_test_<pid>_<random>...``) and drops
them at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.errors
import pytest

from qwen_gateway.storage import MySQLHistoryStore, SQLiteHistoryStore
from qwen_gateway.storage.history import HistoryStore
from tests.fakes.oss import FakeOss

OSS_AK = "LTAI5tFakeAccessKeyId01"
OSS_SK = "fake-secret-Zq7vW1x9kP3mN5bT8cR2yU4h"
OSS_BUCKET = "qg-test-bucket"
OSS_REGION = "cn-beijing"


@dataclass
class MariaDB:
    """A MariaDB server that answers, and the databases this test run created on it."""

    host: str
    port: int
    user: str
    password: str
    prefix: str
    created: list[str] = field(default_factory=list)

    def new_database_name(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        self.created.append(name)
        return name

    def store(
        self, database: str, *, port: int | None = None, **kwargs: object
    ) -> MySQLHistoryStore:
        return MySQLHistoryStore(
            host=self.host,
            port=self.port if port is None else port,
            user=self.user,
            password=self.password,
            database=database,
            **kwargs,  # type: ignore[arg-type]
        )

    async def query(self, database: str, sql: str, *args: object) -> list[tuple[object, ...]]:
        """Run one statement on a fresh connection (independent of the store under test)."""
        conn = await asyncmy.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            db=database,
            charset="utf8mb4",
            autocommit=True,
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args or None)
                return list(await cur.fetchall())
        finally:
            conn.close()


def _run_in_thread(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion on its own loop in a worker thread (a test loop may be running here)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


def _mariadb_settings() -> tuple[str, int, str, str]:
    return (
        os.environ.get("QG_TEST_DB_HOST") or "127.0.0.1",
        int(os.environ.get("QG_TEST_DB_PORT") or 3306),
        os.environ.get("QG_TEST_DB_USER") or "root",
        os.environ.get("QG_TEST_DB_PASSWORD", ""),
    )


async def _check_login(host: str, port: int, user: str, password: str) -> None:
    conn = await asyncmy.connect(
        host=host, port=port, user=user, password=password, connect_timeout=3
    )
    conn.close()


async def _drop(host: str, port: int, user: str, password: str, names: list[str]) -> None:
    conn = await asyncmy.connect(
        host=host, port=port, user=user, password=password, connect_timeout=3, autocommit=True
    )
    try:
        async with conn.cursor() as cur:
            for name in names:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """The MariaDB server of this run (fails under CI when none answers; skips otherwise)."""
    host, port, user, password = _mariadb_settings()
    try:
        _run_in_thread(_check_login(host, port, user, password))
    except (OSError, asyncmy.errors.MySQLError) as exc:
        reason = (
            f"no MariaDB answers at {host}:{port} as {user!r} ({type(exc).__name__}: {exc}); "
            "run `make test` (it starts one) or set QG_TEST_DB_HOST/PORT/USER/PASSWORD"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and MariaDB is required: {reason}")
        pytest.skip(reason)
    server = MariaDB(
        host, port, user, password, prefix=f"qg_test_{os.getpid()}_{secrets.token_hex(3)}"
    )
    try:
        yield server
    finally:
        if server.created:
            _run_in_thread(_drop(host, port, user, password, server.created))


@pytest.fixture(scope="session")
def mariadb_database(mariadb: MariaDB) -> str:
    """One database shared by the MariaDB tests of this run (tests use their own conversation ids)."""
    return mariadb.new_database_name()


@pytest.fixture(params=["sqlite", "mariadb"])
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    """A migrated history store of each engine."""
    store: HistoryStore
    if request.param == "sqlite":
        store = SQLiteHistoryStore(tmp_path / "history.sqlite3")
    else:
        server: MariaDB = request.getfixturevalue("mariadb")
        store = server.store(request.getfixturevalue("mariadb_database"))
    await store.migrate()
    try:
        yield store
    finally:
        await store.aclose()


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """A loopback TCP forwarder the test can close (port refuses, live connections cut) and reopen.

    ``mode="blackhole"`` accepts connections and never forwards a byte (a server that hangs).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = "forward"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening (new connections are refused) and cut every live connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if server is not None:
            await server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pipe(reader, up_writer))
                    tg.create_task(self._pipe(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            writer.transport.abort()
            return
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


@pytest.fixture
async def mariadb_proxy(mariadb: MariaDB) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the MariaDB server, open."""
    proxy = TcpProxy(mariadb.host, mariadb.port)
    await proxy.open()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
def fake_oss() -> Iterator[FakeOss]:
    """A fake OSS server with one bucket and one access key (``OSS_AK`` / ``OSS_SK``)."""
    with FakeOss({OSS_AK: OSS_SK}, buckets=[OSS_BUCKET], region=OSS_REGION) as fake:
        yield fake
