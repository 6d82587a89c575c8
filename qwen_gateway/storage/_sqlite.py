"""One sqlite3 connection owned by one worker thread, driven from asyncio without blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

__all__ = ["SqliteThread", "transaction"]

T = TypeVar("T")

Synchronous = Literal["OFF", "NORMAL", "FULL"]


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[None]:
    """Run the block in one transaction: committed when it ends, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if conn.in_transaction:  # the block may have ended it itself (ROLLBACK of a no-op write)
        conn.execute("COMMIT")


class SqliteThread:
    """A database file opened in WAL mode by a dedicated single-thread executor.

    Every :meth:`call` runs its function in that thread with the connection as argument, so the connection
    never crosses threads and the event loop never waits on disk. Calls run one at a time, in order.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous,
        busy_timeout: float = 10.0,
        call_timeout: float | None = None,
        name: str = "qg-sqlite",
    ) -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._call_timeout = call_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        """Create the parent folder and the file if needed, open it, set WAL and the sync level."""
        if self._conn is None:
            await self._submit(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=True
        )
        try:
            mode = self._enable_wal(conn)
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: cannot use WAL (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _enable_wal(self, conn: sqlite3.Connection) -> object:
        """``PRAGMA journal_mode=WAL``, retried while another connection holds the lock it needs.

        Switching to WAL takes an exclusive lock, and SQLite can answer ``database is locked`` at once, without
        calling the busy handler (to avoid a deadlock), while another process opens the same new file: retry
        for up to the busy timeout. Once one connection has switched, the others find WAL already set.
        """
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.005
        while True:
            try:
                return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # this is the database's own thread, not the event loop
            pause = min(pause * 2, 0.1)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the database thread and return its result.

        Raises whatever ``fn`` raises; ``TimeoutError`` when ``call_timeout`` expires (the running statement is
        interrupted, its transaction rolled back by ``fn``'s own handling).
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: database is closed")
        if self._conn is None:
            await self.open()
        conn = self._conn
        assert conn is not None
        try:
            async with asyncio.timeout(self._call_timeout):
                return await self._submit(lambda: fn(conn))
        except TimeoutError:
            conn.interrupt()
            raise

    def submit_job(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn(connection)`` in the database thread now and return its future (no timeout applies)."""
        if self._closed or self._conn is None:
            raise RuntimeError(f"{self.path}: database is not open")
        conn = self._conn
        return self._submit(lambda: fn(conn))

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def aclose(self) -> None:
        """Close the connection (after the calls already queued) and stop the thread."""
        if self._closed:
            return
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._submit(conn.close)
        self._executor.shutdown(wait=True)
