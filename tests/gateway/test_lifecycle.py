"""``Lifecycle``: the drain's steps, driven without a server (a fake outbox, connections held by hand)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from qwen_gateway.app import create_app
from qwen_gateway.lifecycle import Lifecycle
from qwen_gateway.server import serving
from qwen_gateway.services import open_services
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator.faults import Fault
from tests.api.conftest import GATEWAY_KEY, UPSTREAM_KEY, pointed_settings

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


class FakeOutbox:
    def __init__(self, backlog: int, *, drains: bool) -> None:
        self._backlog = backlog
        self._drains = drains

    def backlog(self) -> int:
        return self._backlog

    async def drained(self) -> None:
        if not self._drains:
            await asyncio.Event().wait()  # the database is away: never
        self._backlog = 0


async def test_without_connections_the_drain_flushes_the_outbox() -> None:
    life = Lifecycle(drain_seconds=30, outbox_seconds=30)
    life.mark_started()
    assert not life.draining
    report = await life.drain(FakeOutbox(3, drains=True))
    assert life.draining and life.expired
    assert report.connections_at_start == 0 and report.cut_short == 0
    assert report.outbox_backlog == 0


async def test_a_connection_that_ends_in_the_grace_period_is_not_cut_short() -> None:
    life = Lifecycle(drain_seconds=30, outbox_seconds=1)
    seen_draining = asyncio.Event()

    async def connection() -> None:
        with life.connection():
            life.turn_started()
            await life.wait_draining()
            seen_draining.set()
            await asyncio.sleep(0)
            life.turn_ended()

    task = asyncio.create_task(connection())
    await asyncio.sleep(0)
    report = await life.drain(None)
    await task
    assert seen_draining.is_set()
    assert (report.connections_at_start, report.turns_at_start) == (1, 1)
    assert report.cut_short == 0 and report.left_open == 0


async def test_after_the_grace_period_connections_are_told_to_end() -> None:
    life = Lifecycle(drain_seconds=0.05, outbox_seconds=0.05, close_seconds=5)
    told: list[bool] = []

    async def connection() -> None:
        with life.connection():
            await life.wait_expired()  # a turn that would run forever
            told.append(True)

    task = asyncio.create_task(connection())
    await asyncio.sleep(0)
    report = await life.drain(FakeOutbox(2, drains=False))
    await task
    assert told == [True]
    assert report.cut_short == 1 and report.left_open == 0
    assert report.outbox_backlog == 2  # the database did not take it: it stays in the journal


async def test_hurry_ends_the_grace_period_at_once() -> None:
    life = Lifecycle(drain_seconds=3600, outbox_seconds=1, close_seconds=5)

    async def connection() -> None:
        with life.connection():
            await life.wait_expired()

    task = asyncio.create_task(connection())
    await asyncio.sleep(0)
    drain = asyncio.create_task(life.drain(None))
    await asyncio.sleep(0)
    assert life.draining and not life.expired
    life.hurry()
    report = await drain
    await task
    assert report.cut_short == 1 and life.remaining() == 0


async def test_a_streamed_chat_answer_in_flight_gets_the_grace_period(tmp_path: Path) -> None:
    """In-process: the app counts HTTP requests; a drain begun while a chat answer streams waits for it, and a
    request arriving during the drain is refused with 503 ``shutting_down``."""
    async with Simulator(SimulatorConfig(api_key=UPSTREAM_KEY), host="127.0.0.1", port=0) as sim:
        settings = pointed_settings(sim, tmp_path / "data")
        async with open_services(settings) as svc:
            life = Lifecycle(drain_seconds=60, outbox_seconds=5)
            life.mark_started()
            app = create_app(svc.settings, svc, life)
            sim.set_reply("一二三四五六七八九十")
            sim.faults.add(Fault.stall(after_chunks=2, seconds=1.0))
            async with serving(app, svc.settings) as base, httpx.AsyncClient(timeout=30) as http:
                body = {
                    "model": "qwen-plus",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                }
                async with http.stream(
                    "POST", f"{base}/v1/chat/completions", headers=AUTH, json=body
                ) as resp:
                    assert resp.status_code == 200
                    lines = resp.aiter_lines()
                    first = await anext(lines)
                    assert first.startswith("data:")
                    assert life.requests == 1
                    drain = asyncio.create_task(life.drain(None))
                    await asyncio.sleep(0)
                    refused = await http.get(f"{base}/v1/models", headers=AUTH)
                    assert refused.status_code == 503
                    assert refused.json()["error"]["code"] == "shutting_down"
                    assert not drain.done()  # it waits for the answer still streaming
                    rest = [line async for line in lines]
                assert "data: [DONE]" in rest
                report = await drain
    assert report.requests_at_start == 1 and report.cut_short == 0


async def test_idle_means_no_turn_and_no_request_running() -> None:
    """What the collector's quiet sweep waits for (qwen_gateway.collector)."""
    life = Lifecycle()
    assert life.idle
    life.turn_started()
    assert not life.idle
    life.turn_ended()
    with life.request():
        assert not life.idle
    assert life.idle
