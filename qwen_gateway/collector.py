"""The garbage collector's policy while serving: short passes under load, a whole-heap pass only when quiet.

CPython's cyclic collector stops the event loop for its whole pass, at about 1-4 us per object it looks at on this
machine (each object's referents are visited, mostly cache misses; a young generation of coroutines, futures and
tasks costs about 3 us an object). What a pass looks at is what makes it long:

- a young pass, the objects allocated since the last one (the young threshold);
- a middle pass, also what survived the young passes since its last one;
- a full pass, everything that is not frozen. With 1000 idle sessions that is ~300,000 objects, ~250 ms: in a
  voice gateway, 250 ms of audio late for every turn in flight.

So the policy (:class:`Collector`):

1. **At start**, a full pass, then ``gc.freeze()``: modules, classes and the services leave the collector's view.
2. **Thresholds** ``(2_000, 3, 1)``: a young pass looks at up to 2,000 objects, a middle one at up to four young
   passes' worth (Python's defaults: 700 and 10), a full pass comes at every other middle pass (Python: every
   11th, and only once a quarter of the old generation is new). Under the 1000/100 load: young passes 9-18 ms,
   middle 16-31 ms, full 19-28 ms (``10_000, 3, 33`` before: 14-33, 34-41 and ~250 ms).
3. **After every full pass, ``gc.freeze()``**: what survived it (idle sessions, pooled connections) leaves the
   collector's view, so the next full pass looks only at what was promoted since: a full pass costs about what a
   middle pass does, whatever the number of sessions.
4. **A sweep when quiet**: an object frozen while alive is still freed by reference counting when it is dropped,
   but a reference cycle through it is never collected while it is frozen. The gateway's own turns and
   connections leave no cycle (``tests/voice_ws/test_turn_garbage.py``, error paths included); to bound what a
   library might leave, :meth:`Collector.sweep_when_quiet` unfreezes and runs a whole-heap pass when no turn and
   no HTTP request is running, at most every ``sweep_interval`` seconds (default 10 minutes). The sweep costs the
   250 ms above, but no client is waiting on the loop then. A gateway never quiet for ``force_after`` (6 hours)
   sweeps anyway: one such stall in 6 hours instead of one every ~40 minutes (Python's own full passes under the
   1000/100 load). ``qg_gc_frozen_objects`` shows what stays frozen.

The figures behind the numbers are in docs/benchmarks.md ("fourth round: the garbage collector's passes") and docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["THRESHOLDS", "Collector", "GcObserver"]

log = logging.getLogger("qwen_gateway.collector")

#: young, middle and old thresholds while serving (see the module docstring)
THRESHOLDS = (2_000, 3, 1)


class GcObserver(Protocol):
    """Where the collector reports (the app's :class:`~qwen_gateway.metrics.Metrics`)."""

    def gc_pass(self, generation: int, seconds: float) -> None: ...

    def gc_frozen(self, objects: int) -> None: ...


class Collector:
    """Installs the policy of the module docstring in this process and runs its sweeps.

    One per process (the collector is process-wide): ``qwen-gateway serve`` and the benchmarks build it;
    tests that build many apps in one process leave the collector alone.

    Args:
        quiet: True when no turn and no request is running (a sweep may stop the loop then).
        sweep_interval: least time between two sweeps (seconds); the first comes ``sweep_interval`` after start.
        force_after: a gateway never quiet this long after its last sweep sweeps anyway (seconds): one stall of a
            whole-heap pass, so that what a cycle through frozen objects holds stays bounded.
        check_every: how often :meth:`sweep_when_quiet` looks for a quiet moment (seconds).
        observer: told every pass's duration (at each check), and the frozen objects after each sweep.
        after_sweep: called after each sweep (``qwen-gateway serve``: ``server.release_free_memory``, which gives
            what the C allocator holds free back to the system; at a quiet moment its locks cost nothing).
    """

    def __init__(
        self,
        *,
        quiet: Callable[[], bool],
        sweep_interval: float = 600.0,
        force_after: float = 6 * 3600.0,
        check_every: float = 5.0,
        thresholds: tuple[int, int, int] = THRESHOLDS,
        observer: GcObserver | None = None,
        after_sweep: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet = quiet
        self.sweep_interval = sweep_interval
        self.force_after = force_after
        self.check_every = check_every
        self.thresholds = thresholds
        self._observer = observer
        self._after_sweep = after_sweep
        self._clock = clock
        self._installed = False
        #: (generation, seconds) of the passes not yet told to the observer
        self._passes: list[tuple[int, float]] = []
        self._sweeping = False
        self._started = 0.0
        self._last_sweep = 0.0
        #: full passes since start (sweeps left out), and sweeps
        self.full_passes = 0
        self.sweeps = 0

    def install(self) -> None:
        """A full pass and a freeze, the thresholds, and the freeze after each full pass (idempotent)."""
        if self._installed:
            return
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.thresholds)
        gc.callbacks.append(self._on_pass)
        self._installed = True
        self._last_sweep = self._clock()
        self._report_frozen()

    def uninstall(self) -> None:
        """Stop freezing after full passes and restore Python's thresholds (what is frozen stays frozen)."""
        if not self._installed:
            return
        gc.callbacks.remove(self._on_pass)
        gc.set_threshold(700, 10, 10)
        self._installed = False

    def _on_pass(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, in whichever thread allocated, possibly while that thread holds a lock (the
        # metrics' own, in multiprocess mode one for all of them): no lock taken here, the durations are handed
        # to the observer later, from the loop (flush).
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self._passes.append((generation, time.perf_counter() - self._started))
        if generation == 2 and not self._sweeping:
            self.full_passes += 1
            gc.freeze()  # O(1); counting what is frozen walks it all (10-40 ms): only at sweeps

    def flush(self) -> None:
        """Tell the observer the passes since the last flush (:meth:`sweep_when_quiet` does, every check)."""
        passes, self._passes = self._passes, []
        if self._observer is not None:
            for generation, seconds in passes:
                self._observer.gc_pass(generation, seconds)

    def _report_frozen(self) -> int:
        frozen = gc.get_freeze_count()
        if self._observer is not None:
            self._observer.gc_frozen(frozen)
        return frozen

    def sweep(self) -> int:
        """Unfreeze, collect the whole heap, freeze again; the number of unreachable objects found."""
        self._sweeping = True
        started = time.perf_counter()
        try:
            gc.unfreeze()
            found = gc.collect()
        finally:
            gc.freeze()
            self._sweeping = False
        if self._after_sweep is not None:
            self._after_sweep()
        self.sweeps += 1
        self._last_sweep = self._clock()
        frozen = self._report_frozen()
        log.info(
            "gc sweep",
            extra={
                "fields": {
                    "unreachable": found,
                    "frozen": frozen,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                }
            },
        )
        return found

    def sweep_due(self) -> bool:
        """A sweep is due: the interval has passed since the last one and nothing is running, or ``force_after``
        has passed."""
        since = self._clock() - self._last_sweep
        return since >= self.sweep_interval and (self._quiet() or since >= self.force_after)

    async def sweep_when_quiet(self) -> None:
        """Every ``check_every`` seconds until cancelled: :meth:`flush`, and :meth:`sweep` when one is due."""
        while True:
            await asyncio.sleep(self.check_every)
            self.flush()
            if self.sweep_due():
                self.sweep()
