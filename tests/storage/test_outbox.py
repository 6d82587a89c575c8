"""The outbox: durable before submit returns, drained in order, idempotent replay, backoff, dead letters."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from qwen_gateway.errors import StorageError
from qwen_gateway.storage import (
    HistoryRejected,
    HistoryStore,
    HistoryUnavailable,
    Message,
    Outbox,
    SQLiteHistoryStore,
    TurnRecord,
)
from qwen_gateway.storage.history import LEGACY_OWNER


def turn(conversation_id: str, n: int = 0, **fields: object) -> TurnRecord:
    values: dict[str, object] = {
        "conversation_id": conversation_id,
        "channel": "audio",
        "model": "qwen-plus",
        "user_content": f"q{n}",
        "assistant_content": f"a{n}",
    }
    values.update(fields)
    return TurnRecord.new(**values)


def conv() -> str:
    return f"outbox-{uuid.uuid4().hex[:10]}"


class GatedStore:
    """A real store behind a switch: while ``available`` is False every call fails as a dead database does.

    ``reject`` lists write ids the database refuses (a data error).
    """

    def __init__(self, inner: HistoryStore) -> None:
        self.inner = inner
        self.available = True
        self.reject: set[str] = set()
        self.attempts = 0
        self.failures = 0
        self.failed = asyncio.Event()

    @property
    def engine(self) -> str:
        return self.inner.engine

    def _gate(self) -> None:
        self.attempts += 1
        if not self.available:
            self.failures += 1
            self.failed.set()
            raise HistoryUnavailable("database is down (test)")

    async def migrate(self) -> None:
        self._gate()
        await self.inner.migrate()

    async def append_turn(self, turn: TurnRecord) -> bool:
        self._gate()
        if turn.write_id in self.reject:
            self.failed.set()
            raise HistoryRejected("refused (test)")
        return await self.inner.append_turn(turn)

    async def recent_messages(
        self, conversation_id: str, limit: int, *, owner: str
    ) -> list[Message]:
        self._gate()
        return await self.inner.recent_messages(conversation_id, limit, owner=owner)

    async def conversation(self, conversation_id: str, *, owner: str) -> list[TurnRecord]:
        return await self.inner.conversation(conversation_id, owner=owner)

    async def delete_conversation(self, conversation_id: str, *, owner: str) -> bool:
        self._gate()
        return await self.inner.delete_conversation(conversation_id, owner=owner)

    async def ping(self) -> None:
        self._gate()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> SQLiteHistoryStore:
    store = SQLiteHistoryStore(tmp_path / "history.sqlite3")
    await store.migrate()
    yield store  # type: ignore[misc]
    await store.aclose()


def journal_rows(path: Path) -> list[tuple[int, str]]:
    """The journal as another process would read it."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, write_id FROM journal ORDER BY seq").fetchall()


async def test_turns_reach_the_store_in_order(history: HistoryStore, tmp_path: Path) -> None:
    c = conv()
    records = [turn(c, n) for n in range(25)]
    async with Outbox(tmp_path / "journal.sqlite3", history, backoff_initial=0.01) as outbox:
        for record in records:
            await outbox.submit(record)
        await outbox.drained()
        assert outbox.backlog() == 0
        assert outbox.status().healthy
    assert await history.conversation(c, owner=LEGACY_OWNER) == records


async def test_submit_is_on_disk_when_it_returns(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, sqlite_store)
    await outbox.open()  # no drainer: entries stay in the journal
    try:
        record = turn(conv())
        await outbox.submit(record)
        assert journal_rows(path) == [(1, record.write_id)]
        assert outbox.backlog() == 1
    finally:
        await outbox.aclose()


async def test_concurrent_submits_are_group_committed_and_all_kept(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    c = conv()
    records = [turn(c, n) for n in range(60)]
    async with Outbox(path, sqlite_store) as outbox:
        await asyncio.gather(*(outbox.submit(r) for r in records))
        await outbox.drained()
    stored = await sqlite_store.conversation(c, owner=LEGACY_OWNER)
    assert sorted(t.write_id for t in stored) == sorted(r.write_id for r in records)
    # gather starts the submits in list order, and the journal keeps that order
    assert [t.write_id for t in stored] == [r.write_id for r in records]


async def test_the_journal_survives_a_restart_and_is_drained_next_time(
    history: HistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    c = conv()
    records = [turn(c, n) for n in range(7)]
    first = Outbox(path, history)
    await first.open()
    for record in records:
        await first.submit(record)
    await first.aclose()
    assert await history.conversation(c, owner=LEGACY_OWNER) == []
    async with Outbox(path, history) as second:
        assert second.backlog() == 7
        await second.drained()
    assert await history.conversation(c, owner=LEGACY_OWNER) == records
    assert journal_rows(path) == []


async def test_replaying_an_applied_write_stores_it_once(
    history: HistoryStore, tmp_path: Path
) -> None:
    """A crash after the database accepted a turn but before the journal forgot it: the replay is a no-op."""
    c = conv()
    applied = turn(c, 1)
    later = turn(c, 2)
    assert await history.append_turn(applied)  # stored, but the journal still holds it
    async with Outbox(tmp_path / "journal.sqlite3", history) as outbox:
        await outbox.submit(applied)
        await outbox.submit(later)
        await outbox.submit(applied)  # a duplicate submit is journaled once
        await outbox.drained()
    assert await history.conversation(c, owner=LEGACY_OWNER) == [applied, later]
    assert len(await history.recent_messages(c, 10, owner=LEGACY_OWNER)) == 4


async def test_a_down_database_holds_nothing_up_and_loses_nothing(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    gated = GatedStore(sqlite_store)
    gated.available = False
    c = conv()
    records = [turn(c, n) for n in range(20)]
    async with Outbox(
        tmp_path / "journal.sqlite3", gated, backoff_initial=0.01, backoff_max=0.05
    ) as outbox:
        for record in records:
            await outbox.submit(record)
        await gated.failed.wait()
        while gated.failures < 3:  # it keeps trying, with backoff
            gated.failed.clear()
            await gated.failed.wait()
        status = outbox.status()
        assert not status.healthy and status.draining
        assert "HistoryUnavailable" in (status.last_error or "")
        assert status.failing_since is not None
        assert outbox.backlog() == 20
        gated.available = True
        await outbox.drained()
        assert outbox.status().healthy and outbox.status().last_error is None
    assert await sqlite_store.conversation(c, owner=LEGACY_OWNER) == records


async def test_a_refused_record_becomes_a_dead_letter_and_does_not_block_the_rest(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    gated = GatedStore(sqlite_store)
    c = conv()
    records = [turn(c, n) for n in range(5)]
    gated.reject.add(records[2].write_id)
    path = tmp_path / "journal.sqlite3"
    async with Outbox(
        path, gated, backoff_initial=0.01, backoff_max=0.02, max_attempts=3
    ) as outbox:
        for record in records:
            await outbox.submit(record)
        await outbox.drained()
        assert outbox.dead_letters() == 1
        assert outbox.status().dead_letters == 1
    stored = await sqlite_store.conversation(c, owner=LEGACY_OWNER)
    assert stored == [records[0], records[1], records[3], records[4]]
    with sqlite3.connect(path) as db:
        [(write_id, error)] = db.execute("SELECT write_id, error FROM dead_letters").fetchall()
    assert write_id == records[2].write_id and "HistoryRejected" in error
    # and the count survives a restart
    reopened = Outbox(path, sqlite_store)
    await reopened.open()
    assert reopened.dead_letters() == 1
    await reopened.aclose()


async def test_the_drainer_migrates_a_database_that_was_down_at_start(tmp_path: Path) -> None:
    store = SQLiteHistoryStore(tmp_path / "history.sqlite3")  # never migrated
    gated = GatedStore(store)
    gated.available = False
    c = conv()
    async with Outbox(tmp_path / "journal.sqlite3", gated, backoff_initial=0.01) as outbox:
        await outbox.submit(turn(c))
        await gated.failed.wait()
        gated.available = True
        await outbox.drained()
    assert len(await store.conversation(c, owner=LEGACY_OWNER)) == 1
    await store.aclose()


async def test_submit_nowait_completes_when_durable(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, sqlite_store)
    await outbox.open()
    record = turn(conv())
    future = outbox.submit_nowait(record)
    await future
    assert journal_rows(path) == [(1, record.write_id)]
    # queued but never awaited: still written before the journal closes
    other = turn(conv())
    outbox.submit_nowait(other)
    await outbox.aclose()
    assert [w for _, w in journal_rows(path)] == [record.write_id, other.write_id]


async def test_invalid_records_and_closed_outboxes_are_refused(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, sqlite_store)
    with pytest.raises(RuntimeError):
        await outbox.submit(turn(conv()))
    await outbox.open()
    bad = TurnRecord(conversation_id="", channel="chat", model="m", user_content="x")
    with pytest.raises(ValueError, match="conversation_id"):
        await outbox.submit(bad)
    assert journal_rows(path) == []
    await outbox.aclose()
    with pytest.raises(RuntimeError):
        await outbox.submit(turn(conv()))


async def test_a_journal_that_cannot_be_written_raises(
    sqlite_store: SQLiteHistoryStore, tmp_path: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, sqlite_store, lock_timeout=0.2)
    await outbox.open()
    with sqlite3.connect(path) as db:  # another process holds the journal's write lock
        db.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="journal write failed"):
            await outbox.submit(turn(conv()))
        db.execute("ROLLBACK")
    await outbox.submit(turn(conv()))
    assert outbox.backlog() == 1
    await outbox.aclose()
