"""``qwen-gateway serve --workers 2``: one address, two processes, one supervisor.

Keyless (each worker runs its own in-process simulator) over one data dir: both workers share the SQLite history
and the journal. A chat through each worker lands in the one history; a killed worker is reported and
restarted; SIGTERM stops everything with exit status 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from .conftest import GatewayProcess, start_gateway


async def processes_seen(gw: GatewayProcess, want: int, attempts: int = 400) -> dict[int, int]:
    """worker -> pid of the processes answering ``/health`` on fresh connections, until ``want`` are seen."""
    seen: dict[int, int] = {}
    for _ in range(attempts):
        async with httpx.AsyncClient(timeout=10.0) as http:  # a new connection each time
            body: dict[str, Any] = (await http.get(f"{gw.base_url}/health")).json()
        seen[body["process"]["worker"]] = body["process"]["pid"]
        if len(seen) >= want:
            break
    return seen


async def chat_until_worker(
    gw: GatewayProcess, worker: int, conversation: str, question: str
) -> None:
    """Send chat turns on fresh connections until one is answered by ``worker`` (the others are journaled too)."""
    for _ in range(400):
        async with httpx.AsyncClient(timeout=30.0) as http:
            health = (await http.get(f"{gw.base_url}/health")).json()
            if health["process"]["worker"] != worker:
                continue
            resp = await http.post(
                f"{gw.base_url}/v1/chat/completions",
                headers={"X-Conversation-Id": conversation},
                json={"messages": [{"role": "user", "content": question}]},
            )
            assert resp.status_code == 200, resp.text
            return
    raise AssertionError(f"worker {worker} never answered")


def user_questions(data: Path, conversation: str) -> list[str]:
    path = data / "history.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' ORDER BY id",
            (conversation,),
        ).fetchall()
    return [content for (content,) in rows]


async def test_two_workers_answer_restart_and_stop_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"QG_DATA_DIR": str(data), "QG_SIMULATOR_TTS_RTF": "0", "QG_LOG_LEVEL": "WARNING"}
    with start_gateway(tmp_path, "workers", env, "--workers", "2") as gw:
        health = await gw.wait_healthy()
        assert health["upstream"] == "simulated"
        pids = await processes_seen(gw, 2)
        assert sorted(pids) == [0, 1], pids
        assert len(set(pids.values())) == 2 and gw.proc.pid not in pids.values()
        # Worker 0 printed the banner before it answered (the others print one line each).
        assert (
            f"workers  : 2 processes on this port, under a supervisor (pid {gw.proc.pid})"
            in gw.output()
        )

        # Both workers write the one history (shared SQLite file and journal in the one data dir).
        for worker in (0, 1):
            await chat_until_worker(gw, worker, "conv-workers-1", f"question via worker {worker}")

        async with asyncio.timeout(
            30
        ):  # each worker's drainer moves the shared journal into the history
            while len(user_questions(data, "conv-workers-1")) < 2:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.1)
        assert sorted(user_questions(data, "conv-workers-1")) == [
            "question via worker 0",
            "question via worker 1",
        ]

        # /metrics sums every worker (the supervisor gave them one multiprocess directory): both chat
        # completions are counted whichever worker answers the scrape.
        written = {f.stem.rsplit("_", 1)[-1] for f in (data / "metrics").glob("counter_*.db")}
        assert {str(pid) for pid in pids.values()} <= written, written
        async with httpx.AsyncClient(timeout=10.0) as http:
            text = (await http.get(f"{gw.base_url}/metrics")).text
        chats = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("qg_http_requests_total{")
            and 'route="/v1/chat/completions"' in line
            and 'status="200"' in line
        ]
        assert sum(chats) >= 2, text
        # Each worker installed the garbage collector's policy (qwen_gateway.collector): start-up objects frozen.
        frozen = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("qg_gc_frozen_objects ")
        ]
        assert frozen and frozen[0] > 10_000, text

        # A worker that dies is reported and replaced; the address keeps answering meanwhile.
        os.kill(pids[1], signal.SIGKILL)
        async with asyncio.timeout(60):
            while (now := await processes_seen(gw, 2)).get(1) in (None, pids[1]):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        assert now[0] == pids[0]
        assert f"worker 1 (pid {pids[1]}) ended: killed by SIGKILL" in gw.output()

        code = await gw.stop()
        assert code == 0, gw.output()
        assert "2 workers stopped" in gw.output()
        for pid in (*pids.values(), now[1]):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"worker pid {pid} still alive")
    assert "Traceback" not in gw.output(), gw.output()
