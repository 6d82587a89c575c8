"""``Lifecycle``: the drain's steps, driven without a server (a fake outbox, connections held by hand)."""

from __future__ import annotations

import asyncio

from qwen_gateway.lifecycle import Lifecycle


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
