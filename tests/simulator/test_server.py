"""The simulator as a server: addresses, lifecycle, shutdown, records of connections, isolation, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets

import qwen_gateway.simulator as simulator_pkg
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig
from qwen_gateway.simulator.cli import run_cli

from .conftest import AUTH, chat_body, connect, recv_json

ROOT = Path(__file__).resolve().parents[2]


async def test_env_and_addresses(sim: Simulator, http: httpx.AsyncClient) -> None:
    assert sim.port > 0
    assert sim.base_url == f"http://127.0.0.1:{sim.port}"
    assert sim.env == {
        "QWEN_API_CHAT_URL": f"http://127.0.0.1:{sim.port}/compatible-mode/v1/chat/completions",
        "REAL_TIME_AUDIO_URL": f"ws://127.0.0.1:{sim.port}/api-ws/v1/realtime?model=qwen-tts-realtime",
        "DASHSCOPE_WEBSOCKET_BASE_URL": f"ws://127.0.0.1:{sim.port}/api-ws/v1/inference",
        "DASHSCOPE_HTTP_BASE_URL": f"http://127.0.0.1:{sim.port}/api/v1",
    }
    health = await http.get(f"{sim.base_url}/health")
    assert health.json() == {"status": "ok", "simulator": True}
    missing = await http.get(f"{sim.base_url}/nope")
    assert missing.status_code == 404
    wrong_method = await http.get(sim.env["QWEN_API_CHAT_URL"])
    assert wrong_method.status_code == 405
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(f"ws://127.0.0.1:{sim.port}/elsewhere")
    assert info.value.response.status_code == 404


async def test_two_simulators_side_by_side() -> None:
    async with Simulator() as a, Simulator() as b, httpx.AsyncClient() as http:
        assert a.port != b.port
        a.set_reply("from a")
        body = (await http.post(b.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)).json()
        assert body["choices"][0]["message"]["content"] != "from a"
        assert len(a.log.chat_requests) == 0 and len(b.log.chat_requests) == 1


async def test_start_stop_and_shutdown_closes_everything() -> None:
    sim = Simulator()
    await sim.start()
    with pytest.raises(RuntimeError):
        await sim.start()
    tts = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(tts)
    inference = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    sim.faults.add(Fault.stall(after_chunks=1, seconds=None))
    http = httpx.AsyncClient(timeout=10)
    got_first = asyncio.Event()

    async def chat() -> None:
        async with http.stream(
            "POST", sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
        ) as response:
            async for _ in response.aiter_lines():
                got_first.set()

    task = asyncio.create_task(chat())
    async with asyncio.timeout(5):
        await got_first.wait()
    await sim.stop()
    await sim.stop()  # idempotent
    for ws in (tts, inference):
        with pytest.raises(websockets.ConnectionClosed) as info:
            await recv_json(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    with pytest.raises(httpx.HTTPError):
        await task
    await http.aclose()
    assert sorted(c.kind for c in sim.log.closes) == ["chat", "inference", "tts"]
    assert {c.close_reason for c in sim.log.closes} == {"shutdown"}
    assert sim.log.open_connections() == []


async def test_records_and_wait_closed(sim: Simulator) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await sim.log.wait_for(lambda: sim.log.connections, timeout=5)
    assert [c.kind for c in sim.log.open_connections()] == ["inference"]
    with pytest.raises(TimeoutError):
        await sim.wait_closed("inference", timeout=0.05)
    await sim.wait_closed("tts", timeout=0.05)  # none of that kind is open
    await ws.close()
    await sim.wait_closed(timeout=5)
    (conn,) = sim.log.closes
    assert conn.close_reason == "client" and conn.closed_at is not None
    assert conn.headers["authorization"] == AUTH["Authorization"]
    assert sim.log.connection_counts() == {"inference": 1}
    sim.reset()
    assert sim.log.connections == [] and sim.log.closes == []


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(ttft=-1)
    with pytest.raises(ValueError):
        SimulatorConfig(ws_reject_status=500)
    with pytest.raises(ValueError):
        SimulatorConfig(api_key="")
    assert SimulatorConfig().key_ok("sk-1") and not SimulatorConfig().key_ok("sk-")
    assert not SimulatorConfig(api_key="sk-a").key_ok("sk-b")


def test_exports_are_complete() -> None:
    public = {n for n in dir(simulator_pkg) if not n.startswith("_")}
    modules = {
        "app", "asgi", "audio", "chat", "cli", "config", "corpus", "cosyvoice", "errors", "faults",
        "file_asr", "handshake", "http_tts", "inference", "models", "omni", "paraformer", "realtime",
        "realtime_asr", "realtime_input", "realtime_route", "records", "server", "state",
        "taskproto", "transcripts", "wsconn",
    }  # fmt: skip
    assert public - modules == set(simulator_pkg.__all__)
    for name in ("Simulator", "SimulatorConfig", "Fault"):
        assert name in simulator_pkg.__doc__  # type: ignore[operator]


def test_imports_nothing_else_of_qwen_gateway() -> None:
    code = (
        "import sys, qwen_gateway.simulator, qwen_gateway.simulator.cli\n"
        "bad = sorted(m for m in sys.modules if m.startswith('qwen_gateway') and m != 'qwen_gateway'"
        " and not m.startswith('qwen_gateway.simulator'))\n"
        "assert not bad, bad\n"
        "assert 'quart' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
    for path in (ROOT / "qwen_gateway" / "simulator").glob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import qwen_gateway", "from qwen_gateway")):
                assert stripped.startswith(
                    ("from qwen_gateway.simulator", "import qwen_gateway.simulator")
                ), (
                    path.name,
                    line,
                )


def test_cli_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--fault", "explode"]) == 2
    assert "explode" in capsys.readouterr().err
    assert run_cli(["--ttft", "-1"]) == 2
    assert run_cli(["--port", "notanumber"]) == 2
    assert run_cli(["--help"]) == 0


async def test_cli_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qwen_gateway.simulator",
        "--port",
        "0",
        "--api-key",
        "sk-cli",
        "--fault",
        "http_error:status=429,code=limit_requests,times=1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        env = {}
        async with asyncio.timeout(30):
            while len(env) < 4:
                line = (await process.stdout.readline()).decode().strip()
                assert line, "the simulator exited before printing its variables"
                name, _, value = line.partition("=")
                env[name] = value
        assert set(env) == {
            "QWEN_API_CHAT_URL",
            "REAL_TIME_AUDIO_URL",
            "DASHSCOPE_WEBSOCKET_BASE_URL",
            "DASHSCOPE_HTTP_BASE_URL",
        }
        async with httpx.AsyncClient(timeout=10) as http:
            url = env["QWEN_API_CHAT_URL"]
            headers = {"Authorization": "Bearer sk-cli"}
            assert (await http.post(url, json=chat_body(), headers=headers)).status_code == 429
            assert (await http.post(url, json=chat_body(), headers=headers)).status_code == 200
            assert (await http.post(url, json=chat_body(), headers=AUTH)).status_code == 401
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_records_are_bounded(http: httpx.AsyncClient) -> None:
    async with Simulator(SimulatorConfig(max_records=3)) as sim:
        for i in range(5):
            await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(f"q{i}"), headers=AUTH)
        assert [r.messages[0]["content"] for r in sim.log.chat_requests] == ["q2", "q3", "q4"]
        assert len(sim.log.connections) == 3 and len(sim.log.closes) == 3
