"""Fixtures of the operations tests: gateway processes started as ``qwen-gateway serve`` (the real CLI), and the
MariaDB server and fake OSS of the storage tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.storage.conftest import MariaDB, fake_oss, free_port, mariadb  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["GatewayProcess", "MariaDB", "distinct_free_ports", "free_port", "start_gateway"]


class GatewayProcess:
    """A ``qwen-gateway serve`` child process (its output goes to ``log``)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self._out = log.open("wb")
        full_env = {**os.environ, **env}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qwen_gateway", "serve", "--env-file", "", *argv],
            env=full_env,
            cwd=str(log.parent),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_healthy(self, timeout: float = 90.0) -> dict[str, object]:  # noqa: ASYNC109
        """Poll ``/health`` until it answers 200 (the process's output is shown when it never does)."""
        async with httpx.AsyncClient(timeout=2.0) as http:
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        assert self.proc.poll() is None, f"gateway exited:\n{self.output()}"
                        with contextlib.suppress(httpx.HTTPError):
                            resp = await http.get(f"{self.base_url}/health")
                            if resp.status_code == 200:
                                body: dict[str, object] = resp.json()
                                return body
                        await asyncio.sleep(0.2)
            except TimeoutError:
                raise AssertionError(f"gateway never became healthy:\n{self.output()}") from None

    async def stop(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        """SIGTERM the process and wait for it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        finally:
            self.close()

    def close(self) -> None:
        """Kill what is left of the process group (after a failed test) and close the log."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._out.close()


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different loopback ports nobody listens on. Each probe socket is held until all are picked:
    ports picked one after another may repeat while the first process has not bound its port yet."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def start_gateway(
    tmp_path: Path, name: str, env: dict[str, str], *argv: str, port: int | None = None
) -> Iterator[GatewayProcess]:
    port = port or free_port()
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    gw = GatewayProcess(
        ["--port", str(port), *argv], {"QG_HOST": "127.0.0.1", **env}, folder / "out.log", port
    )
    try:
        yield gw
    finally:
        gw.close()
