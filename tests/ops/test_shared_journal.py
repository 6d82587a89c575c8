"""Two outboxes on one journal file, as two workers sharing one data dir: every turn is stored once, in order.

Each outbox has its own journal connection and its own history store connection (on one SQLite history here, on
MariaDB in test_two_processes), as two processes would; both drainers run at once over the same entries.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from qwen_gateway.storage import Outbox, SQLiteHistoryStore, TurnRecord

TURNS = 60


def turn(n: int) -> TurnRecord:
    return TurnRecord.new(
        conversation_id="conv-shared-journal",
        channel="chat" if n % 2 else "audio",
        model="qwen-plus",
        user_content=f"问题 {n}",
        assistant_content=f"answer {n}",
    )


async def test_two_drainers_on_one_journal_store_each_turn_once_in_order(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    history = tmp_path / "history.sqlite3"
    stores = [SQLiteHistoryStore(history), SQLiteHistoryStore(history)]
    await stores[0].migrate()
    await stores[1].migrate()
    outboxes = [Outbox(journal, s, drain_delay=0, commit_delay=0) for s in stores]
    try:
        for o in outboxes:
            await o.start()
        for n in range(TURNS):  # alternately through each, each durable before the next
            await outboxes[n % 2].submit(turn(n))
        async with asyncio.timeout(60):
            while len(await stores[0].conversation("conv-shared-journal", owner="legacy")) < TURNS:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        turns = await stores[1].conversation("conv-shared-journal", owner="legacy")
    finally:
        for o in outboxes:
            await o.aclose()
        for s in stores:
            await s.aclose()
    assert [t.user_content for t in turns] == [f"问题 {n}" for n in range(TURNS)]
    with sqlite3.connect(history) as db:
        [(rows,)] = db.execute("SELECT COUNT(*) FROM turns")
        [(messages,)] = db.execute("SELECT COUNT(*) FROM messages")
    assert (rows, messages) == (TURNS, 2 * TURNS)
    with sqlite3.connect(journal) as db:
        [(left,)] = db.execute("SELECT COUNT(*) FROM journal")
    assert left == 0
