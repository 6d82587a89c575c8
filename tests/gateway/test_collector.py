"""The garbage collector's policy while serving (``qwen_gateway.collector``): freeze what survives a full pass,
sweep the whole heap only when nothing runs.

The collector is process-wide: each test installs the policy and puts Python's settings back afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qwen_gateway.collector import THRESHOLDS, Collector


@dataclass
class Seen:
    """A ``GcObserver`` that keeps what it is told."""

    passes: list[tuple[int, float]] = field(default_factory=list)
    frozen: list[int] = field(default_factory=list)

    def gc_pass(self, generation: int, seconds: float) -> None:
        self.passes.append((generation, seconds))

    def gc_frozen(self, objects: int) -> None:
        self.frozen.append(objects)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """A container the collector tracks."""

    def __init__(self) -> None:
        self.other: Any = None


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    try:
        yield
    finally:
        gc.callbacks[:] = callbacks
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def frozen_ids() -> set[int]:
    """Ids of the tracked objects the collector still looks at (frozen ones are not among them)."""
    return {id(o) for o in gc.get_objects()}


def test_install_freezes_start_up_and_sets_the_thresholds(restore_gc: None) -> None:
    before = Node()
    seen = Seen()
    collector = Collector(quiet=lambda: True, observer=seen)
    collector.install()
    collector.install()  # idempotent: one callback
    assert gc.get_threshold() == THRESHOLDS
    assert id(before) not in frozen_ids()
    assert seen.frozen and seen.frozen[-1] == gc.get_freeze_count() > 0
    assert sum(1 for c in gc.callbacks if getattr(c, "__self__", None) is collector) == 1
    collector.uninstall()
    assert gc.get_threshold() == (700, 10, 10)
    assert not any(getattr(c, "__self__", None) is collector for c in gc.callbacks)


def test_what_survives_a_full_pass_is_frozen_and_later_passes_skip_it(restore_gc: None) -> None:
    seen = Seen()
    collector = Collector(quiet=lambda: True, observer=seen)
    collector.install()
    survivor = Node()
    assert id(survivor) in frozen_ids()
    gc.collect(1)  # a middle pass freezes nothing
    assert id(survivor) in frozen_ids()
    gc.collect()  # a full pass: what survived it leaves the collector's view
    assert id(survivor) not in frozen_ids()
    assert collector.full_passes == 1
    assert seen.passes == [], "told from the loop, not from inside the collector"
    collector.flush()
    assert [g for g, _ in seen.passes] == [1, 2]
    assert all(0 <= s < 5 for _, s in seen.passes)
    # A frozen object is still freed by reference counting.
    ref = weakref.ref(survivor)
    del survivor
    assert ref() is None


def test_a_cycle_through_a_frozen_object_waits_for_the_sweep(restore_gc: None) -> None:
    trimmed: list[bool] = []
    collector = Collector(quiet=lambda: True, after_sweep=lambda: trimmed.append(True))
    collector.install()
    old = Node()
    gc.collect()  # `old` is frozen from here on
    young = Node()
    old.other, young.other = young, old  # a cycle through the frozen object
    ref = weakref.ref(old)
    del old, young
    gc.collect()
    assert ref() is not None, "frozen: ordinary passes do not look at it"
    found = collector.sweep()
    assert ref() is None, "the sweep unfreezes and collects the whole heap"
    assert found >= 2
    assert collector.sweeps == 1
    assert trimmed == [True], "after_sweep (serve: malloc_trim) runs after each sweep"
    assert gc.get_freeze_count() > 0, "what survived the sweep is frozen again"


def test_a_sweep_is_due_after_the_interval_and_only_when_quiet(restore_gc: None) -> None:
    clock = Clock()
    busy = [True]
    collector = Collector(quiet=lambda: not busy[0], sweep_interval=600.0, clock=clock)
    collector.install()
    busy[0] = False
    assert not collector.sweep_due(), "the interval runs from start"
    clock.now += 600.0
    assert collector.sweep_due()
    busy[0] = True
    assert not collector.sweep_due(), "never while a turn or a request runs"
    busy[0] = False
    collector.sweep()
    assert not collector.sweep_due(), "the interval runs from the last sweep"
    clock.now += 599.0
    assert not collector.sweep_due()
    clock.now += 1.0
    assert collector.sweep_due()


def test_a_gateway_never_quiet_sweeps_after_force_after(restore_gc: None) -> None:
    clock = Clock()
    collector = Collector(
        quiet=lambda: False, sweep_interval=600.0, force_after=6 * 3600.0, clock=clock
    )
    collector.install()
    clock.now += 6 * 3600.0 - 1
    assert not collector.sweep_due(), "busy: no sweep before force_after"
    clock.now += 1
    assert collector.sweep_due()
    collector.sweep()
    assert not collector.sweep_due(), "force_after runs from the last sweep"


async def test_the_sweeper_sweeps_when_quiet_until_cancelled(restore_gc: None) -> None:
    busy = [True]
    seen = Seen()
    collector = Collector(
        quiet=lambda: not busy[0], sweep_interval=0.0, check_every=0.01, observer=seen
    )
    collector.install()
    async with asyncio.TaskGroup() as tasks:
        sweeper = tasks.create_task(collector.sweep_when_quiet())
        await asyncio.sleep(0.1)
        assert collector.sweeps == 0, "busy all along"
        busy[0] = False
        async with asyncio.timeout(5):
            while collector.sweeps < 2:  # noqa: ASYNC110 (polling the sweeper's count)
                await asyncio.sleep(0.01)
        sweeper.cancel()
    assert sweeper.cancelled()
    assert 2 in [g for g, _ in seen.passes], "the sweeps' passes were told at the following checks"
    assert seen.frozen[-1] > 0
