"""The WebSocket connection shell: one reader, one writer, a small bounded outgoing queue, timeouts.

A :class:`WsConnection` owns one accepted WebSocket for its whole life. :meth:`WsConnection.run` starts, inside one
``asyncio.TaskGroup``:

* the **reader**, the only task that calls ``websocket.receive()``; it hands every frame to the endpoint's
  ``on_frame`` callback, one at a time, in order;
* the **writer**, the only task that calls ``websocket.send()``; it takes frames from a bounded queue and sends each
  under ``asyncio.timeout(send_timeout)``. Producers (:meth:`WsConnection.send`) wait while the queue is full, so a
  slow client slows the producers down (backpressure) and nothing is dropped;
* the **watchdog**, which ends the connection when nothing was received or sent for ``idle_timeout``;
* whatever the endpoint starts with :meth:`WsConnection.spawn` (the voice turns).

The connection ends when the endpoint calls :meth:`WsConnection.close` (after the frames already queued are sent),
when a send times out (a client that reads nothing), when the idle timeout fires, or when the client goes away
(Quart then cancels the handler, and with it the group). In every case every task of the group, and so every
upstream connection a turn opened, is cancelled and awaited before :meth:`run` returns.

A client that reads nothing cannot be evicted through ASGI alone: the server's close frame waits behind the same
blocked ``drain()``. :func:`set_unread_timeout` asks the kernel (``TCP_USER_TIMEOUT``) to drop a connection whose
peer has kept a zero receive window, or left data unacknowledged, for longer than a deadline; set it on the
listening socket (accepted sockets inherit it) so the TCP socket of a stuck client is really closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .config import Settings
from .tasks import forget_frames

__all__ = [
    "CloseInfo",
    "EndReason",
    "ErrorFrame",
    "WebSocketLike",
    "WsConnection",
    "WsLimits",
    "set_unread_timeout",
]

log = logging.getLogger("qwen_gateway.ws")

#: WebSocket close codes the shell uses (RFC 6455 §7.4.1; 4000-4999 are private to the application).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_SEND_TIMEOUT: Final = 4008
CLOSE_IDLE_TIMEOUT: Final = 4000


class WebSocketLike(Protocol):
    """The part of Quart's ``websocket`` the shell uses (already accepted)."""

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


#: Builds the wire text of an ``error`` event from a code and a message (the endpoint's codec).
ErrorFrame = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class WsLimits:
    """Per-connection limits of the shell.

    Attributes:
        send_timeout: seconds one frame may wait to be taken by the client before the client is evicted.
        idle_timeout: seconds without a frame in either direction before the connection is closed.
        queue_size: outgoing frames queued ahead of the writer; producers wait beyond that.
        close_timeout: seconds granted to the final ``error`` event and the close frame.
    """

    send_timeout: float
    idle_timeout: float
    queue_size: int = 8
    close_timeout: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WsLimits:
        """The limits configured in ``settings`` (``QG_WS_SEND_TIMEOUT``, ``QG_WS_IDLE_TIMEOUT``)."""
        return cls(
            send_timeout=settings.ws_send_timeout,
            idle_timeout=settings.ws_idle_timeout,
            close_timeout=min(1.0, settings.ws_send_timeout),
        )


class EndReason(enum.StrEnum):
    """Why a connection ended (logged, and returned by :meth:`WsConnection.run`)."""

    CLOSED = "closed"  #: the endpoint closed it (after its last frames were sent)
    SEND_TIMEOUT = "send_timeout"  #: the client read nothing for ``send_timeout``
    IDLE_TIMEOUT = "idle_timeout"  #: nothing in either direction for ``idle_timeout``
    INTERNAL_ERROR = "internal_error"  #: a task of the connection failed (a bug)
    CLIENT_GONE = (
        "client_gone"  #: the client went away (:meth:`WsConnection.run` raised CancelledError)
    )


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended: ``reason``, the close ``code`` sent, frames sent and received."""

    reason: EndReason
    code: int
    frames_sent: int
    frames_received: int


class _Ended(Exception):
    """Raised inside the group by the task that ends the connection; carries the reason."""

    def __init__(self, reason: EndReason, code: int, message: str = "") -> None:
        super().__init__(reason, code, message)
        self.reason = reason
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class WsConnection:
    """One accepted WebSocket connection run by a reader, a writer and a watchdog under one ``TaskGroup``.

    Args:
        websocket: the accepted connection (Quart's ``websocket`` object).
        limits: timeouts and queue size.
        error_frame: encodes the ``error`` event the shell sends on idle timeout or internal failure.
        clock: monotonic seconds (tests may pass their own).
    """

    def __init__(
        self,
        websocket: WebSocketLike,
        limits: WsLimits,
        *,
        error_frame: ErrorFrame,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ws = websocket
        self._limits = limits
        self._error_frame = error_frame
        self._clock = clock
        self._queue: asyncio.Queue[str | bytes | _Close | Callable[[], None]] = asyncio.Queue(
            maxsize=limits.queue_size
        )
        self._group: asyncio.TaskGroup | None = None
        self._last_activity = clock()
        self._closing = False
        self.frames_sent = 0
        self.frames_received = 0

    # ------------------------------------------------------------------ producer side
    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called or the connection is ending: further sends are dropped."""
        return self._closing

    async def send(self, frame: str | bytes) -> None:
        """Queue ``frame`` for the writer; waits while the queue is full (the client is slower than us).

        Frames sent after :meth:`close` are discarded (the connection is ending).
        """
        if self._closing:
            return
        await self._queue.put(frame)

    async def after_sent(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the frames queued so far have been handed to the server (metrics)."""
        if self._closing:
            return
        await self._queue.put(callback)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """End the connection once the frames queued so far are sent; the close frame carries ``code``.

        Does not wait. Safe to call more than once (the first call wins).
        """
        if self._closing:
            return
        self._closing = True
        if self._group is None:
            return
        try:
            self._queue.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            # The writer is blocked on a full queue: let a task wait for room (bounded by send_timeout).
            self.spawn(self._queue.put(_Close(code, reason)), name="ws-close")

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in the connection's task group: cancelled when the connection ends.

        An exception escaping ``coro`` ends the connection as an internal error: catch what you expect.
        """
        if self._group is None:
            coro.close()
            raise RuntimeError("WsConnection.spawn() called outside run()")
        return self._group.create_task(coro, name=name)

    def touch(self) -> None:
        """Count as activity for the idle timeout (a long upstream wait during a turn, say)."""
        self._last_activity = self._clock()

    # ------------------------------------------------------------------ running
    async def run(
        self,
        on_frame: Callable[[str | bytes], Awaitable[None]],
        *,
        on_open: Callable[[], Awaitable[None]] | None = None,
    ) -> CloseInfo:
        """Serve the connection until it ends; return how it ended.

        Args:
            on_frame: called by the reader with each received frame, in order; the next frame is read only
                after it returns (so a slow ``on_frame`` slows the client's sending down).
            on_open: awaited first, inside the group (to queue the ``connected`` event, say).

        Raises:
            asyncio.CancelledError: the client went away (Quart cancels the handler); everything was cancelled.
        """
        ended: _Ended | None = None
        try:
            try:
                await self._run_tasks(on_frame, on_open)
            except* _Ended as eg:
                ended = eg.exceptions[0]  # type: ignore[assignment]
                forget_frames(eg)
            except* Exception as eg:
                log.error(
                    "connection task failed",
                    exc_info=eg.exceptions[0],
                    extra={"fields": {"error": type(eg.exceptions[0]).__name__}},
                )
                forget_frames(eg)
                ended = _Ended(EndReason.INTERNAL_ERROR, CLOSE_INTERNAL_ERROR, "Internal error")
        except asyncio.CancelledError as exc:
            fields = self._fields(EndReason.CLIENT_GONE, None)
            log.info("connection ended", extra={"fields": fields})
            forget_frames(exc)
            raise
        finally:
            self._group = None
            self._closing = True
        assert ended is not None
        await self._finish(ended)
        return CloseInfo(ended.reason, ended.code, self.frames_sent, self.frames_received)

    async def _run_tasks(
        self,
        on_frame: Callable[[str | bytes], Awaitable[None]],
        on_open: Callable[[], Awaitable[None]] | None,
    ) -> None:
        # The group lives in this frame, not in run()'s: run() is still running when it catches the client's
        # CancelledError, so forget_frames() cannot clear run()'s locals, and a group kept there (which keeps the
        # handler's task, which keeps that CancelledError, whose traceback keeps run()'s frame) made every
        # closed connection a reference cycle left to the garbage collector (tests/voice_ws/test_turn_garbage.py).
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._writer(), name="ws-writer")
            group.create_task(self._watchdog(), name="ws-watchdog")
            group.create_task(self._reader(on_frame, on_open), name="ws-reader")

    async def _reader(
        self,
        on_frame: Callable[[str | bytes], Awaitable[None]],
        on_open: Callable[[], Awaitable[None]] | None,
    ) -> None:
        if on_open is not None:
            await on_open()
        while True:
            frame = await self._ws.receive()
            self.frames_received += 1
            self._last_activity = self._clock()
            await on_frame(frame)

    async def _writer(self) -> None:
        timeout = self._limits.send_timeout
        while True:
            item = await self._queue.get()
            if isinstance(item, _Close):
                raise _Ended(EndReason.CLOSED, item.code, item.reason)
            if callable(item):  # an after_sent() callback
                item()
                continue
            try:
                async with asyncio.timeout(timeout):
                    await self._ws.send(item)
            except TimeoutError:
                # Also covers ETIMEDOUT from the kernel (TCP_USER_TIMEOUT) surfacing through the drain.
                raise _Ended(
                    EndReason.SEND_TIMEOUT,
                    CLOSE_SEND_TIMEOUT,
                    f"The client read nothing for {timeout:g} s",
                ) from None
            self.frames_sent += 1
            self._last_activity = self._clock()
            if not self._queue.empty():
                # A backlog is sent a frame at a time with a turn for the others in between (the TTS feeder
                # waiting to send the next sentence, say), not in one burst that holds the event loop.
                await asyncio.sleep(0)

    async def _watchdog(self) -> None:
        idle = self._limits.idle_timeout
        while True:
            remaining = self._last_activity + idle - self._clock()
            if remaining <= 0:
                raise _Ended(
                    EndReason.IDLE_TIMEOUT,
                    CLOSE_IDLE_TIMEOUT,
                    f"No message for {idle:g} s: connection closed",
                )
            await asyncio.sleep(remaining)

    def _fields(self, reason: EndReason, code: int | None) -> dict[str, Any]:
        return {
            "reason": str(reason),
            "close_code": code,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
        }

    async def _finish(self, ended: _Ended) -> None:
        """Best effort, bounded: the typed ``error`` event (unless closed on purpose), then the close frame."""
        fields = self._fields(ended.reason, ended.code)
        level = logging.INFO if ended.reason is EndReason.CLOSED else logging.WARNING
        log.log(level, "connection ended", extra={"fields": fields})
        try:
            async with asyncio.timeout(self._limits.close_timeout):
                if ended.reason is not EndReason.CLOSED:
                    await self._ws.send(self._error_frame(str(ended.reason), ended.message))
                await self._ws.close(ended.code, ended.reason if ended.reason != "closed" else "")
        except TimeoutError:
            log.info("close frame not taken by the client", extra={"fields": fields})
        except Exception as exc:  # the transport is already gone
            log.debug("close failed: %s", type(exc).__name__)


def set_unread_timeout(sock: socket.socket, seconds: float) -> bool:
    """Make the kernel drop connections whose peer reads nothing (or acknowledges nothing) for ``seconds``.

    Sets ``TCP_USER_TIMEOUT`` on ``sock``; on a listening socket, every accepted connection inherits it. The
    timed-out connection's pending writes fail with ``ETIMEDOUT`` and its socket is closed, so a client that
    stopped reading cannot pin a server socket (and its send buffer) after the application gave up on it.

    Returns:
        False where the platform has no ``TCP_USER_TIMEOUT`` (nothing was changed), True otherwise.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))
    return True
