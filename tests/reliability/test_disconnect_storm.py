"""A disconnect storm: clients drop abruptly (TCP reset, no closing handshake) at random points of their turn:
mid-upload, mid-recognition, mid-answer, mid-audio, or right after the turn, on ``/v1/chat/audio`` and
``/v1/chat/vlm``. Afterwards nothing is left behind: no upstream socket open at the simulator, the loop's tasks back
to the baseline, RSS within 10% of the baseline; and the history holds exactly the completed turns, plus the
interrupted ones marked ``interrupted`` (``error_code`` ``client_gone``), never a turn twice, never a failed one."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

from qwen_gateway.simulator import SimulatorConfig
from tests.voice_ws.conftest import GATEWAY_KEY, UPSTREAM_KEY, gateway, voice_tasks

from .conftest import (
    DROP_POINTS,
    LONG,
    Outcome,
    collect,
    open_fds,
    png_bytes,
    rss_kib,
    settle,
    tasks_alive,
    voice_turn,
    wav_bytes,
)

CLIENTS = 1000 if LONG else 200
AT_ONCE = 50
WARMUP = 300
VLM_SHARE = 0.15
REPLY = "今天天气很好，阳光明媚。适合出门散步，记得多喝水。晚上可能会降温，出门记得带一件外套。"
#: Paced like a real service, so that a client leaving finds every stage in progress.
PACED = SimulatorConfig(
    api_key=UPSTREAM_KEY,
    ttft=0.05,
    tokens_per_second=60.0,
    chat_chunk_tokens=2,
    tts_realtime_factor=0.3,
    max_records=20,
)


async def _storm(gw, count: int, seed: int, audio: bytes, image: bytes) -> list[Outcome]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(i: int) -> Outcome:
        endpoint = "vlm" if rng.random() < VLM_SHARE else "audio"
        drop = rng.choice(DROP_POINTS)
        async with gate:
            return await voice_turn(
                gw,
                endpoint,
                f"storm-{seed}-{i}",
                drop,
                audio=audio,
                image=image,
                rng=random.Random(seed * 100_003 + i),
            )

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_disconnect_storm_leaves_nothing_behind(tmp_path: Path) -> None:
    audio, image = wav_bytes(0.6), png_bytes()
    async with gateway(tmp_path, PACED) as gw:
        gw.sim.set_reply(REPLY)
        # Warm-up: every path at this concurrency, so that pools and allocators have their working size (RSS
        # steps up over the first 200-300 such turns, then stays: +12.0, +2.3, -0.1 MiB over three storms of 200).
        await _storm(gw, WARMUP, seed=1, audio=audio, image=image)
        assert await settle(lambda: not gw.sim.log.open_connections())
        await gw.services.storage.outbox.drained()
        await asyncio.sleep(0.5)
        collect()
        tasks0, rss0, fds0 = tasks_alive(), rss_kib(), open_fds()

        outcomes = await _storm(gw, CLIENTS, seed=2, audio=audio, image=image)

        closed = await settle(lambda: not gw.sim.log.open_connections(), timeout=30)
        back = await settle(lambda: tasks_alive() <= tasks0, timeout=30)
        await gw.services.storage.outbox.drained()
        await asyncio.sleep(0.5)
        collect()
        tasks1, rss1, fds1 = tasks_alive(), rss_kib(), open_fds()
        print(
            f"\ndisconnect storm: {CLIENTS} clients ({Counter(o.drop or 'end' for o in outcomes)}); "
            f"upstream sockets open after: {len(gw.sim.log.open_connections())}; tasks {tasks0} -> {tasks1}; "
            f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; fds {fds0} -> {fds1}"
        )
        assert closed, f"upstream connections left open: {gw.sim.log.open_connections()}"
        assert back, f"tasks alive: {tasks1}, baseline {tasks0}"
        # Exactly: no task of a connection, a turn or an answer is left (the baseline's other tasks are the servers'
        # and the upstream keep-alive pool's idle connections, at most max_keepalive, expiring after 30 s).
        assert await settle(lambda: not voice_tasks()), voice_tasks()
        assert rss1 <= rss0 * 1.10, f"RSS grew from {rss0} to {rss1} KiB"

        history = gw.services.storage.history
        owner = gw.services.keys.owner(GATEWAY_KEY)
        statuses: Counter[str] = Counter()
        for o in outcomes:
            rows = await history.conversation(o.conversation, owner=owner)
            statuses.update(r.status for r in rows)
            if o.completed:
                assert o.db_saved in (True, None)  # None: the VLM completion event has no db_saved
                assert [(r.status, r.assistant_content) for r in rows] == [("completed", o.answer)]
                continue
            assert len(rows) <= 1, f"{o.drop}: {rows}"
            if o.drop == "upload":
                assert rows == [], "an incomplete upload has nothing to record"
            for r in rows:
                assert r.status in ("interrupted", "completed"), r
                assert REPLY.startswith(r.assistant_content)
                if r.status == "interrupted":
                    assert r.error_code == "client_gone"
                    assert r.user_content, "an interrupted turn keeps what the user said"
                else:
                    assert r.assistant_content == REPLY
        print(f"history after the storm: {dict(statuses)}")
        assert statuses["completed"] >= sum(o.completed for o in outcomes)
        assert statuses["interrupted"] > 0
        assert statuses["failed"] == 0
