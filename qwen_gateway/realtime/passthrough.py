"""Client events for a backend that consumes them as a stream: the seam of the Omni pass-through.

:class:`ClientEventPump` is the connection's ``on_frame`` for such a backend: every frame is decoded and normalised
by :func:`protocol.realtime.decode_client_event` (beta names and shapes read as GA), a bad one answered at once with
an ``error`` event carrying the client's ``event_id``, a good one queued (bounded: a backend slower than the client
slows the client's frames down) as the GA-shaped dict the backend reads from :meth:`ClientEventPump.events`.
Audio and images stay base64 text in the dicts, as on the wire.

Wiring a backend (the Omni bridge, ``qwen_gateway/realtime/omni.py``)::

    pump = ClientEventPump(send_error, limits)
    conn.spawn(bridge.run(pump.events()))         # the bridge reads GA dicts, sends GA dicts
    await conn.run(pump.on_frame, on_open=...)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from protocol import realtime as rt

__all__ = ["ClientEventPump"]


class ClientEventPump:
    """Frames in, GA client events out (see the module docstring).

    Args:
        send_error: sends an ``error`` event to the client.
        limits: the frame limits.
        queue_size: events waiting for the backend before the reader waits.
    """

    def __init__(
        self,
        send_error: Callable[[rt.RealtimeErrorEvent], Awaitable[None]],
        limits: rt.RealtimeLimits = rt.REALTIME_LIMITS,
        *,
        queue_size: int = 64,
    ) -> None:
        self._send_error = send_error
        self._limits = limits
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=queue_size)
        self._ended = False

    async def on_frame(self, frame: str | bytes) -> None:
        """Decode one frame: an ``error`` event for a bad one, the event queued for the backend otherwise."""
        event = rt.decode_client_event(frame, self._limits)
        if isinstance(event, rt.RealtimeError):
            await self._send_error(rt.error_event(event))
            return
        await self._queue.put(msgspec.to_builtins(event))

    async def end(self) -> None:
        """No more events (the client is leaving): :meth:`events` ends after those queued."""
        await self._queue.put(None)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The client's events as GA dicts (``type``, ``event_id`` when given, the event's fields), in order."""
        while not self._ended:
            event = await self._queue.get()
            if event is None:
                self._ended = True
                return
            yield event
