"""Small fixes to Hypercorn 0.18 (and wsproto 1.3) internals that no configuration reaches.

Each fix names the internal it replaces; :func:`install` applies them once per process (idempotent) and
:func:`configure` puts the gateway's settings on a Hypercorn ``Config``. Tests in
``tests/gateway/test_hypercorn_fixes.py`` drive each one through a real socket.

Internals patched (check them when Hypercorn or wsproto is upgraded):

``hypercorn.protocol.h11.WSStream`` and ``hypercorn.protocol.h2.WSStream``
    replaced by :class:`GatewayWSStream`, a subclass overriding ``handle``, ``app_send``, ``_accept`` and
    ``_handle_events``:

    * **compression** (``QG_WS_COMPRESSION``): Hypercorn always accepts a client's ``permessage-deflate``
      offer. Off (the default), the offer is declined; on, the negotiated ``wsproto.extensions.
      PerMessageDeflate`` becomes a :class:`BoundedPerMessageDeflate` that inflates at most
      ``websocket_max_message_size`` bytes of one message (the rest of the input is never inflated) and fails
      the connection with 1009 beyond. wsproto's own inflates each received chunk whole: 1 MiB of deflated
      zeros became 1 GiB in one call.
    * **failing the connection** (RFC 6455 §7.1.7): when wsproto cannot parse the stream (invalid UTF-8 in a
      text message: 1007, a protocol error: 1002, a failed inflation: 1007/1009) Hypercorn dropped the TCP
      connection without a close frame (the client saw 1006). The close frame with wsproto's code is now sent
      first, and the connection closes after the linger time (below).
    * **oversized messages**: beyond ``websocket_max_message_size`` Hypercorn sent close 1009 but kept
      buffering the rest of the message, stopped reading events at the first chunk of every read, and never
      closed the stream itself: the client's answering close frame could stay unread and the socket open
      until the client gave up. Now the rest of the message is dropped, the client's close frame completes
      the handshake and closes the connection, and without one it closes after the linger time.
    * **lingering close**: after our close frame (one of the above, or, on servers configured by
      :func:`configure`, the application's own: ``app_send``), Hypercorn closed the
      TCP connection at once; data the client was still sending then made the kernel answer with a reset,
      which also discards what the client had not read yet (a client still sending lost our close frame and
      saw 1006). Now the stream stays open, dropping what still arrives, until the client's close frame
      (RFC 6455 §7.1.1: the server closes the TCP connection after the handshake) or the TCP close, for at
      most ``qg_linger_timeout`` seconds (``FAILED_LINGER`` after a parse failure, where the client's close
      frame cannot be recognised).

``hypercorn.asyncio.tcp_server.TCPServer._close`` and ``TCPServer.protocol_send``
    wrapped: an ``OSError`` while writing or closing (``ETIMEDOUT`` after the kernel dropped a stuck client
    under ``TCP_USER_TIMEOUT``, say) ends the connection like the ``ConnectionError`` Hypercorn expects, with
    one INFO line per connection, not unhandled-exception tracebacks at ERROR ("Error in ASGI Framework"
    from the application's last send, and the server callback's own).

``hypercorn.asyncio.tcp_server.TCPServer._read_data``
    wrapped: once the peer has closed (EOF) the keep-alive idle timer is stopped. Hypercorn left it running,
    and its task group waited for it before closing the socket: every HTTP client that closed a keep-alive
    connection left a CLOSE-WAIT socket for ``keep_alive_timeout`` seconds.

``hypercorn.asyncio.tcp_server.TCPServer.run``
    wrapped: once the connection is over its ``protocol`` is dropped, and so is the traceback of the error a
    reset connection left in its stream reader. The protocol holds the server's bound ``protocol_send``,
    and that error's traceback the server's own frames: reference cycles that left every closed (or dropped)
    connection, its stream and its buffers, to the garbage collector's passes, which stall the event loop for
    as long as they walk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Any

from hypercorn.asyncio import tcp_server
from hypercorn.config import Config
from hypercorn.events import Closed
from hypercorn.protocol import h2 as hypercorn_h2
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.events import Body, Data, StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode

__all__ = ["BoundedPerMessageDeflate", "GatewayWSStream", "configure", "install"]

log = logging.getLogger("qwen_gateway.server")

#: Seconds a closing WebSocket keeps reading (and dropping) what the client still sends (default).
LINGER_TIMEOUT = 2.0
#: ... and after a stream wsproto could not parse (1002, 1007), where the client's close frame goes unseen.
FAILED_LINGER = 0.25


def configure(config: Config, *, compression: bool, linger_timeout: float = LINGER_TIMEOUT) -> None:
    """Put the gateway's settings on ``config`` (read by :class:`GatewayWSStream` and the TCP fixes)."""
    config.qg_ws_compression = compression  # type: ignore[attr-defined]
    config.qg_linger_timeout = linger_timeout  # type: ignore[attr-defined]


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's ``permessage-deflate`` whose inflation of one message stops at ``max_message`` bytes.

    ``zlib``'s ``max_length`` bounds each call, so a compression bomb costs at most ``max_message`` bytes of
    memory and the time to inflate them; beyond, the connection fails with 1009 (``MESSAGE_TOO_BIG``).
    """

    max_message: int = 16 * 1024 * 1024
    _inflated: int = 0

    @classmethod
    def bound(cls, connection: Connection, max_message: int) -> None:
        """Make the negotiated ``PerMessageDeflate`` of ``connection`` (if any) a bounded one, in place."""
        for ext in connection._proto.extensions:
            if type(ext) is PerMessageDeflate:
                # Same state, bounded inbound methods (the instance is shared by wsproto's encoder and
                # decoder, so it is changed in place rather than replaced).
                ext.__class__ = cls
                assert isinstance(ext, cls)
                ext.max_message = max_message
                ext._inflated = 0

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: Any, payload_length: int
    ) -> Any:
        if opcode is not Opcode.CONTINUATION and not opcode.iscontrol():
            self._inflated = 0  # a new message
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        room = self.max_message - self._inflated
        try:
            out = self._decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if len(out) > room or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return super().frame_inbound_complete(proto, fin)
        data = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(data, CloseReason):
            return data
        no_context_takeover = (
            self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        )
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return data


class GatewayWSStream(WSStream):
    """Hypercorn's WebSocket stream with the fixes listed in the module docstring."""

    _failed = False  # wsproto could not parse the stream: what still arrives is dropped unread
    _lingering: asyncio.Event | None = None  # set once the stream is closed

    async def handle(self, event: Any) -> None:
        if self._failed and isinstance(event, Body | Data):
            return
        await super().handle(event)
        if self.closed and self._lingering is not None:
            self._lingering.set()

    async def app_send(self, message: Any) -> None:
        if (
            message is None
            and not self.closed
            and self.state is ASGIWebsocketState.CLOSED
            and self.connection.state is ConnectionState.LOCAL_CLOSING
            and hasattr(self.config, "qg_linger_timeout")  # servers configured by the gateway only
        ):
            self._linger()  # the application closed and returned: wait for the client's close frame
            return
        await super().app_send(message)

    def _linger(self) -> None:
        """Close the stream when the client's close frame (or TCP close) comes, or after the linger time."""
        if self._lingering is None:
            self._lingering = asyncio.Event()
            self.task_group.spawn(self._close_after_linger)

    async def _close_after_linger(self) -> None:
        assert self._lingering is not None
        seconds = float(getattr(self.config, "qg_linger_timeout", LINGER_TIMEOUT))
        if self._failed:
            # The client's close frame cannot be recognised in a stream wsproto gave up on: give the client
            # the time to read ours, not the whole linger time (it waits for us to close the TCP connection).
            seconds = min(seconds, FAILED_LINGER)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._lingering.wait()
        if not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def _accept(self, message: Any) -> None:
        handshake = self.handshake
        if not getattr(self.config, "qg_ws_compression", False):
            handshake.extensions = None  # the client's permessage-deflate offer is declined
        else:
            accept = handshake.accept
            limit = self.config.websocket_max_message_size

            def bounded_accept(subprotocol: Any, headers: Any) -> Any:
                status, out, connection = accept(subprotocol, headers)
                BoundedPerMessageDeflate.bound(connection, limit)  # before any frame is parsed
                return status, out, connection

            handshake.accept = bounded_accept  # type: ignore[method-assign,assignment]
        await super()._accept(message)

    async def _handle_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, Message):
                if self.connection.state is not ConnectionState.OPEN:
                    continue  # we sent our close frame: the rest of the message is not kept
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    self.buffer.clear()
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    self._linger()
                    continue
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())  # type: ignore[misc]
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                state = self.connection.state
                if state is ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                elif state is not ConnectionState.CLOSED:
                    # Not a close frame from the client: wsproto failed to parse the stream. Fail the
                    # connection (RFC 6455 §7.1.7): our close frame with its code (unless one was sent),
                    # then, after the linger time or the client's TCP close, the TCP connection.
                    if state is ConnectionState.OPEN:
                        await self._send_wsproto_event(CloseConnection(code=event.code))
                    self._failed = True
                    self._linger()
                    return
                await self.send(StreamClosed(stream_id=self.stream_id))
                return


_original_run = tcp_server.TCPServer.run
_original_read_data = tcp_server.TCPServer._read_data
_original_close = tcp_server.TCPServer._close
_original_protocol_send = tcp_server.TCPServer.protocol_send


async def _run(self: tcp_server.TCPServer) -> None:
    try:
        await _original_run(self)
    finally:
        # The connection is over: drop its protocol, which holds this server's bound protocol_send (a reference
        # cycle that left every closed connection, its buffers and its stream objects, to the garbage
        # collector; tests/voice_ws/test_turn_garbage.py).
        self.__dict__.pop("protocol", None)
        # A reset connection leaves its error in the stream reader; that error's traceback holds the frames of
        # this server's close and send (directly, or as the callers of the transport's write), and so the
        # server again: a cycle per dropped client. Nothing reads that traceback once the connection is over.
        error = self.reader.exception()
        if error is not None:
            error.__traceback__ = None


async def _read_data(self: tcp_server.TCPServer) -> None:
    try:
        await _original_read_data(self)
    finally:
        # The peer is gone: nothing will use the keep-alive timer, and Hypercorn's task group would wait
        # for it (keep_alive_timeout seconds) before closing the socket.
        await self.idle_task.stop()


def _dropped(self: tcp_server.TCPServer, exc: OSError) -> None:
    if not getattr(self, "_qg_dropped", False):
        self._qg_dropped = True  # type: ignore[attr-defined]
        log.info(
            "client connection dropped",
            extra={"fields": {"error": type(exc).__name__, "errno": exc.errno}},
        )


async def _protocol_send(self: tcp_server.TCPServer, event: Any) -> None:
    try:
        await _original_protocol_send(self, event)
    except OSError as exc:  # Hypercorn handles ConnectionError only; ETIMEDOUT is an OSError too
        _dropped(self, exc)
        await self.protocol.handle(Closed())


async def _close(self: tcp_server.TCPServer) -> None:
    try:
        await _original_close(self)
    except OSError as exc:
        _dropped(self, exc)


def install() -> None:
    """Apply the fixes (once per process; later calls do nothing)."""
    hypercorn_h11.WSStream = GatewayWSStream  # type: ignore[attr-defined]
    hypercorn_h2.WSStream = GatewayWSStream  # type: ignore[attr-defined]
    tcp_server.TCPServer.run = _run  # type: ignore[method-assign]
    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]
    tcp_server.TCPServer._close = _close  # type: ignore[method-assign]
    tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
