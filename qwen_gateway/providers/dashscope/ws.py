"""The WebSocket plumbing shared by the streaming recognisers and synthesisers.

:func:`open_ws` connects with the key in the handshake's ``Authorization`` header, explicit open/close timeouts,
a frame size limit and no pings; it makes one attempt. :func:`open_session` builds a session on that socket and
runs its opening exchange, and :func:`session_scope` retries a whole session start (handshake and opening
exchange together, with :meth:`~.policy.Backoff.run`) and closes the session when its block is left.

:class:`WsSession` is the base of one upstream session: it owns the socket and a reader task (created and
cancelled by the session itself) that hands every received message to the subclass, records the first failure
as an :class:`UpstreamError` that later calls re-raise, and enforces an idle timeout while an answer is expected.
:class:`TaskSession` adds the task protocol of ``api-ws/v1/inference`` (``run-task`` ... ``finish-task``, the
``task-*`` events); :class:`PcmQueue` carries a synthesiser's audio from the reader to the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from ...errors import UpstreamError, UpstreamTimeout, detached
from ...logs import upstream_fields
from ..base import PcmChunk
from . import errors
from .policy import Backoff, Timeouts

__all__ = [
    "PcmQueue",
    "TaskEvent",
    "TaskHeader",
    "TaskSession",
    "WsSession",
    "open_session",
    "open_ws",
    "session_scope",
    "task_event_decoder",
]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


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
    workspace: str = "",
) -> ClientConnection:
    """Connect to ``url`` once (callers retry with :meth:`Backoff.run`); with ``workspace`` the handshake carries
    ``X-DashScope-WorkSpace`` (as the SDK sends it).

    Raises:
        UpstreamError: the handshake was rejected (401 ``invalid_api_key``, 403 ``access_denied``, 429, 5xx ...)
            or the connection failed (``transient``).
        UpstreamTimeout: the handshake took longer than ``timeouts.connect``.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if workspace:
        headers["X-DashScope-WorkSpace"] = workspace
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=timeouts.connect,
            close_timeout=timeouts.close,
            max_size=max_size,
            ping_interval=None,
            # permessage-deflate keeps about 1 MB of zlib state per connection (seen in the 1000-session
            # bench): per-turn memory matters more here than the bandwidth it saves on base64 PCM.
            compression=None,
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


def _handshake_request_id(ws: Any) -> str:
    """``x-request-id`` of the WebSocket handshake's answer ("" when the upstream sent none)."""
    response = getattr(ws, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return ""
    return str(headers.get("x-request-id") or "")[:128]


class WsSession:
    """One upstream WebSocket session with its reader task.

    Subclasses implement :meth:`_on_message` (return True when the exchange is complete), :meth:`_on_end`
    (wake consumers: the exchange completed, or failed with the recorded error) and :meth:`_send_finish` (tell
    the upstream no more input comes), and may override :meth:`_expecting` (is an answer due, so that silence
    counts against the idle timeout?) and :meth:`_close_is_end` (does a clean close by the upstream end the
    exchange normally?).
    """

    _what = "websocket"

    def __init__(self, ws: ClientConnection, timeouts: Timeouts) -> None:
        self._ws = ws
        self._timeouts = timeouts
        #: the upstream's id of this exchange, for log lines: the handshake's ``x-request-id`` when it sent one;
        #: subclasses replace it with what the protocol names the exchange by (task id, session id)
        self.upstream_id = _handshake_request_id(ws)
        self._loop = asyncio.get_running_loop()
        self._error: UpstreamError | None = None
        self._complete = False
        self._reader: asyncio.Task[None] | None = None
        self._last_activity = self._loop.time()
        self._timer: asyncio.Timeout | None = None
        self._finishing = False

    # --- hooks -------------------------------------------------------------------------------------------
    async def _on_message(self, message: str | bytes) -> bool:
        raise NotImplementedError

    def _on_end(self) -> None:
        raise NotImplementedError

    async def _send_finish(self) -> None:
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
            if error.request_id is None:
                error.request_id = self.upstream_id or None
            self._error = detached(error)
            log.info(
                "%s failed: status=%s code=%s",
                self._what,
                error.status,
                error.code,
                extra=upstream_fields(self._what, self.upstream_id),
            )
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
            raise detached(self._error)

    def _check_input(self, call: str) -> None:
        """Before more input is sent: raise the recorded failure, or ``RuntimeError`` after :meth:`finish`."""
        self._check_open()
        if self._finishing:
            raise RuntimeError(f"{call}() after finish()")

    async def finish(self) -> None:
        """No more input: the upstream answers what is left (the last sentences, the rest of the speech), then
        the session's output ends. Later calls do nothing."""
        if self._finishing:
            return
        self._finishing = True
        await self._send_finish()
        self._touch()

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
            raise (
                detached(self._error) if self._error else errors.closed_error(self._what)
            ) from None

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


class TaskHeader(msgspec.Struct):
    """The ``header`` of an event on the task WebSocket (``api-ws/v1/inference``)."""

    event: str = ""
    task_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class TaskEvent(msgspec.Struct):
    """An event on the task WebSocket, read for its header only (subclasses add the ``payload`` they read)."""

    header: TaskHeader


EventT = TypeVar("EventT", bound=TaskEvent)

#: Decodes the events of a task whose payloads are not read.
task_event_decoder = msgspec.json.Decoder(TaskEvent)


class TaskSession(WsSession):
    """One task on the task WebSocket: ``run-task`` and ``task-started``, commands, ``finish-task``, then
    ``task-finished`` or ``task-failed``.

    Subclasses decode their events with :meth:`_decode_event`, handle their own (results, audio) and hand the
    rest to :meth:`_task_event`; their :meth:`_on_end` calls this one.
    """

    def __init__(self, ws: ClientConnection, timeouts: Timeouts, task_id: str) -> None:
        super().__init__(ws, timeouts)
        self.task_id = task_id
        self.upstream_id = task_id  # the task WebSocket names every event of the exchange by it
        self._started = asyncio.Event()

    # --- reader side ----------------------------------------------------------------------------------
    def _decode_event(self, message: str, decoder: msgspec.json.Decoder[EventT]) -> EventT | None:
        """The event in ``message``; None for a stale event of an earlier task on this socket.

        Raises:
            UpstreamError: the message is not a task event (``malformed``).
        """
        try:
            event = decoder.decode(message)
        except msgspec.DecodeError:
            raise errors.malformed(self._what) from None
        task_id = event.header.task_id
        if task_id and task_id != self.task_id:
            return None
        return event

    def _task_event(self, header: TaskHeader) -> bool:
        """Handle a lifecycle event; True when the task has finished.

        Raises:
            UpstreamError: ``task-failed``, with the upstream's code and message.
        """
        name = header.event
        if name == "task-started":
            self._started.set()
            return False
        if name == "task-finished":
            return True
        if name == "task-failed":
            raise errors.from_task_failed(header.error_code, header.error_message)
        return False

    def _on_end(self) -> None:
        self._started.set()

    # --- caller side ----------------------------------------------------------------------------------
    async def _command(self, action: str, payload: dict[str, object]) -> None:
        """Send ``action`` (``run-task``, ``continue-task``, ``finish-task``) for this task."""
        await self._send(
            _encoder.encode(
                {
                    "header": {"action": action, "task_id": self.task_id, "streaming": "duplex"},
                    "payload": payload,
                }
            ).decode()
        )

    async def _run_task(self, payload: dict[str, object]) -> None:
        """Send ``run-task`` with ``payload`` and wait for ``task-started`` (at most ``timeouts.connect``).

        Raises:
            UpstreamError: ``task-failed`` (bad model, voice, throttled ...), the connection broke, or no
                ``task-started`` in time (``upstream_timeout``, transient).
        """
        await self._command("run-task", payload)
        try:
            async with asyncio.timeout(self._timeouts.connect):
                await self._started.wait()
        except TimeoutError:
            raise UpstreamError(
                f"{self._what}: upstream did not start the task in time",
                code="upstream_timeout",
                status=504,
                transient=True,
            ) from None
        self._check_open()
        if self._complete:
            raise errors.closed_error(self._what)

    async def _send_finish(self) -> None:
        await self._command("finish-task", {"input": {}})


class PcmQueue:
    """PCM on its way from a synthesis session's reader to the caller.

    Bounded: while it is full the reader waits, so the upstream is not read (backpressure). Ending it never
    blocks and never drops audio: a full queue means the consumer is not waiting, and it sees the end once it
    has drained the queue.
    """

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[PcmChunk | None] = asyncio.Queue(maxsize)
        self._ended = False

    async def put(self, chunk: PcmChunk) -> None:
        """Hand on ``chunk``; waits while the queue is full."""
        await self._queue.put(chunk)

    def end(self) -> None:
        """No more chunks will come."""
        self._ended = True
        if not self._queue.full():
            self._queue.put_nowait(None)

    async def get(self) -> PcmChunk | None:
        """The next chunk; None once the queue has ended and is drained."""
        queue = self._queue
        while True:
            if self._ended and queue.empty():
                return None
            chunk = await queue.get()
            if chunk is not None:
                return chunk


SessionT = TypeVar("SessionT", bound=WsSession)


async def open_session(
    url: str,
    *,
    api_key: str,
    timeouts: Timeouts,
    what: str,
    make: Callable[[ClientConnection], SessionT],
    start: Callable[[SessionT], Awaitable[None]],
    workspace: str = "",
    ws: ClientConnection | None = None,
) -> SessionT:
    """Connect to ``url`` once (with ``workspace``: see :func:`open_ws`; or take ``ws``, a socket opened earlier),
    build the session ``make`` returns for
    the socket, start its reader and run ``start`` (the protocol's opening exchange). On any failure,
    cancellation included, the session is closed before the error propagates.

    Raises:
        UpstreamError: as :func:`open_ws`, or what ``start`` raised.
    """
    if ws is None:
        ws = await open_ws(url, api_key=api_key, timeouts=timeouts, what=what, workspace=workspace)
    session = make(ws)
    try:
        session._start_reader()
        await start(session)
    except BaseException:
        await session._shutdown()
        raise
    return session


@asynccontextmanager
async def session_scope(
    backoff: Backoff, open: Callable[[], Awaitable[SessionT]], what: str
) -> AsyncIterator[SessionT]:
    """A block around the session ``open`` returns: ``open`` is retried on transient failures (refused
    connection, 429/5xx handshake, throttled start), and leaving the block closes the session.

    Raises (on entering):
        UpstreamError: the last attempt's failure, or the first one that is not transient.
    """
    session = await backoff.run(open, f"{what} session start")
    try:
        yield session
    finally:
        await session._shutdown()
