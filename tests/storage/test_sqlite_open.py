"""Opening one new SQLite history file from several stores (processes) at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qwen_gateway.storage.sqlite_history import SQLiteHistoryStore


async def test_stores_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    """Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once
    (without waiting out the busy timeout) to a connection that asks while another holds it: the store retries.
    Before the retry about 3% of such opens failed; this opens 4 x 100 times."""
    failures: list[BaseException] = []
    for round_ in range(100):
        path = tmp_path / f"fresh-{round_}" / "history.sqlite3"
        stores = [SQLiteHistoryStore(path) for _ in range(4)]
        try:
            results = await asyncio.gather(*(s.migrate() for s in stores), return_exceptions=True)
            failures += [r for r in results if isinstance(r, BaseException)]
        finally:
            for store in stores:
                await store.aclose()
    assert failures == []
