"""Two ``qwen-gateway serve`` processes over one Redis: requests through both count together; Redis stopped
mid-test: both keep serving (in-process limits, ``/health`` degraded); Redis back: the shared limits resume."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx

from .conftest import ThrowawayRedis, free_port

KEY = "gk-processes-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def serve(tmp: Path, redis_url: str, **env: str) -> AsyncIterator[str]:
    """A gateway process (simulated upstream) on a free port; its base URL once /health answers."""
    port = free_port()
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "QG_PORT": str(port),
        "QG_DATA_DIR": str(tmp),
        "QG_API_KEYS": KEY,
        "QG_OWNER_SECRET": "s" * 40,
        "QG_REDIS_URL": redis_url,
        "QG_REDIS_PREFIX": "procs:",
        "QG_SIMULATOR_TTS_RTF": "0",
        "QG_LOG_LEVEL": "WARNING",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qwen_gateway", "serve", "--simulate", "--no-uvloop",
        env=full, cwd=tmp.parent, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:
            for _ in range(300):
                try:
                    if (await http.get("/health")).status_code in (200, 503):
                        break
                except httpx.TransportError:
                    pass
                assert proc.returncode is None, "the gateway process exited at start"
                await asyncio.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        async with asyncio.timeout(20):
            await proc.wait()


async def _status(http: httpx.AsyncClient) -> int:
    resp = await http.post(
        "/v1/chat/completions", headers=AUTH, json={"messages": [{"role": "user", "content": "hi"}]}
    )
    if resp.status_code == 429:
        assert resp.json()["error"]["code"] == "rate_limit_exceeded" and resp.headers["Retry-After"]
    return resp.status_code


async def test_two_processes_share_limits_and_survive_redis_restarts(
    tmp_path: Path, throwaway_redis: ThrowawayRedis
) -> None:
    async with AsyncExitStack() as stack:
        a_url, b_url = await asyncio.gather(
            stack.enter_async_context(serve(tmp_path / "a", throwaway_redis.url, QG_LIMIT_RPM="4")),
            stack.enter_async_context(serve(tmp_path / "b", throwaway_redis.url, QG_LIMIT_RPM="4")),
        )
        a = await stack.enter_async_context(httpx.AsyncClient(base_url=a_url, timeout=20))
        b = await stack.enter_async_context(httpx.AsyncClient(base_url=b_url, timeout=20))

        assert [await _status(c) for c in (a, b, a, b, a, b)] == [200, 200, 200, 200, 429, 429]
        health = (await a.get("/health")).json()
        assert health["status"] == "healthy" and health["checks"]["quota"]["shared"] is True

        await throwaway_redis.stop()
        # both keep serving, each with its own in-process window of 4 now
        assert [await _status(a) for _ in range(5)] == [200, 200, 200, 200, 429]
        assert (await _status(b)) == 200
        for c in (a, b):
            resp = await c.get("/health")
            assert resp.status_code == 200
            assert resp.json()["status"] == "degraded"
            assert resp.json()["checks"]["quota"]["status"] == "down"

        await throwaway_redis.start()  # an empty Redis: a new shared window
        await asyncio.sleep(1.2)  # the gateways try Redis again a second after a failure
        assert [await _status(c) for c in (b, a, b, a, b)] == [200, 200, 200, 200, 429]
        assert (await _status(a)) == 429
        health = (await b.get("/health")).json()
        assert health["status"] == "healthy" and health["checks"]["quota"]["status"] == "up"
