"""Graceful drain of a real ``qwen-gateway serve --simulate`` process: SIGTERM during a voice turn.

With a long grace period the running turn completes and the process exits 0; with a short one the client gets
``audio_stream`` finished and an ``error`` ``shutting_down``, and the turn's (interrupted) history row is in the
SQLite history afterwards (the outbox was flushed before the exit). During the drain ``/health/ready`` is 503 while
``/health/live`` is 200, new HTTP requests and WebSocket handshakes are refused with 503 ``shutting_down``, and an
idle WebSocket connection is closed with 1001.

The simulator's speech is slowed down (``QG_SIMULATOR_TTS_RTF``) so that the turn is still speaking when the
signal arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.voice_ws.conftest import event_name, packets, wav_bytes

REPO = Path(__file__).resolve().parents[2]
KEY = "gk-drain-test"
AUTH = {"Authorization": f"Bearer {KEY}"}

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    """The environment without any gateway setting, plus ``extra``."""
    from dataclasses import fields

    from qwen_gateway.config import Settings

    names = {f.metadata.get("env") for f in fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("QG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    base: str
    data_dir: Path
    log: Path

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://", 1) + "/v1/chat/audio"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_exit(self, seconds: float) -> int:
        return await asyncio.to_thread(self.proc.wait, seconds)


@asynccontextmanager
async def gateway_process(tmp_path: Path, **env: str) -> AsyncIterator[Proc]:
    port = _free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "gateway.log"
    banner = tmp_path / "gateway.out"
    cmd = [
        sys.executable,
        "-m",
        "qwen_gateway",
        "serve",
        "--simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--api-key",
        KEY,
        "--env-file",
        "",
        "--no-uvloop",
    ]
    with log.open("wb") as err, banner.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220  (started once, before the loop has work)
            cmd, cwd=REPO, env=_env(**env), stdout=out, stderr=err
        )
    p = Proc(proc, f"http://127.0.0.1:{port}", data_dir, log)
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            for _ in range(600):
                if proc.poll() is not None:
                    pytest.fail(f"gateway exited at start:\n{p.log_text()}")
                try:
                    if (await http.get(f"{p.base}/health/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"gateway not ready:\n{p.log_text()}")
        yield p
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _recv(ws: ClientConnection, seconds: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(seconds):
        frame = await ws.recv()
    assert isinstance(frame, str)
    event: dict[str, Any] = json.loads(frame)
    return event


async def _until(ws: ClientConnection, name: str, got: list[str]) -> None:
    while True:
        event = await _recv(ws)
        got.append(event_name(event))
        if event_name(event) == name:
            return


async def _rest(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every event until the server closes; and the close code."""
    events: list[dict[str, Any]] = []
    try:
        while True:
            events.append(await _recv(ws, 60.0))
    except ConnectionClosed as exc:
        return events, exc.rcvd.code if exc.rcvd else None


async def _start_turn(p: Proc) -> tuple[ClientConnection, list[str]]:
    """A connection whose turn is speaking (its first audio arrived)."""
    ws = await connect(p.ws, additional_headers=AUTH, ping_interval=None, max_size=None)
    got: list[str] = []
    await _until(ws, "connected", got)
    for frame in packets(wav_bytes(1.0)):
        await ws.send(frame)
    await _until(ws, "audio_stream:data", got)
    return ws, got


async def _check_refusals(p: Proc) -> None:
    """During the drain: ready 503, live 200, /health 503 draining, new HTTP and WS refused with 503."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        ready = await http.get(f"{p.base}/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        live = await http.get(f"{p.base}/health/live")
        assert live.status_code == 200 and live.json()["draining"] is True
        health = await http.get(f"{p.base}/health")
        assert health.status_code == 503
        assert {"status", "timestamp"} <= set(health.json()) and health.json()[
            "status"
        ] == "draining"
        chat = await http.post(
            f"{p.base}/v1/chat/completions",
            headers=AUTH,
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 503
        assert chat.json()["error"]["code"] == "shutting_down"
    with pytest.raises(InvalidStatus) as refused:
        await connect(p.ws, additional_headers=AUTH, ping_interval=None)
    assert refused.value.response.status_code == 503


async def _wait_draining(p: Proc) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        for _ in range(200):
            if (await http.get(f"{p.base}/health/ready")).status_code == 503:
                return
            await asyncio.sleep(0.05)
    pytest.fail("/health/ready never turned 503")


async def test_sigterm_lets_the_running_turn_finish_and_exits_0(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, QG_SIMULATOR_TTS_RTF="0.3", QG_DRAIN_SECONDS="60") as p:
        idle = await connect(p.ws, additional_headers=AUTH, ping_interval=None)
        await _recv(idle)  # connected
        ws, got = await _start_turn(p)
        p.proc.send_signal(signal.SIGTERM)
        await _wait_draining(p)
        # The idle connection goes at once: a shutting_down error, then close 1001 (going away).
        idle_events, idle_code = await _rest(idle)
        assert [e["error"]["code"] for e in idle_events] == ["shutting_down"]
        assert idle_code == 1001
        await _check_refusals(p)
        events, code = await _rest(ws)
        names = got + [event_name(e) for e in events]
        # The turn finished in full, then the connection was closed with 1001.
        assert names[-4:] == [
            "audio_stream:finished",
            "chat_tts_complete",
            "audio_complete",
            "error",
        ]
        assert events[-1]["error"]["code"] == "shutting_down"
        (complete,) = [e for e in events if event_name(e) == "audio_complete"]
        assert complete["audio_complete"]["chat_success"] is True
        assert complete["audio_complete"]["tts_success"] is True
        assert code == 1001
        assert await p.wait_exit(30) == 0, p.log_text()
        assert _history(p.data_dir) == [("completed", None)]


async def test_short_grace_cuts_the_turn_short_and_flushes_the_outbox(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, QG_SIMULATOR_TTS_RTF="10", QG_DRAIN_SECONDS="1") as p:
        ws, _ = await _start_turn(p)
        p.proc.send_signal(signal.SIGTERM)
        await _wait_draining(p)
        await _check_refusals(p)
        events, code = await _rest(ws)
        names = [event_name(e) for e in events]
        assert "audio_complete" not in names
        assert names[-2:] == ["audio_stream:finished", "error"]
        assert events[-1]["error"]["code"] == "shutting_down"
        assert code == 1001
        assert await p.wait_exit(30) == 0, p.log_text()
        # The interrupted turn went through the journal into the history database before the exit.
        assert _history(p.data_dir) == [("interrupted", "shutting_down")]
        # stderr is not a terminal: every log line is a JSON object (QG_LOG_FORMAT=auto).
        records = [json.loads(line) for line in p.log_text().splitlines() if line.strip()]
        (finished,) = [r for r in records if r["msg"] == "drain finished"]
        assert finished["cut_short"] == 1 and finished["outbox_backlog"] == 0


def _history(data_dir: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(data_dir / "history.sqlite3") as conn:
        rows = conn.execute("SELECT status, error_code FROM turns ORDER BY id").fetchall()
    return [(r[0], r[1]) for r in rows]
