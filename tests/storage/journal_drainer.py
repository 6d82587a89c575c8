"""A gateway stand-in for the crash test of batched drains: stores turns, then dies before tidying the journal.

Run as ``python journal_drainer.py <journal> <history.sqlite3> <conversation_id> <count>``. It submits ``count``
turns at once through an Outbox whose drainer waits a long ``drain_delay`` after a batch (so the entries it stored
stay in the journal, to be deleted by its next journal job), waits until every turn is in the history store,
prints ``drained`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from qwen_gateway.storage import Outbox, SQLiteHistoryStore, TurnRecord


async def main(journal: Path, history: Path, conversation_id: str, count: int) -> None:
    store = SQLiteHistoryStore(history)
    await store.migrate()
    records = [
        TurnRecord.new(
            conversation_id=conversation_id,
            channel="chat",
            model="qwen-plus",
            user_content=f"question {n}",
            assistant_content=f"answer {n}",
        )
        for n in range(count)
    ]
    # One journal write (commit_delay) and so one batch for the drainer, which then waits drain_delay.
    async with Outbox(
        journal, store, commit_delay=0.05, drain_delay=600, batch_size=count + 1
    ) as outbox:
        await asyncio.gather(*(outbox.submit(r) for r in records))
        await outbox.drained()
        print("drained", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    journal_arg, history_arg, conversation_arg, count_arg = sys.argv[1:5]
    asyncio.run(main(Path(journal_arg), Path(history_arg), conversation_arg, int(count_arg)))
