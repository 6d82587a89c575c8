"""Fault tests: the database away for a run of turns, the gateway killed with turns still journaled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from qwen_gateway.storage import HistoryStore, Outbox, TurnRecord
from qwen_gateway.storage.history import LEGACY_OWNER
from tests.storage.conftest import MariaDB, TcpProxy, free_port

WRITER = Path(__file__).with_name("journal_writer.py")


def turn(conversation_id: str, n: int) -> TurnRecord:
    return TurnRecord.new(
        conversation_id=conversation_id,
        channel="audio",
        model="qwen-plus",
        user_content=f"第{n}个问题",
        assistant_content=f"answer {n} 🎧",
        total_ms=1000 + n,
    )


async def test_mariadb_down_for_100_turns_then_back(
    mariadb: MariaDB, mariadb_database: str, mariadb_proxy: TcpProxy, tmp_path: Path
) -> None:
    """100 turns while the database port is closed: none is held up, all arrive afterwards, in order, once."""
    c = f"down-{uuid.uuid4().hex[:10]}"
    store = mariadb.store(
        mariadb_database, port=mariadb_proxy.port, connect_timeout=1, query_timeout=3
    )
    before = [turn(c, n) for n in range(10)]
    during = [turn(c, n) for n in range(10, 110)]
    try:
        async with Outbox(
            tmp_path / "journal.sqlite3", store, backoff_initial=0.02, backoff_max=0.1
        ) as outbox:
            for record in before:
                await outbox.submit(record)
            await outbox.drained()

            await (
                mariadb_proxy.close()
            )  # the database goes away: port refuses, live connections cut
            for record in during:
                await outbox.submit(record)  # returns although the database is unreachable
            status = await outbox.wait_until(lambda s: not s.healthy)  # it tried and failed
            assert "HistoryUnavailable" in (status.last_error or "")
            assert outbox.backlog() == 100

            await mariadb_proxy.open()  # back on the same port
            await outbox.drained()
            assert outbox.status().healthy
    finally:
        await store.aclose()

    rows = await mariadb.query(
        mariadb_database,
        "SELECT write_id FROM turns WHERE conversation_id = %s ORDER BY id",
        c,
    )
    assert [r[0] for r in rows] == [
        r.write_id for r in before + during
    ]  # all, in order, none twice
    [(messages,)] = await mariadb.query(
        mariadb_database, "SELECT COUNT(*) FROM messages WHERE conversation_id = %s", c
    )
    assert messages == 220


async def test_gateway_killed_with_turns_in_the_journal(
    history: HistoryStore, tmp_path: Path
) -> None:
    """A process journals turns with the database unreachable and is SIGKILLed mid-run; a fresh Outbox on the
    same journal delivers every turn whose submit had returned, in order, once."""
    journal = tmp_path / "journal.sqlite3"
    c = f"killed-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    # plain Popen (the reads run in a worker thread): independent of asyncio's child watcher
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, str(WRITER), str(journal), str(free_port()), c, "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    confirmed: list[str] = []
    try:
        assert proc.stdout is not None
        while len(confirmed) < 40:  # kill it while it is still submitting
            line = (await asyncio.to_thread(proc.stdout.readline)).decode().strip()
            assert line, "journal writer exited early"
            confirmed.append(line)
        proc.send_signal(signal.SIGKILL)
        rest = (await asyncio.to_thread(proc.stdout.read)).decode().split()
    finally:
        if proc.poll() is None:
            proc.kill()
        await asyncio.to_thread(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    confirmed += [w for w in rest if w != "done"]

    async with Outbox(journal, history, backoff_initial=0.01) as outbox:
        assert outbox.backlog() >= len(confirmed)
        await outbox.drained()
    stored = [t.write_id for t in await history.conversation(c, owner=LEGACY_OWNER)]
    assert stored[: len(confirmed)] == confirmed  # every confirmed turn, in submit order
    assert len(stored) == len(set(stored))  # none twice
    assert "done" not in rest  # it was killed mid-run
    first = (await history.conversation(c, owner=LEGACY_OWNER))[0]
    assert first.user_content == "question 0 你好" and first.assistant_content == "answer 0 😀"
