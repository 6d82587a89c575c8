"""Thin ASGI helpers: an HTTP request/response pair and a WebSocket, straight on the ASGI callables.

No framework: the simulator is the baseline the gateway's benchmarks compare against, so each request costs
only what the protocol needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec

_T = TypeVar("_T")


class _ClientGone(Exception):
    """The client of an HTTP exchange disconnected."""


__all__ = [
    "DRAIN_SECONDS",
    "BodyTooLarge",
    "Disconnected",
    "HttpRequest",
    "Receive",
    "Scope",
    "Send",
    "WebSocket",
    "bearer_key",
    "dumps",
    "header_map",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_encoder = msgspec.json.Encoder()

#: How long a closed WebSocket keeps reading while its client answers the close.
DRAIN_SECONDS = 10.0


def dumps(obj: Any) -> bytes:
    """JSON-encode ``obj`` (UTF-8, no spaces, non-ASCII kept)."""
    return _encoder.encode(obj)


def header_map(scope: Scope) -> dict[str, str]:
    """The request headers, names lower-cased, repeated ones joined with ``, ``."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def bearer_key(headers: dict[str, str], query: dict[str, str] | None = None) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` (any case), else ``?api_key=`` when given."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if query is not None and query.get("api_key"):
        return query["api_key"]
    return None


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


class HttpRequest:
    """One HTTP request: read the body, then answer once or stream."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        self.headers = header_map(scope)
        self.started = False
        self.disconnected = False

    async def body(self, limit: int) -> bytes:
        """The whole request body.

        Raises:
            BodyTooLarge: it exceeds ``limit`` bytes.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                break
            data = message.get("body", b"")
            size += len(data)
            if size > limit:
                raise BodyTooLarge
            chunks.append(data)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def wait_disconnect(self) -> None:
        """Return when the client is gone (or the exchange is over)."""
        while not self.disconnected:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True

    async def unless_disconnected(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """Run ``work`` to its end, or until the client disconnects (``work`` is then cancelled).

        Returns ``work``'s result, or None when the client went away first.
        """
        result: _T | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self._gone())
                try:
                    result = await work
                finally:
                    watcher.cancel()
        except* _ClientGone:
            result = None
        return result

    async def _gone(self) -> None:
        await self.wait_disconnect()
        raise _ClientGone

    async def start(
        self, status: int, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Send the status line and headers of a streamed response."""
        raw = [(b"content-type", content_type.encode("latin-1"))]
        if headers:
            raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes, *, more: bool = True) -> None:
        """Send part of the body; ``more=False`` ends it."""
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with a complete body."""
        raw = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode("latin-1")),
        ]
        if headers:
            raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": raw})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def respond_json(
        self, status: int, obj: Any, headers: dict[str, str] | None = None
    ) -> None:
        """Answer with ``obj`` as JSON."""
        await self.respond(status, dumps(obj), "application/json", headers)


def _captured(data: str | bytes) -> Any:
    """A received frame as kept in ``frames_in``: JSON text decoded, anything else as it came."""
    if isinstance(data, str):
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError:
            return data
    return data


class Disconnected(Exception):
    """The WebSocket client went away."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class WebSocket:
    """One ASGI WebSocket connection, server side."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.path: str = scope["path"]
        self.query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        self.headers = header_map(scope)
        self.accepted = False
        self.closed = False
        self.gone = False
        self.client_close_code: int | None = None
        self.close_code: int | None = None
        #: When a list, every frame received is appended to it (text frames as decoded JSON when they are JSON).
        self.frames_in: list[Any] | None = None

    async def connect(self) -> None:
        """Consume the ``websocket.connect`` event.

        Raises:
            Disconnected: the client left before the handshake.
        """
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.gone = True
            raise Disconnected(message.get("code"))

    async def accept(self) -> None:
        self.accepted = True
        await self._send({"type": "websocket.accept"})

    async def reject(
        self, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        """Refuse the upgrade with an HTTP response (ASGI ``websocket.http.response``)."""
        self.closed = True
        self.close_code = status
        if "websocket.http.response" in self.scope.get("extensions", {}):
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", content_type.encode("latin-1")),
                        (b"content-length", str(len(body)).encode("latin-1")),
                    ],
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": body})
        else:  # the server answers 403 on its own
            await self._send({"type": "websocket.close", "code": 1008})

    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            Disconnected: the client closed or the connection was lost.
        """
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                data: str | bytes = (
                    str(text) if text is not None else bytes(message.get("bytes") or b"")
                )
                if self.frames_in is not None:
                    self.frames_in.append(_captured(data))
                return data
            if kind == "websocket.disconnect":
                self.gone = True
                self.client_close_code = message.get("code")
                raise Disconnected(self.client_close_code)

    async def send_text(self, text: str) -> None:
        if not (self.closed or self.gone):
            await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        if not (self.closed or self.gone):
            await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once; nothing when the client is already gone)."""
        if self.closed or self.gone or not self.accepted:
            return
        self.closed = True
        self.close_code = code
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def drain(self, within: float) -> None:
        """After the server's close: consume what the client still sends until it is gone.

        The ASGI server's per-connection queue is bounded; a client still sending after the application stopped
        reading would block the server's reader and keep the TCP connection open. Gives up after ``within``.
        """
        if not self.accepted or self.gone:
            return
        try:
            async with asyncio.timeout(within):
                while True:
                    await self.receive()
        except (Disconnected, TimeoutError):
            pass

    async def close_soon(self, code: int, within: float = 1.0) -> None:
        """:meth:`close`, giving up after ``within`` seconds (for cleanup paths)."""
        try:
            async with asyncio.timeout(within):
                await self.close(code)
        except TimeoutError:
            pass
