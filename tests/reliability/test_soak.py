"""A soak: connect, one turn, disconnect, in a loop (a few clients at once) for the suite's time budget. RSS and
open descriptors stay flat: their slopes over the run are printed, and each end figure stays within a bound of its
warmed-up start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from qwen_gateway.simulator import SimulatorConfig
from tests.voice_ws.conftest import UPSTREAM_KEY, gateway

from .conftest import (
    LONG,
    collect,
    open_fds,
    rss_kib,
    settle,
    slope,
    tasks_alive,
    voice_turn,
    wav_bytes,
)

#: Seconds of soak after the warm-up (``make test-long``: ten minutes).
BUDGET = 600.0 if LONG else 10.0
CLIENTS = 4
WARMUP_TURNS = 40
REPLY = "今天天气很好，阳光明媚。适合出门散步，记得多喝水。"
FAST = SimulatorConfig(api_key=UPSTREAM_KEY, max_records=50)


async def test_soak_rss_and_descriptors_stay_flat(tmp_path: Path) -> None:
    audio = wav_bytes(0.5)
    async with gateway(tmp_path, FAST) as gw:
        gw.sim.set_reply(REPLY)
        done = 0

        async def loop(until: float | None, turns: int | None) -> None:
            nonlocal done
            i = 0
            while (until is None or time.monotonic() < until) and (turns is None or i < turns):
                out = await voice_turn(gw, "audio", f"soak-{done}", None, audio=audio)
                assert out.completed, out.events
                done += 1
                i += 1

        await asyncio.gather(*(loop(None, WARMUP_TURNS // CLIENTS) for _ in range(CLIENTS)))
        await gw.services.storage.outbox.drained()
        collect()
        tasks0, start_turns = tasks_alive(), done
        samples: list[tuple[int, int, int]] = [(0, rss_kib(), open_fds())]
        end = time.monotonic() + BUDGET
        step = BUDGET / (20 if LONG else 4)
        while time.monotonic() < end:
            stop = min(end, time.monotonic() + step)
            await asyncio.gather(*(loop(stop, None) for _ in range(CLIENTS)))
            await gw.services.storage.outbox.drained()
            collect()
            samples.append((done - start_turns, rss_kib(), open_fds()))
        turns = done - start_turns
        rss_slope = slope([(t, r) for t, r, _ in samples]) * 1000
        fd_slope = slope([(t, f) for t, _, f in samples]) * 1000
        print(
            f"\nsoak: {turns} turns in {BUDGET:.0f} s after {WARMUP_TURNS} warm-up turns; "
            f"RSS {samples[0][1] / 1024:.1f} -> {samples[-1][1] / 1024:.1f} MiB, slope {rss_slope:.0f} KiB "
            f"per 1,000 turns; fds {samples[0][2]} -> {samples[-1][2]}, slope {fd_slope:.2f} per 1,000 turns; "
            f"samples {[(t, round(r / 1024, 1), f) for t, r, f in samples]}"
        )
        assert turns >= CLIENTS
        assert await settle(lambda: tasks_alive() <= tasks0)
        assert await settle(lambda: not gw.sim.log.open_connections())
        # Flat: no descriptor kept per turn; memory within 5% (allocator noise) of its warmed-up level.
        assert samples[-1][2] <= samples[0][2] + 4
        assert samples[-1][1] <= samples[0][1] * 1.05, samples
