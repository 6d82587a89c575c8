"""A gateway stand-in for the crash test: journals turns while the history database is unreachable.

Run as ``python journal_writer.py <journal> <dead_port> <conversation_id> <count>``. It opens an Outbox in front of
a MySQL store pointed at a port nobody listens on (so nothing drains), submits ``count`` turns one after the
other and prints each write id once ``submit`` returned (the turn is on disk). Then it waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from qwen_gateway.storage import MySQLHistoryStore, Outbox, TurnRecord


async def main(journal: Path, dead_port: int, conversation_id: str, count: int) -> None:
    store = MySQLHistoryStore(
        host="127.0.0.1", port=dead_port, database="unreachable", connect_timeout=1
    )
    async with Outbox(journal, store, backoff_initial=0.05, backoff_max=0.2) as outbox:
        for n in range(count):
            record = TurnRecord.new(
                conversation_id=conversation_id,
                channel="audio",
                model="qwen-plus",
                user_content=f"question {n} 你好",
                assistant_content=f"answer {n} 😀",
            )
            await outbox.submit(record)
            print(record.write_id, flush=True)
        print("done", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    journal_arg, port_arg, conversation_arg, count_arg = sys.argv[1:5]
    asyncio.run(main(Path(journal_arg), int(port_arg), conversation_arg, int(count_arg)))
