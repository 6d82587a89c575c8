"""Quota check cost: what the per-key limits add to a chat request.

Part 1, the check alone: ``Quotas.admit_upstream`` (what a chat request awaits before its upstream call: the
admission and an upstream session in one step, every limit set) on the in-process store and on Redis, p50/p99
over sequential calls; the release and the usage record run off the request's path, after it.

Part 2, a whole request: ``POST /v1/chat/completions`` (not streamed) through the gateway's app (Quart's test
client, in this process, the simulator answering at once) with limits off, in-process, and on Redis; rounds
interleaved, p50 of each. "Added p50" is the difference with limits off. Figures only, no assertions.

Redis: ``QG_BENCH_REDIS_URL`` (default: ``QG_TEST_REDIS_URL`` or redis://127.0.0.1:6379/9), a random key prefix,
deleted afterwards. Sizes: QG_BENCH_QUOTA_N (checks per store), QG_BENCH_QUOTA_REQUESTS (requests per round), QG_BENCH_QUOTA_ROUNDS.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from qwen_gateway.config import load_settings
from qwen_gateway.quota import Limits, Refusal, open_quotas

REDIS_URL = os.environ.get(
    "QG_BENCH_REDIS_URL", os.environ.get("QG_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
)
N = int(os.environ.get("QG_BENCH_QUOTA_N", "3000"))
REQUESTS = int(os.environ.get("QG_BENCH_QUOTA_REQUESTS", "300"))
ROUNDS = int(os.environ.get("QG_BENCH_QUOTA_ROUNDS", "5"))
BIG = 10**12
LIMITS = Limits(
    rpm=BIG, sessions=BIG, tokens_per_day=BIG, tts_chars_per_day=BIG, audio_seconds_per_day=BIG
)
OWNER = "k_" + "0" * 32


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _check_alone(redis_url: str, prefix: str) -> list[float]:
    async with open_quotas(
        Limits(), redis_url=redis_url, prefix=prefix, max_upstream=BIG, upstream_wait=1.0
    ) as q:
        if redis_url and q.degraded:
            raise RuntimeError(f"Redis does not answer at {redis_url}")
        times: list[float] = []
        for i in range(N + 100):
            t0 = time.perf_counter()
            slot = await q.admit_upstream(OWNER, LIMITS, ("tokens",))
            dt = time.perf_counter() - t0
            assert not isinstance(slot, Refusal)
            q.release_soon(slot)
            q.record(OWNER, {"tokens": 10})
            await q.flush()
            if i >= 100:
                times.append(dt * 1e6)
        if redis_url and q.degraded:
            raise RuntimeError("Redis went away during the run")
        return times


async def _requests(app: Any, n: int) -> list[float]:
    client = app.test_client()
    headers = {"Authorization": "Bearer gk-bench"}
    body = {"messages": [{"role": "user", "content": "你好"}]}
    times: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await client.post("/v1/chat/completions", json=body, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, await resp.get_data()
    return times


async def _whole_requests(prefix: str) -> dict[str, list[float]]:
    from contextlib import AsyncExitStack

    from qwen_gateway.app import create_app
    from qwen_gateway.services import open_services

    configs = {
        "limits off": {},
        "in-process": {
            "QG_LIMIT_RPM": str(BIG),
            "QG_LIMIT_TOKENS_PER_DAY": str(BIG),
            "QG_MAX_UPSTREAM_SESSIONS": str(BIG),
        },
    }
    configs["redis"] = {
        **configs["in-process"],
        "QG_REDIS_URL": REDIS_URL,
        "QG_REDIS_PREFIX": prefix,
    }
    apps: dict[str, Any] = {}
    results: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            for name, env in configs.items():
                settings = load_settings(
                    {
                        "QG_SIMULATE": "on",
                        "QG_API_KEYS": "gk-bench",
                        "QG_DATA_DIR": str(Path(tmp) / name.replace(" ", "-")),
                        "QG_LOG_LEVEL": "WARNING",
                        **env,
                    },
                    dotenv=None,
                )
                svc = await stack.enter_async_context(open_services(settings))
                apps[name] = create_app(svc.settings, svc)
                await _requests(apps[name], 30)  # warm-up
            for _ in range(ROUNDS):
                for name, app in apps.items():
                    results[name] += await _requests(app, REQUESTS)
    return results


async def _cleanup(prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main() -> None:
    import logging

    logging.disable(logging.WARNING)
    prefix = f"qgbench:{secrets.token_hex(6)}:"
    try:
        print(f"quota check alone (admit_upstream), {N} sequential checks:")
        for name, url in (("in-process", ""), ("redis", REDIS_URL)):
            t = await _check_alone(url, prefix)
            print(f"  {name:<11} p50 {pct(t, 50):8.1f} us   p99 {pct(t, 99):8.1f} us")
        print(
            f"\nwhole chat request through the app (test client, simulator), {ROUNDS}x{REQUESTS} each:"
        )
        results = await _whole_requests(prefix)
        base = statistics.median(results["limits off"])
        for name, t in results.items():
            p50 = statistics.median(t)
            added = "" if name == "limits off" else f"   added p50 {p50 - base:+.3f} ms"
            print(f"  {name:<11} p50 {p50:7.3f} ms   p99 {pct(t, 99):7.3f} ms{added}")
    finally:
        await _cleanup(prefix)


if __name__ == "__main__":
    asyncio.run(main())
