"""The outbox's throughput paths: journal writes grouped while one is in flight (and across ``commit_delay``),
drains in batches with the journal tidied by the next job, and what a crash between the two leaves behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from qwen_gateway.storage import HistoryStore, Outbox, SQLiteHistoryStore, TurnRecord
from qwen_gateway.storage.history import LEGACY_OWNER

from .test_outbox import GatedStore, journal_rows

DRAINER = Path(__file__).with_name("journal_drainer.py")


def turn(conversation_id: str, n: int) -> TurnRecord:
    return TurnRecord.new(
        conversation_id=conversation_id,
        channel="chat",
        model="qwen-plus",
        user_content=f"问题 {n}",
        assistant_content=f"answer {n}",
    )


def conv() -> str:
    return f"batch-{uuid.uuid4().hex[:10]}"


async def test_commit_delay_holds_turns_for_one_write_and_close_writes_them(
    tmp_path: Path,
) -> None:
    store = SQLiteHistoryStore(tmp_path / "history.sqlite3")
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, store, commit_delay=600)
    await outbox.open()  # no drainer
    c = conv()
    records = [turn(c, n) for n in range(5)]
    try:
        futures = [outbox.submit_nowait(r) for r in records]
        for _ in range(5):
            await asyncio.sleep(0)
        assert journal_rows(path) == [] and not any(f.done() for f in futures)
        assert outbox.backlog() == 5  # submitted, not yet written: still counted
    finally:
        await outbox.aclose()  # writes what is pending without waiting for the delay
        await store.aclose()
    assert all(f.done() and f.exception() is None for f in futures)
    assert [w for _, w in journal_rows(path)] == [r.write_id for r in records]


async def test_submit_never_waits_for_commit_delay_and_takes_pending_turns_along(
    tmp_path: Path,
) -> None:
    store = SQLiteHistoryStore(tmp_path / "history.sqlite3")
    path = tmp_path / "journal.sqlite3"
    outbox = Outbox(path, store, commit_delay=600)
    await outbox.open()
    c = conv()
    queued = [turn(c, n) for n in range(600)]
    extra = turn(c, 600)
    try:
        futures = [outbox.submit_nowait(r) for r in queued]
        outbox.submit_nowait(queued[5])  # a duplicate in the same write: stored once
        await outbox.submit(extra)  # at once, although the queued turns could still wait
        assert all(f.done() and f.exception() is None for f in futures)
        assert [w for _, w in journal_rows(path)] == [r.write_id for r in [*queued, extra]]
        assert outbox.backlog() == 601
    finally:
        await outbox.aclose()
        await store.aclose()


async def test_a_short_commit_delay_still_returns_durable_and_in_order(
    history: HistoryStore, tmp_path: Path
) -> None:
    c = conv()
    records = [turn(c, n) for n in range(30)]
    path = tmp_path / "journal.sqlite3"
    async with Outbox(path, history, commit_delay=0.005, drain_delay=0.005) as outbox:
        await asyncio.gather(*(outbox.submit(r) for r in records[:20]))
        for r in records[20:]:
            await outbox.submit(r)
            # durable on return: still in the journal, or already stored (entries leave the journal only then)
            in_journal = r.write_id in {w for _, w in journal_rows(path)}
            assert in_journal or r.write_id in {
                t.write_id for t in await history.conversation(c, owner=LEGACY_OWNER)
            }
        await outbox.drained()
    assert await history.conversation(c, owner=LEGACY_OWNER) == records
    assert journal_rows(path) == []


async def test_turns_written_during_a_drain_are_all_moved_in_order(
    history: HistoryStore, tmp_path: Path
) -> None:
    """Writers and the drainer overlap: a write lands while a batch is being stored; nothing is lost or doubled."""
    c = conv()
    records = [turn(c, n) for n in range(150)]
    path = tmp_path / "journal.sqlite3"
    async with Outbox(path, history, batch_size=16, drain_delay=0.001) as outbox:
        for start in range(0, 150, 10):
            await asyncio.gather(*(outbox.submit(r) for r in records[start : start + 10]))
            await asyncio.sleep(0)
        await outbox.drained()
        assert outbox.status().healthy and outbox.backlog() == 0
    assert await history.conversation(c, owner=LEGACY_OWNER) == records
    assert journal_rows(path) == []


async def test_entries_stored_before_a_failure_leave_the_journal_once_it_recovers(
    tmp_path: Path,
) -> None:
    store = SQLiteHistoryStore(tmp_path / "history.sqlite3")
    await store.migrate()
    gated = GatedStore(store)
    path = tmp_path / "journal.sqlite3"
    c = conv()
    records = [turn(c, n) for n in range(6)]
    try:
        async with Outbox(
            path, gated, backoff_initial=0.01, backoff_max=0.02, drain_delay=0
        ) as outbox:
            for r in records[:3]:
                await outbox.submit(r)
            await outbox.drained()
            gated.available = False
            for r in records[3:]:
                await outbox.submit(r)
            await gated.failed.wait()
            assert outbox.backlog() == 3
            gated.available = True
            await outbox.drained()
        assert await store.conversation(c, owner=LEGACY_OWNER) == records
        assert journal_rows(path) == []
    finally:
        await store.aclose()


async def test_a_crash_after_storing_but_before_tidying_replays_each_turn_once(
    tmp_path: Path,
) -> None:
    """The drainer deletes stored entries with its next journal job; killed before that job, the next start finds
    them again and stores each turn once (write ids make the replay a no-op)."""
    journal = tmp_path / "journal.sqlite3"
    history_path = tmp_path / "history.sqlite3"
    c = conv()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, str(DRAINER), str(journal), str(history_path), c, "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.to_thread(proc.stdout.readline)).decode().strip()
        assert line == "drained"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    left = journal_rows(journal)
    assert len(left) == 12  # stored, not yet deleted from the journal

    store = SQLiteHistoryStore(history_path)
    try:
        assert len(await store.conversation(c, owner=LEGACY_OWNER)) == 12
        async with Outbox(journal, store, backoff_initial=0.01) as outbox:
            assert outbox.backlog() == 12
            await outbox.drained()
        turns = await store.conversation(c, owner=LEGACY_OWNER)
    finally:
        await store.aclose()
    assert [t.user_content for t in turns] == [f"question {n}" for n in range(12)]
    assert journal_rows(journal) == []
    with sqlite3.connect(history_path) as db:
        [(count,)] = db.execute("SELECT COUNT(*) FROM turns WHERE conversation_id = ?", (c,))
    assert count == 12


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"drain_delay": -1.0}, {"commit_delay": -0.1}]
)
def test_bad_tuning_is_refused(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path / "journal.sqlite3", SQLiteHistoryStore(tmp_path / "h.sqlite3"), **kwargs)  # type: ignore[arg-type]
