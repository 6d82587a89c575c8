"""Nothing lost when the database is down: a durable local journal in front of the history store.

:meth:`Outbox.submit` writes the turn to a local SQLite journal (WAL, ``synchronous=FULL``: fsync'd at commit) and
returns; it never waits on the history database. Writes are group-committed: while one journal transaction is
being written, the turns submitted meanwhile wait for the next one, and a turn nobody waits for
(:meth:`Outbox.submit_nowait`) may wait ``commit_delay`` for others, so a burst or a steady stream of turns costs
an fsync per batch, not per turn.

A drainer moves journal entries to the :class:`~qwen_gateway.storage.history.HistoryStore` oldest first, in
batches: it reads up to ``batch_size`` entries, appends them to the store one after the other, and deletes them
from the journal in the same job that reads the next batch. After a batch smaller than ``batch_size`` it waits
``drain_delay`` seconds, so that turns arriving at a steady rate are moved a batch at a time. Deleting needs no
fsync (a delete lost in a power cut only replays turns already stored). Stores are idempotent on ``write_id``,
so an entry replayed after a crash is stored once. While the database is away the drainer retries the same entry
with exponential backoff (jitter, capped), so order is kept. The journal survives restarts; the next
:meth:`Outbox.open` finds the backlog and the drainer sends it.

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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

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
_INSERT_ROWS = 256  # turns per INSERT statement (3 parameters each, well under SQLite's limit)

T = TypeVar("T")


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


#: one journal row handed to the drainer: (seq, payload, attempts so far).
_Row = tuple[int, bytes, int]


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
        drain_delay: seconds the drainer waits after a batch smaller than ``batch_size`` (0: none).
        commit_delay: seconds a turn of :meth:`submit_nowait` may wait for more turns to share its journal
            write and fsync (0: none; :meth:`submit` never waits; turns submitted while a write is in progress
            always share the next one).
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
        drain_delay: float = 0.02,
        commit_delay: float = 0.02,
        max_attempts: int = 5,
        lock_timeout: float = 10.0,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if batch_size < 1 or drain_delay < 0 or commit_delay < 0:
            raise ValueError("need batch_size >= 1, drain_delay >= 0 and commit_delay >= 0")
        self.journal_path = Path(journal_path)
        self.store = store
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._batch_size = batch_size
        self._drain_delay = drain_delay
        self._commit_delay = commit_delay
        self._max_attempts = max_attempts
        self._journal = SqliteThread(
            self.journal_path, synchronous="FULL", busy_timeout=lock_timeout, name="qg-journal"
        )
        self._pending: deque[_Pending] = deque()
        # Counters, touched only on the loop's thread. Journal jobs return what they changed and the counters
        # are updated by callbacks that run in the order the jobs ran, so they always match the journal.
        #: journal entries not yet in the store (entries stored but not yet deleted are not counted).
        self._backlog = 0
        self._dead = 0
        #: submitted but not yet confirmed written: counted in the backlog, so that drained() cannot return
        #: between submit_nowait() and the journal write.
        self._unwritten = 0
        #: the journal write in flight (at most one: the turns submitted meanwhile go in the next one).
        self._flush: asyncio.Future[int] | None = None
        #: armed when ``commit_delay`` is set, no write is in flight and the oldest pending turn is younger.
        self._flush_timer: asyncio.TimerHandle | None = None
        #: loop time when the oldest pending turn was submitted.
        self._pending_since = 0.0
        #: a pending turn's caller waits for it (:meth:`submit`): no ``commit_delay``.
        self._urgent = False
        #: journal entries the store accepted, deleted from the journal by the next journal job of the drainer.
        self._applied: list[int] = []
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self._running = False
        self._migrated = False
        self._last_error: str | None = None
        self._failing_since: float | None = None
        #: called with the seconds from a turn's ``created_at`` to its write into the store (metrics)
        self.on_stored: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open (or create) the journal and count what an earlier run left in it."""
        if self._closed:
            raise RuntimeError("Outbox is closed")
        if self._opened:
            return
        await self._journal.open()
        self._backlog, self._dead = await self._journal.call(self._init_journal)
        self._opened = True
        self._notify()
        if self._backlog:
            log.info(
                "journal %s holds %d turns from an earlier run", self.journal_path, self._backlog
            )

    @staticmethod
    def _init_journal(conn: sqlite3.Connection) -> tuple[int, int]:
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
            backlog = conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
            dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        return int(backlog), int(dead)

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
        try:
            if self._opened:
                while self._pending or self._flush is not None:
                    if self._flush is None:
                        self._start_flush()
                    assert self._flush is not None
                    await asyncio.wait({self._flush})
                if self._applied:
                    applied, self._applied = self._applied, []
                    await self._journal.call(lambda c: self._delete(c, applied))
        except (sqlite3.Error, OSError) as exc:
            log.error("journal not tidied at close (stored turns will be replayed): %s", exc)
        finally:
            await self._journal.aclose()

    async def __aenter__(self) -> Outbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ submit
    async def submit(self, turn: TurnRecord) -> None:
        """Write the turn to the journal; on return it is on disk and will reach the history store.

        The write starts at once (taking along every turn pending). Submitting a record with a ``write_id``
        already in the journal stores it once.

        Raises:
            ValueError: the record breaks its constraints (a caller bug; it would never be stored).
            StorageError: the journal could not be written (disk full, I/O error): the turn is NOT saved.
            RuntimeError: the outbox is not open, or closed.
        """
        await self._enqueue(turn, urgent=True)

    def submit_nowait(self, turn: TurnRecord) -> asyncio.Future[None]:
        """Queue the turn for the journal without waiting; for callers that cannot await (sync callbacks).

        Returns a future that completes once the turn is on disk (await it, or ignore it: a journal failure is
        then logged); the turn may wait up to ``commit_delay`` to share its write with others. Turns queued
        before :meth:`aclose` are written before the journal closes. Raises like :meth:`submit` for an invalid
        record or a closed outbox. Call it from the event loop's thread.
        """
        return self._enqueue(turn, urgent=False)

    def _enqueue(self, turn: TurnRecord, *, urgent: bool) -> asyncio.Future[None]:
        if not self._opened or self._closed:
            raise RuntimeError("Outbox is not open")
        turn = validate_turn(turn)
        loop = asyncio.get_running_loop()
        item = _Pending(turn.write_id, encode_turn(turn), time.time(), loop.create_future())
        item.future.add_done_callback(_log_unretrieved)
        if not self._pending:
            self._pending_since = loop.time()
        self._pending.append(item)
        self._unwritten += 1
        self._urgent = self._urgent or urgent
        self._schedule_flush(loop)
        return item.future

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next journal write now, or once the oldest pending turn has waited ``commit_delay``
        (at once when a caller waits for it)."""
        if self._flush is not None:
            return  # the pending turns go with the next write, started when this one ends
        if self._urgent:
            self._start_flush()
            return
        if self._flush_timer is not None:
            return
        wait = self._commit_delay - (loop.time() - self._pending_since)
        if wait > 0:
            self._flush_timer = loop.call_later(wait, self._start_flush)
        else:
            self._start_flush()

    def _start_flush(self) -> None:
        """Write every pending turn in one journal transaction (group commit)."""
        self._urgent = False
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        batch: list[_Pending] = []
        while self._pending:
            batch.append(self._pending.popleft())
        flush = self._journal.submit_job(lambda conn: self._write(conn, batch))
        self._flush = flush
        flush.add_done_callback(lambda f: self._flushed(f, batch))

    @staticmethod
    def _write(conn: sqlite3.Connection, batch: list[_Pending]) -> int:
        # One statement per _INSERT_ROWS turns: every SQLite call lets the event loop's thread take the GIL, and
        # taking it back costs this thread a context switch, so the fewer calls the better.
        inserted = 0
        with transaction(conn):
            for start in range(0, len(batch), _INSERT_ROWS):
                rows = batch[start : start + _INSERT_ROWS]
                values: list[object] = []
                for item in rows:
                    values += (item.write_id, item.payload, item.submitted_at)
                cursor = conn.execute(
                    "INSERT INTO journal (write_id, payload, submitted_at) VALUES "
                    + ", ".join(["(?, ?, ?)"] * len(rows))
                    + " ON CONFLICT (write_id) DO NOTHING",
                    values,
                )
                inserted += cursor.rowcount
        return inserted

    def _flushed(self, flush: asyncio.Future[int], batch: list[_Pending]) -> None:
        self._flush = None
        error: StorageError | None = None
        if flush.cancelled():
            error = StorageError("journal write failed: cancelled")
        elif (exc := flush.exception()) is not None:
            error = StorageError(f"journal write failed: {exc}")
        else:
            self._backlog += flush.result()
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
        if self._pending and not self._closed:  # aclose() writes what is left itself
            self._schedule_flush(asyncio.get_running_loop())

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
        """Wait until every submitted turn is in the history store or a dead letter.

        The journal forgets the stored turns with the drainer's next journal job (or at :meth:`aclose`).
        """
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
                    if progress < self._batch_size and self._drain_delay:
                        await asyncio.sleep(self._drain_delay)
                else:
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, self._backoff_max)
        finally:
            self._running = False
            self._notify()

    async def _drain_once(self) -> int | None:
        """Send one batch. None: nothing to send; n > 0: n entries handled; 0: the store failed (retry later)."""
        if not self._migrated:
            try:
                await self.store.migrate()
            except StorageError as exc:
                self._note_failure(exc)
                return 0
            self._migrated = True
        rows = await self._take_batch()
        if not rows:
            self._note_success()
            return None
        failure: BaseException | None = None
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
                await self._journal_call(partial(self._count_attempt, seq=seq, exc=exc))
                failure = exc
                break
            except StorageError as exc:
                failure = exc
                break
            except Exception as exc:  # a store bug must not kill the drainer or lose the entry
                log.exception("history store raised an unexpected error; will retry")
                failure = exc
                break
            self._applied.append(seq)
            self._backlog = max(0, self._backlog - 1)
            if self.on_stored is not None:
                self.on_stored(time.time() - turn.created_at.timestamp())
        self._notify()
        if failure is not None:
            self._note_failure(failure)
            return 0
        self._note_success()
        return len(rows)

    async def _take_batch(self) -> list[_Row]:
        """Delete the entries the store accepted and read the next batch, in one journal job."""
        applied, self._applied = self._applied, []
        try:
            rows = await self._journal_call(lambda c: self._delete_and_read(c, applied))
        except BaseException:
            self._applied = applied + self._applied  # deleted next time (or replayed: harmless)
            raise
        if len(rows) < self._batch_size:
            self._backlog = len(rows)  # exact: we hold every entry not yet stored
        return rows

    def _delete_and_read(self, conn: sqlite3.Connection, applied: list[int]) -> list[_Row]:
        if applied:
            self._delete(conn, applied)
        return conn.execute(
            "SELECT seq, payload, attempts FROM journal ORDER BY seq LIMIT ?", (self._batch_size,)
        ).fetchall()

    async def _journal_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._journal.call(fn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"journal failed: {exc}") from exc

    @staticmethod
    def _delete(conn: sqlite3.Connection, seqs: list[int]) -> None:
        """Delete stored entries without an fsync: a delete lost in a power cut replays stored turns (no-ops),
        and the next fsync'd write makes it durable anyway."""
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with transaction(conn):
                if seqs == list(range(seqs[0], seqs[0] + len(seqs))):
                    conn.execute(
                        "DELETE FROM journal WHERE seq BETWEEN ? AND ?", (seqs[0], seqs[-1])
                    )
                else:
                    conn.executemany("DELETE FROM journal WHERE seq = ?", [(s,) for s in seqs])
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def _count_attempt(self, conn: sqlite3.Connection, seq: int, exc: BaseException) -> None:
        with transaction(conn):
            conn.execute(
                "UPDATE journal SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (f"{type(exc).__name__}: {exc}"[:500], seq),
            )

    async def _bury(self, seq: int, error: str) -> None:
        def bury(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                moved = conn.execute(
                    "INSERT INTO dead_letters (seq, write_id, payload, submitted_at, failed_at, error)"
                    " SELECT seq, write_id, payload, submitted_at, ?, ? FROM journal WHERE seq = ?",
                    (time.time(), error[:500], seq),
                ).rowcount
                conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
            return int(moved)

        moved = await self._journal_call(bury)
        self._backlog = max(0, self._backlog - moved)
        self._dead += moved
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

    def _note_success(self) -> None:
        if self._last_error is not None:
            log.info("history store reachable again; draining %d journaled turns", self._backlog)
        self._last_error = None
        self._failing_since = None
        self._notify()
