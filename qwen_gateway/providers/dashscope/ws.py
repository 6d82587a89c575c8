"""The WebSocket plumbing shared by the streaming recognisers and synthesisers.

:func:`open_ws` connects with the key in the handshake's ``Authorization`` header, explicit open/close timeouts,
a frame size limit and no pings; it makes one attempt (the clients retry a whole session start, handshake and
task start together, with :meth:`~.policy.Backoff.run`).

:class:`WsSession` is the base of one upstream session: it owns the socket and a reader task (created and
cancelled by the session itself) that hands every received message to the subclass, records the first failure
as an :class:`UpstreamError` that later calls re-raise, and enforces an idle timeout while an answer is expected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from ...errors import UpstreamError, UpstreamTimeout
from . import errors
from .policy import Timeouts

__all__ = ["WsSession", "open_ws"]

log = logging.getLogger(__name__)


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The websockets library's logger with keys masked (its DEBUG output shows the handshake headers)."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            clean = tuple(errors.redact(a) if isinstance(a, str) else a for a in args)
            self.logger.log(level, msg, *clean, **kwargs)


#: websockets logs through this (``qwen_gateway.providers.dashscope.wire``), keys masked.
wire_log = _RedactingLogger(logging.getLogger("qwen_gateway.providers.dashscope.wire"), {})

#: Largest message accepted from the upstream (TTS deltas are base64 PCM, ~10 KB each).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


async def open_ws(
    url: str,
    *,
    api_key: str,
    timeouts: Timeouts,
    what: str,
    max_size: int = MAX_MESSAGE_BYTES,
) -> ClientConnection:
    """Connect to ``url`` once (callers retry with :meth:`Backoff.run`).

    Raises:
        UpstreamError: the handshake was rejected (401 ``invalid_api_key``, 403 ``access_denied``, 429, 5xx ...)
            or the connection failed (``transient``).
        UpstreamTimeout: the handshake took longer than ``timeouts.connect``.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=timeouts.connect,
            close_timeout=timeouts.close,
            max_size=max_size,
            ping_interval=None,
            user_agent_header="qwen-gateway",
            logger=wire_log,
        )
    except InvalidStatus as exc:
        raise errors.from_handshake(
            exc.response.status_code, bytes(exc.response.body or b"")
        ) from None
    except InvalidURI as exc:
        raise UpstreamError(
            f"{what}: invalid upstream URL", code="upstream_misconfigured", status=502
        ) from exc
    except InvalidHandshake as exc:
        raise UpstreamError(
            f"{what}: WebSocket handshake failed ({type(exc).__name__})",
            code="upstream_error",
            status=502,
        ) from None
    except (TimeoutError, OSError) as exc:
        raise errors.from_transport(exc, f"{what} connect") from None


class WsSession:
    """One upstream WebSocket session with its reader task.

    Subclasses implement :meth:`_on_message` (return True when the exchange is complete) and :meth:`_on_end`
    (wake consumers: the exchange completed, or failed with the recorded error), and may override
    :meth:`_expecting` (is an answer due, so that silence counts against the idle timeout?) and
    :meth:`_close_is_end` (does a clean close by the upstream end the exchange normally?).
    """

    _what = "websocket"

    def __init__(self, ws: ClientConnection, timeouts: Timeouts) -> None:
        self._ws = ws
        self._timeouts = timeouts
        self._loop = asyncio.get_running_loop()
        self._error: UpstreamError | None = None
        self._complete = False
        self._reader: asyncio.Task[None] | None = None
        self._last_activity = self._loop.time()
        self._timer: asyncio.Timeout | None = None

    # --- hooks -------------------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        raise NotImplementedError

    def _on_end(self) -> None:
        raise NotImplementedError

    def _expecting(self) -> bool:
        return True

    def _close_is_end(self) -> bool:
        return False

    # --- reader ------------------------------------------------------------------------------------------
    def _start_reader(self) -> None:
        self._reader = self._loop.create_task(self._read_loop(), name=f"{self._what}-reader")

    def _deadline(self) -> float | None:
        if not self._expecting():
            return None
        return self._last_activity + self._timeouts.read

    def _touch(self) -> None:
        """We sent something that calls for an answer: (re)start the idle clock."""
        self._last_activity = self._loop.time()
        timer = self._timer
        if timer is not None and timer.when() is None:
            timer.reschedule(self._deadline())

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
            log.info("%s failed: status=%s code=%s", self._what, error.status, error.code)
            self._on_end()

    def _finish(self) -> None:
        if self._error is None and not self._complete:
            self._complete = True
            self._on_end()

    async def _recv(self) -> str | bytes:
        while True:
            try:
                async with asyncio.timeout_at(self._deadline()) as timer:
                    self._timer = timer
                    try:
                        return await self._ws.recv()
                    finally:
                        self._timer = None
            except TimeoutError:
                deadline = self._deadline()
                if deadline is not None and self._loop.time() >= deadline:
                    raise UpstreamTimeout(
                        f"{self._what}: no answer from upstream for {self._timeouts.read:g}s"
                    ) from None

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self._recv()
                self._last_activity = self._loop.time()
                if await self._on_message(message):
                    self._finish()
                    return
        except ConnectionClosedOK:
            if self._close_is_end():
                self._finish()
            else:
                self._fail(errors.closed_error(self._what))
        except ConnectionClosed:
            self._fail(errors.closed_error(self._what))
        except UpstreamError as err:
            self._fail(err)
        except asyncio.CancelledError:
            self._fail(
                UpstreamError(f"{self._what}: session closed", code="session_closed", status=499)
            )
            raise
        except Exception:
            log.exception("%s: unexpected failure while reading", self._what)
            self._fail(errors.malformed(self._what))

    # --- sending -----------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error

    async def _send(self, data: str | bytes) -> None:
        self._check_open()
        try:
            async with asyncio.timeout(self._timeouts.write):
                await self._ws.send(data)
        except TimeoutError:
            err = UpstreamTimeout(f"{self._what}: upstream did not accept data in time")
            self._fail(err)
            raise err from None
        except ConnectionClosed:
            # The reader usually knows why (task-failed, an error event): let it record the reason.
            reader = self._reader
            if reader is not None and not reader.done():
                await asyncio.wait({reader}, timeout=self._timeouts.close)
            raise (self._error or errors.closed_error(self._what)) from None

    # --- shutdown ----------------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Stop the reader and close the socket (closing handshake, bounded by ``timeouts.close``)."""
        reader = self._reader
        try:
            if reader is not None and not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
        finally:
            try:
                await self._ws.close()
            except BaseException:
                self._ws.transport.abort()
                raise
