"""The sending half of a simulated WebSocket: one writer task drains a queue of frames and actions.

Producers (the reader answering client events, a synthesiser streaming audio) only ``put``; the writer alone
sends, so frames never interleave. ``put`` never waits: the connection's reader must always be back in
``receive()``, or a client's close would sit behind its unread frames and never be seen. Bulk producers (audio)
call :meth:`Writer.backpressure` first, so a slow client slows them down and memory stays bounded. Actions in the
queue carry the faults (pause, drop) and the server's own close, so they happen exactly in stream order.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec

from .asgi import WebSocket

__all__ = [
    "Close",
    "ConnectionDone",
    "Drop",
    "Item",
    "Pacer",
    "Stall",
    "Writer",
    "client_event",
    "event_id",
]


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

    def __init__(self, ws: WebSocket, high_water: int = 32) -> None:
        self._ws = ws
        self._items: deque[Item] = deque()
        self._high_water = high_water
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    async def put(self, item: Item) -> None:
        """Queue a frame or action; never waits."""
        self._items.append(item)
        self._ready.set()
        if len(self._items) >= self._high_water:
            self._space.clear()

    async def backpressure(self) -> None:
        """Wait until the queue is below its high-water mark (producers of bulk data call it first)."""
        await self._space.wait()

    async def _get(self) -> Item:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if len(self._items) < self._high_water:
            self._space.set()
        return item

    async def run(self) -> NoReturn:
        """Send until a :class:`Close` or :class:`Drop`, then raise :class:`ConnectionDone`."""
        ws = self._ws
        while True:
            item = await self._get()
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


def client_event(message: str | bytes) -> dict[str, Any] | tuple[str, str]:
    """A realtime socket's client frame as its JSON event, or the ``(code, message)`` of the ``error`` event a
    frame that is not one gets (binary, not JSON, not an object)."""
    if isinstance(message, bytes):
        return "invalid_value", "Binary frames are not supported; send JSON events."
    try:
        event = msgspec.json.decode(message)
    except msgspec.DecodeError:
        return "invalid_json", "The event is not valid JSON."
    if not isinstance(event, dict):
        return "invalid_json", "The event must be a JSON object."
    return event
