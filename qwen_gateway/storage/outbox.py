"""Nothing lost when the database is down: a durable local journal in front of the history store.

:meth:`Outbox.submit` writes the turn to a local SQLite journal (WAL, ``synchronous=FULL``: fsync'd at commit) and
returns; it never waits on the history database. A drainer moves journal entries to the
:class:`~qwen_gateway.storage.history.HistoryStore` oldest first, one at a time, deleting each after the store
accepted it. Stores are idempotent on ``write_id``, so an entry replayed after a crash is stored once. While the
database is away the drainer retries the same entry with exponential backoff (jitter, capped), so order is kept.
The journal survives restarts; the next :meth:`Outbox.open` finds the backlog and the drainer sends it.

An entry the database *refuses* (:class:`~qwen_gateway.storage.history.HistoryRejected`, e.g. a data error) is
retried ``max_attempts`` times, then moved to the journal's ``dead_letters`` table (kept, counted in
:meth:`Outbox.status`, logged) so that one bad record cannot block every later turn.

Typical use::

    async with Outbox(settings.journal_path, history) as outbox:   # drainer runs inside
        await outbox.submit(turn)                                   # durable on return
        outbox.backlog()                                            # for /health

or ``await outbox.open()`` then ``tg.create_task(outbox.run())`` in a TaskGroup you own; from sync code,
``outbox.submit_nowait(turn)`` queues the write and returns a future.

Several processes may share one journal file (same data dir): each drains it in order and replays are no-ops, so
nothing is lost or doubled, though :meth:`Outbox.backlog` is exact only for the process's own view. A turn still in
the journal when its conversation is deleted is stored after the delete (the delete is not a tombstone).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from qwen_gateway.errors import StorageError
from qwen_gateway.storage._sqlite import SqliteThread, transaction
from qwen_gateway.storage.history import (
    HistoryRejected,
    HistoryStore,
    TurnRecord,
    decode_turn,
    encode_turn,
    validate_turn,
)

__all__ = ["Outbox", "OutboxStatus"]

log = logging.getLogger("qwen_gateway.storage.outbox")

_JOURNAL_FORMAT = 1


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What ``/health`` reports about the history pipeline."""

    #: turns in the journal, not yet in the history database.
    backlog: int
    #: entries the database refused ``max_attempts`` times, kept aside in the journal.
    dead_letters: int
    #: the drainer task is running.
    draining: bool
    #: False while the last attempt to reach the history database failed.
    healthy: bool
    #: the last failure (exception class and message; never content or keys), None once recovered.
    last_error: str | None
    #: wall-clock time (epoch seconds) of the first failure of the current outage.
    failing_since: float | None


def _log_unretrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("journal write failed: %s", future.exception())


@dataclass(slots=True)
class _Pending:
    write_id: str
    payload: bytes
    submitted_at: float
    future: asyncio.Future[None]


class Outbox:
    """A durable journal of turns and the drainer that moves them into the history store.

    Args:
        journal_path: the journal's SQLite file (created with its folder when missing).
        store: where the turns end up.
        backoff_initial / backoff_max: seconds between attempts while the store fails (doubling, jittered).
        batch_size: entries read from the journal at a time.
        max_attempts: times an entry the store *refuses* is retried before it becomes a dead letter.
        lock_timeout: seconds a journal write waits for another process holding the journal's lock.
    """

    def __init__(
        self,
        journal_path: Path,
        store: HistoryStore,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        batch_size: int = 64,
        max_attempts: int = 5,
        lock_timeout: float = 10.0,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.journal_path = Path(journal_path)
        self.store = store
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._journal = SqliteThread(
            self.journal_path, synchronous="FULL", busy_timeout=lock_timeout, name="qg-journal"
        )
        self._pending: deque[_Pending] = deque()
        # Counters written only by the journal thread (reads from the loop are atomic).
        self._backlog = 0
        self._dead = 0
        # Submitted but not yet confirmed written (touched only on the loop's thread): counted in the backlog,
        # so that drained() cannot return between submit_nowait() and the journal write.
        self._unwritten = 0
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self._running = False
        self._migrated = False
        self._last_error: str | None = None
        self._failing_since: float | None = None

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open (or create) the journal and count what an earlier run left in it."""
        if self._closed:
            raise RuntimeError("Outbox is closed")
        if self._opened:
            return
        await self._journal.open()
        await self._journal.call(self._init_journal)
        self._opened = True
        self._notify()
        if self._backlog:
            log.info(
                "journal %s holds %d turns from an earlier run", self.journal_path, self._backlog
            )

    def _init_journal(self, conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS journal ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " write_id TEXT NOT NULL UNIQUE,"
                " payload BLOB NOT NULL,"
                " submitted_at REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0,"
                " last_error TEXT)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS dead_letters ("
                " seq INTEGER PRIMARY KEY,"
                " write_id TEXT NOT NULL,"
                " payload BLOB NOT NULL,"
                " submitted_at REAL NOT NULL,"
                " failed_at REAL NOT NULL,"
                " error TEXT NOT NULL)"
            )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version = {_JOURNAL_FORMAT}")
            elif version != _JOURNAL_FORMAT:
                raise StorageError(
                    f"journal format {version} is not supported (expected {_JOURNAL_FORMAT})"
                )
            self._backlog = conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
            self._dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

    async def start(self) -> None:
        """Open the journal and start the drainer as a task owned by this outbox (stopped by :meth:`aclose`)."""
        await self.open()
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="qwen-gateway outbox drainer")

    async def aclose(self) -> None:
        """Stop the drainer, finish the journal writes already submitted, close the journal.

        What is still in the journal stays there for the next start.
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self._journal.aclose()

    async def __aenter__(self) -> Outbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ submit
    async def submit(self, turn: TurnRecord) -> None:
        """Write the turn to the journal; on return it is on disk and will reach the history store.

        Submitting a record with a ``write_id`` already in the journal stores it once.

        Raises:
            ValueError: the record breaks its constraints (a caller bug; it would never be stored).
            StorageError: the journal could not be written (disk full, I/O error): the turn is NOT saved.
            RuntimeError: the outbox is not open, or closed.
        """
        await self.submit_nowait(turn)

    def submit_nowait(self, turn: TurnRecord) -> asyncio.Future[None]:
        """Queue the turn for the journal without waiting; for callers that cannot await (sync callbacks).

        Returns a future that completes once the turn is on disk (await it, or ignore it: a journal failure is
        then logged). Turns queued before :meth:`aclose` are written before the journal closes. Raises like
        :meth:`submit` for an invalid record or a closed outbox. Call it from the event loop's thread.
        """
        if not self._opened or self._closed:
            raise RuntimeError("Outbox is not open")
        turn = validate_turn(turn)
        loop = asyncio.get_running_loop()
        item = _Pending(turn.write_id, encode_turn(turn), time.time(), loop.create_future())
        item.future.add_done_callback(_log_unretrieved)
        self._pending.append(item)
        self._unwritten += 1
        # The journal thread runs jobs in order: when this job runs, it (or an earlier job) writes every item
        # queued so far in one transaction (group commit), ours included.
        job = self._journal.submit_job(lambda conn: self._write_pending(conn, loop))
        job.add_done_callback(_log_unretrieved)
        return item.future

    def _write_pending(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[_Pending] = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        inserted = 0
        try:
            with transaction(conn):
                for item in batch:
                    cursor = conn.execute(
                        "INSERT INTO journal (write_id, payload, submitted_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (write_id) DO NOTHING",
                        (item.write_id, item.payload, item.submitted_at),
                    )
                    inserted += cursor.rowcount
        except (sqlite3.Error, OSError) as exc:
            error = StorageError(f"journal write failed: {exc}")
            loop.call_soon_threadsafe(self._written, batch, error)
            return
        self._backlog += inserted
        loop.call_soon_threadsafe(self._written, batch, None)

    def _written(self, batch: list[_Pending], error: StorageError | None) -> None:
        self._unwritten -= len(batch)
        for item in batch:
            if item.future.done():
                continue
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(error)
        self._notify()
        if error is None:
            self._wakeup.set()

    # ------------------------------------------------------------------ observation
    def backlog(self) -> int:
        """Turns submitted (or in the journal) and not yet stored in the history database."""
        return self._backlog + self._unwritten

    def dead_letters(self) -> int:
        """Entries set aside because the database refused them."""
        return self._dead

    def status(self) -> OutboxStatus:
        """A snapshot for ``/health``."""
        return OutboxStatus(
            backlog=self.backlog(),
            dead_letters=self._dead,
            draining=self._running,
            healthy=self._last_error is None,
            last_error=self._last_error,
            failing_since=self._failing_since,
        )

    async def drained(self) -> None:
        """Wait until the journal is empty (every submitted turn is in the history store or a dead letter)."""
        await self.wait_until(lambda status: status.backlog == 0)

    async def wait_until(self, predicate: Callable[[OutboxStatus], bool]) -> OutboxStatus:
        """Wait until ``predicate(status())`` holds (checked at every change) and return that status."""
        if not self._opened:
            raise RuntimeError("Outbox is not open")
        while True:
            status = self.status()
            if predicate(status):
                return status
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # ------------------------------------------------------------------ drainer
    async def run(self) -> None:
        """Drain the journal into the store until cancelled (put it in a TaskGroup, or use :meth:`start`)."""
        await self.open()
        self._running = True
        self._notify()
        backoff = self._backoff_initial
        try:
            while True:
                self._wakeup.clear()
                try:
                    progress = await self._drain_once()
                except StorageError as exc:  # the journal itself failed: keep trying, loudly
                    self._note_failure(exc)
                    progress = False
                except Exception as exc:  # a bug: never let it end the drainer silently
                    log.exception("outbox drainer failed; will retry")
                    self._note_failure(exc)
                    progress = False
                if progress is None:  # journal empty: sleep until a submit
                    await self._wakeup.wait()
                elif progress:
                    backoff = self._backoff_initial
                else:
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, self._backoff_max)
        finally:
            self._running = False
            self._notify()

    async def _drain_once(self) -> bool | None:
        """Send one batch. None: nothing to send; True: all sent; False: the store failed (retry later)."""
        if not self._migrated:
            try:
                await self.store.migrate()
            except StorageError as exc:
                self._note_failure(exc)
                return False
            self._migrated = True
        rows = await self._journal_call(self._read_batch)
        self._notify()
        if not rows:
            self._note_success(0)
            return None
        applied: list[int] = []
        failure: BaseException | None = None
        try:
            for seq, payload, attempts in rows:
                try:
                    turn = decode_turn(payload)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    await self._bury(seq, f"undecodable journal entry: {exc}")
                    continue
                try:
                    await self.store.append_turn(turn)
                except HistoryRejected as exc:
                    if attempts + 1 >= self._max_attempts:
                        await self._bury(seq, f"{type(exc).__name__}: {exc}")
                        continue
                    await self._journal_call(lambda c, s=seq, e=exc: self._count_attempt(c, s, e))
                    failure = exc
                    break
                except StorageError as exc:
                    failure = exc
                    break
                except Exception as exc:  # a store bug must not kill the drainer or lose the entry
                    log.exception("history store raised an unexpected error; will retry")
                    failure = exc
                    break
                applied.append(seq)
        finally:
            if applied:
                count = len(applied)
                await asyncio.shield(self._journal_call(lambda c: self._delete(c, applied)))
                self._notify()
                applied = []
                log.debug("moved %d turns from the journal to the history store", count)
        if failure is not None:
            self._note_failure(failure)
            return False
        self._note_success(len(rows))
        return True

    async def _journal_call(self, fn: Any) -> Any:
        try:
            return await self._journal.call(fn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"journal failed: {exc}") from exc

    def _read_batch(self, conn: sqlite3.Connection) -> list[tuple[int, bytes, int]]:
        rows = conn.execute(
            "SELECT seq, payload, attempts FROM journal ORDER BY seq LIMIT ?", (self._batch_size,)
        ).fetchall()
        if len(rows) < self._batch_size:
            self._backlog = len(rows)  # exact: we hold the whole journal
        return rows

    def _delete(self, conn: sqlite3.Connection, seqs: list[int]) -> None:
        with transaction(conn):
            deleted = conn.executemany(
                "DELETE FROM journal WHERE seq = ?", [(s,) for s in seqs]
            ).rowcount
        self._backlog = max(0, self._backlog - deleted)

    def _count_attempt(self, conn: sqlite3.Connection, seq: int, exc: BaseException) -> None:
        with transaction(conn):
            conn.execute(
                "UPDATE journal SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (f"{type(exc).__name__}: {exc}"[:500], seq),
            )

    async def _bury(self, seq: int, error: str) -> None:
        def bury(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                moved = conn.execute(
                    "INSERT INTO dead_letters (seq, write_id, payload, submitted_at, failed_at, error)"
                    " SELECT seq, write_id, payload, submitted_at, ?, ? FROM journal WHERE seq = ?",
                    (time.time(), error[:500], seq),
                ).rowcount
                conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
            self._backlog = max(0, self._backlog - moved)
            self._dead += moved

        await self._journal_call(bury)
        self._notify()
        log.error("journal entry %d set aside as a dead letter: %s", seq, error[:200])

    def _note_failure(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"[:300]
        if self._last_error is None:
            self._failing_since = time.time()
            log.warning(
                "history store unavailable, %d turns kept in the journal: %s",
                self._backlog,
                message,
            )
        self._last_error = message
        self._notify()

    def _note_success(self, count: int) -> None:
        if self._last_error is not None:
            log.info("history store reachable again; draining %d journaled turns", self._backlog)
        self._last_error = None
        self._failing_since = None
        self._notify()
