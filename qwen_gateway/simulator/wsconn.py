"""The sending half of a simulated WebSocket: one writer task drains a bounded queue of frames and actions.

Producers (the reader answering client events, a synthesiser streaming audio) only ``put``; the writer alone
sends, so frames never interleave and a slow client backpressures the producers. Actions in the queue carry the
faults (pause, drop) and the server's own close, so they happen exactly in stream order.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import NoReturn

from .asgi import WebSocket

__all__ = ["Close", "ConnectionDone", "Drop", "Item", "Pacer", "Stall", "Writer", "event_id"]


@dataclass(frozen=True, slots=True)
class Stall:
    """Pause sending for ``seconds`` (``None``: until the connection ends)."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class Drop:
    """End the connection abruptly (close 1011, no close handshake)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code``; ``why`` becomes the record's close reason."""

    code: int = 1000
    reason: str = ""
    why: str = "complete"


Item = str | bytes | Stall | Drop | Close


class ConnectionDone(Exception):
    """The server ended the connection (raised by the writer to end the connection's task group)."""

    def __init__(self, why: str, code: int | None) -> None:
        super().__init__(why)
        self.why = why
        self.code = code


class Writer:
    """Owns the sending side of ``ws``."""

    def __init__(self, ws: WebSocket, maxsize: int = 64) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)

    async def put(self, item: Item) -> None:
        """Queue a frame or action (waits while the queue is full)."""
        await self._queue.put(item)

    async def run(self) -> NoReturn:
        """Send until a :class:`Close` or :class:`Drop`, then raise :class:`ConnectionDone`."""
        ws = self._ws
        while True:
            item = await self._queue.get()
            if isinstance(item, str):
                await ws.send_text(item)
            elif isinstance(item, bytes):
                await ws.send_bytes(item)
            elif isinstance(item, Stall):
                if item.seconds is None:
                    await asyncio.Event().wait()
                else:
                    await asyncio.sleep(item.seconds)
            elif isinstance(item, Drop):
                await ws.close(1011)
                raise ConnectionDone("dropped", 1011)
            else:
                await ws.close(item.code, item.reason)
                raise ConnectionDone(item.why, item.code)


class Pacer:
    """Times audio chunks: real-time factor, a first-chunk delay and optional bursts."""

    def __init__(
        self,
        *,
        realtime_factor: float,
        first_delay: float = 0.0,
        burst: int = 0,
        burst_pause: float = 0.0,
    ) -> None:
        self._rtf = realtime_factor
        self._first_delay = first_delay
        self._burst = burst
        self._pause = burst_pause
        self._t0: float | None = None
        self._audio = 0.0
        self._count = 0

    def restart(self) -> None:
        """A new response starts: its first chunk gets the first-chunk delay, pacing restarts from now."""
        self._t0 = None
        self._audio = 0.0

    async def wait(self, chunk_seconds: float) -> None:
        """Return when the next chunk of ``chunk_seconds`` of audio is due."""
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            if self._first_delay > 0:
                await asyncio.sleep(self._first_delay)
            self._t0 = loop.time()
        if self._burst and self._count and self._count % self._burst == 0:
            await asyncio.sleep(self._pause)
            self._t0 += self._pause
        self._count += 1
        if self._rtf > 0:
            self._audio += chunk_seconds
            delay = self._t0 + self._audio * self._rtf - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


def event_id(prefix: str = "event_") -> str:
    """A DashScope-looking random id (``event_``, ``resp_``, ``item_``, ``sess_`` + 21 letters/digits)."""
    return prefix + secrets.token_urlsafe(16)[:21].replace("-", "x").replace("_", "y")
