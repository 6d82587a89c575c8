"""The gateway's life: ready, serving, draining. One :class:`Lifecycle` per served app, built by its owner
(``qwen-gateway serve``, a test) and passed into :func:`qwen_gateway.app.create_app`; nothing here is global.

Draining (``SIGTERM``)::

    begin_drain()        /health/ready -> 503 at once; new HTTP requests and WebSocket handshakes -> 503
                         ``shutting_down``; every voice connection watches ``draining`` (see VoiceRunner):
                         an idle one is closed at once (``error`` shutting_down, close 1001), a busy one when
                         its running turn has ended; HTTP requests in flight (a streamed chat answer) go on
    + drain_seconds      ``expired``: the turns still running are cancelled (``audio_stream`` finished, the partial
                         answer journaled as ``interrupted`` with code shutting_down, ``error`` shutting_down,
                         close 1001)
    connections gone     (bounded by ``close_seconds`` after the deadline)
    outbox drained       as far as the database allows, bounded by ``outbox_seconds`` (what is left stays in the
                         durable journal for the next start)
    -> the server stops  (the caller's shutdown trigger; then the services close and the process exits 0)

:meth:`Lifecycle.drain` runs these steps and returns a :class:`DrainReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .config import Settings

__all__ = ["DrainReport", "Lifecycle", "OutboxLike"]

log = logging.getLogger("qwen_gateway.lifecycle")


class OutboxLike(Protocol):
    """The part of :class:`~qwen_gateway.storage.outbox.Outbox` a drain uses."""

    def backlog(self) -> int: ...

    async def drained(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did (logged at its end).

    Attributes:
        seconds: how long the drain took.
        connections_at_start / turns_at_start: voice connections open and turns running when it began.
        requests_at_start: HTTP requests in flight when it began (streamed chat answers, say).
        cut_short: connections still open when the grace period ended (their turns got ``shutting_down``).
        left_open: connections still open after the close bound (the server's own shutdown cancels them).
        outbox_backlog: turns left in the journal (not yet in the history database) at the end.
    """

    seconds: float
    connections_at_start: int
    turns_at_start: int
    requests_at_start: int
    cut_short: int
    left_open: int
    outbox_backlog: int


class Lifecycle:
    """Readiness and the drain of one served app.

    Args:
        drain_seconds: grace period of running turns (``QG_DRAIN_SECONDS``).
        outbox_seconds: longest wait for the outbox at the end of a drain (``QG_DRAIN_OUTBOX_SECONDS``).
        close_seconds: after the grace period, longest wait for the cut-short connections to close (their turn's
            cleanup and the close frame are bounded by the voice pipeline's own timeouts).
    """

    def __init__(
        self,
        *,
        drain_seconds: float = 20.0,
        outbox_seconds: float = 5.0,
        close_seconds: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.drain_seconds = drain_seconds
        self.outbox_seconds = outbox_seconds
        self.close_seconds = close_seconds
        self._clock = clock
        self._started = False
        self._draining = asyncio.Event()
        self._expired = asyncio.Event()
        self._deadline: float | None = None
        self._hurried = False
        self._connections = 0
        self._turns = 0
        self._requests = 0
        self._changed = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifecycle:
        """``QG_DRAIN_SECONDS`` and ``QG_DRAIN_OUTBOX_SECONDS``."""
        return cls(
            drain_seconds=settings.drain_seconds, outbox_seconds=settings.drain_outbox_seconds
        )

    # ------------------------------------------------------------------ state
    def mark_started(self) -> None:
        """The services are open and the server is about to serve: ``/health/ready`` may answer 200."""
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    @property
    def draining(self) -> bool:
        """True from :meth:`begin_drain` on (never false again)."""
        return self._draining.is_set()

    @property
    def expired(self) -> bool:
        """True once the grace period of running turns is over."""
        return self._expired.is_set()

    @property
    def connections(self) -> int:
        """Voice connections open now."""
        return self._connections

    @property
    def turns(self) -> int:
        """Voice turns running now."""
        return self._turns

    def remaining(self) -> float | None:
        """Seconds left of the grace period (None before the drain, 0 once over)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    async def wait_draining(self) -> None:
        await self._draining.wait()

    async def wait_expired(self) -> None:
        await self._expired.wait()

    async def wait_expired_or(self, done: Awaitable[Any]) -> None:
        """Wait until ``done`` completes or the drain's grace period is over, whichever comes first (``done`` is
        then cancelled)."""
        waits = [asyncio.ensure_future(done), asyncio.ensure_future(self.wait_expired())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    # ------------------------------------------------------------------ accounting (voice connections)
    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Count one voice connection for its whole life (``with lifecycle.connection(): ...``)."""
        self._connections += 1
        try:
            yield
        finally:
            self._connections -= 1
            self._notify()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count one HTTP request until its response (a streamed body included) has been sent."""
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1
            self._notify()

    @property
    def requests(self) -> int:
        """HTTP requests in flight now."""
        return self._requests

    @property
    def idle(self) -> bool:
        """No voice turn and no HTTP request is running (a whole-heap GC sweep delays no one now)."""
        return self._turns == 0 and self._requests == 0

    def turn_started(self) -> None:
        self._turns += 1

    def turn_ended(self) -> None:
        self._turns -= 1
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``predicate()`` holds (checked at every change), at most ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        return True

    # ------------------------------------------------------------------ the drain
    def begin_drain(self) -> None:
        """Start draining now (idempotent): readiness fails, new connections are refused, the clock runs."""
        if self.draining:
            return
        self._deadline = self._clock() + self.drain_seconds
        self._draining.set()
        log.info(
            "drain started",
            extra={
                "fields": {
                    "grace_seconds": self.drain_seconds,
                    "connections": self._connections,
                    "turns": self._turns,
                }
            },
        )

    def hurry(self) -> None:
        """End the grace period now (a second signal: the operator does not want to wait)."""
        if not self.draining:
            self.begin_drain()
        self._hurried = True
        self._deadline = self._clock()
        log.info("drain hurried: grace period ended early")
        self._notify()

    async def drain(self, outbox: OutboxLike | None = None) -> DrainReport:
        """Drain (see the module docstring) and return what happened. Calls :meth:`begin_drain` if needed."""
        started = self._clock()
        self.begin_drain()
        connections, turns, requests = self._connections, self._turns, self._requests
        # Connections close themselves once their turn has ended; they all go when the grace period ends at last.
        # HTTP requests in flight (this drain's own refusals are quick) get the same grace period.
        await self._until(
            lambda: (self._connections == 0 and self._requests == 0) or self._hurried,
            self.remaining() or 0.0,
        )
        cut_short = self._connections
        self._expired.set()
        if cut_short:
            log.info(
                "drain grace period over: cutting turns short",
                extra={"fields": {"connections": cut_short, "turns": self._turns}},
            )
        await self._until(lambda: self._connections == 0, self.close_seconds)
        left_open = self._connections
        backlog = 0
        if outbox is not None:
            backlog = await self._flush(outbox)
        report = DrainReport(
            seconds=round(self._clock() - started, 3),
            connections_at_start=connections,
            turns_at_start=turns,
            requests_at_start=requests,
            cut_short=cut_short,
            left_open=left_open,
            outbox_backlog=backlog,
        )
        log.info("drain finished", extra={"fields": _fields(report)})
        return report

    async def _flush(self, outbox: OutboxLike) -> int:
        """Wait (bounded) until the outbox moved every journaled turn into the history database."""
        try:
            async with asyncio.timeout(self.outbox_seconds):
                await outbox.drained()
        except TimeoutError:
            log.warning(
                "outbox not drained: turns stay in the journal for the next start",
                extra={"fields": {"backlog": outbox.backlog()}},
            )
        except RuntimeError as exc:  # the outbox is not open (it failed at start)
            log.warning("outbox not drained: %s", exc)
        return outbox.backlog()


def _fields(report: DrainReport) -> dict[str, object]:
    return {name: getattr(report, name) for name in report.__slots__}


async def drain_on(
    trigger: Callable[[], Awaitable[object]],
    lifecycle: Lifecycle,
    outbox: OutboxLike | None,
) -> DrainReport:
    """Wait for ``trigger`` (the stop signal), then drain; return the report (the server is stopped next)."""
    await trigger()
    return await lifecycle.drain(outbox)
