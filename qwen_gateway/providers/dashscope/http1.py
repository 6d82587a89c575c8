"""The chat upstream's HTTP transport: a lean HTTP/1.1 keep-alive pool, and the same interface over httpx.

:class:`Http1Pool` keeps connections per origin (``http`` and ``https``) and runs one request at a time on each.
Response bodies may be framed by ``Content-Length``, by the chunked transfer coding or by the end of the
connection (no other transfer coding: like h11, the pool refuses ``Transfer-Encoding: gzip, chunked``);
``gzip`` and ``deflate`` content codings are decoded, a bounded piece at a time. :class:`HttpxTransport` offers the
same interface over an ``httpx.AsyncClient`` (the factory uses it when the environment names an HTTP proxy, which
only httpx honours), with the same decoding.

Both are bounded: a response head is at most 64 KiB, ``read(limit)`` refuses a body over ``limit`` bytes (once
decompressed), and one ``receive()`` decompresses at most 256 KiB, however small the compressed piece was. What
the body is made of (SSE lines and events) is bounded by its reader.

Failures of the connection are raised as httpx's transport exceptions, so callers map both transports the same
way; an answer the transport refuses (over a limit, a body that does not decompress) is an
:class:`~qwen_gateway.errors.UpstreamError` (``upstream_response_too_large``, ``upstream_bad_response``)::

    httpx.TransportError
    ├── ConnectError, ConnectTimeout, PoolTimeout     nothing was sent
    ├── WriteError, WriteTimeout                      the request could not be sent in time
    ├── ReadError, ReadTimeout                        the connection failed, or went silent for ``read`` seconds
    ├── RemoteProtocolError                           the upstream broke HTTP/1.1 or hung up mid-response
    └── LocalProtocolError                            a header value cannot be sent (CR, LF, NUL, non-Latin-1)

Closing a response before its end (or cancelling the task reading it) closes its connection; a response read to
its end gives its connection back to the pool at once.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httpx

from . import errors
from .policy import Timeouts

__all__ = [
    "Endpoint",
    "Http1Pool",
    "Http1Response",
    "HttpxTransport",
    "RequestHeaders",
    "UpstreamResponse",
    "UpstreamTransport",
    "read_httpx_body",
]

_MAX_HEAD = 64 * 1024  # response line + headers
_READ_HIGH = 256 * 1024  # received bytes buffered before the socket is no longer read
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?:[ \t].*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²" and "٣"
_DECODE_STEP = 256 * 1024  # decompressed bytes one receive() returns at most
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed request URL: where to connect and what to put in the request line and ``Host``."""

    url: str
    tls: bool
    host: str
    port: int
    target: bytes
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse an ``http://`` or ``https://`` URL.

        Raises:
            ValueError: another scheme, no host, or a bad port.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in URL: {url!r}")
        tls = scheme == "https"
        default = 443 if tls else 80
        port = parts.port or default
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        return cls(url, tls, host, port, target.encode("ascii"), host_header.encode("ascii"))

    @property
    def origin(self) -> tuple[bool, str, int]:
        return (self.tls, self.host, self.port)


class RequestHeaders:
    """Request headers, checked and rendered once (``Host`` and ``Content-Length`` are added per request).

    Raises:
        httpx.LocalProtocolError: a name is not an HTTP token, or a value holds CR, LF, NUL or non-Latin-1 text.
    """

    __slots__ = ("block", "items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        lines: list[bytes] = []
        for name, value in pairs:
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise httpx.LocalProtocolError(f"illegal header {name!r}")
            try:
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
            except UnicodeEncodeError:
                raise httpx.LocalProtocolError(f"illegal header {name!r}") from None
        #: the (name, value) pairs, in order.
        self.items: tuple[tuple[str, str], ...] = tuple(pairs)
        #: the rendered ``Name: value\r\n`` lines.
        self.block: bytes = b"".join(lines)


class UpstreamResponse(Protocol):
    """A response whose head was received; the body is read with :meth:`receive` or :meth:`read`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Header values by lower-case name (repeated headers joined with ``", "``)."""
        ...

    @property
    def complete(self) -> bool:
        """The whole body was received."""
        ...

    async def receive(self) -> bytes:
        """The next piece of the (decoded) body as it arrives; ``b""`` once the body is complete."""
        ...

    async def read(self, limit: int) -> bytes:
        """The rest of the body, at most ``limit`` bytes.

        Raises:
            UpstreamError: ``upstream_response_too_large`` when the body is longer (the connection is dropped).
        """
        ...

    async def aclose(self) -> None:
        """Release the response; before its end this closes the connection. Idempotent."""
        ...


class UpstreamTransport(Protocol):
    """Sends one request and returns its response once the head arrived."""

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        headers: RequestHeaders,
        body: bytes,
        timeouts: Timeouts,
    ) -> UpstreamResponse:
        """Send ``method`` with ``body`` to ``endpoint``; ``timeouts.connect`` also bounds the wait for a
        connection of the pool, ``timeouts.read`` the wait for every received piece.

        Raises:
            httpx.TransportError: see the module's docstring.
        """
        ...

    async def aclose(self) -> None:
        """Close what the transport owns."""
        ...


# ---------------------------------------------------------------------------------------------- connection
class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: received bytes are buffered until :meth:`read` takes them."""

    def __init__(self, origin: tuple[bool, str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _READ_HIGH and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(httpx.WriteError(_describe(exc, "connection lost")))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # use
    def reusable(self, now: float, expiry: float) -> bool:
        """Idle, open, nothing unexpected received, and not idle for longer than ``expiry`` seconds."""
        t = self._transport
        return (
            t is not None
            and not self._eof
            and not self._chunks
            and not t.is_closing()
            and now - self.idle_since < expiry
        )

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        if self._eof and self._error is not None:
            raise httpx.WriteError(_describe(self._error, "connection lost"))
        self._transport.write(data)

    async def drain(self, limit: float) -> None:
        """Wait until the kernel took what was written (flow control), at most ``limit`` seconds."""
        if not self._write_paused:
            return
        fut = self._loop.create_future()
        self._drain = fut
        timer = self._loop.call_later(limit, _expire, fut, httpx.WriteTimeout, "write timed out")
        try:
            await fut
        finally:
            timer.cancel()
            self._drain = None

    async def read(self, idle: float) -> bytes:
        """What arrived since the last call (waiting at most ``idle`` seconds for some); ``b""`` at EOF."""
        if not self._chunks:
            if not self._eof:
                fut = self._loop.create_future()
                self._waiter = fut
                timer = self._loop.call_later(
                    idle, _expire, fut, httpx.ReadTimeout, "read timed out"
                )
                try:
                    await fut
                finally:
                    timer.cancel()
                    self._waiter = None
            if not self._chunks:
                if self._error is not None:
                    raise httpx.ReadError(_describe(self._error, "connection lost"))
                return b""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._read_paused and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def close(self) -> None:
        """Drop the connection now (nothing more is sent or read)."""
        t = self._transport
        if t is not None and not t.is_closing():
            t.abort()
        self._eof = True


def _expire(fut: asyncio.Future[None], exc_type: type[httpx.TransportError], message: str) -> None:
    if not fut.done():
        fut.set_exception(exc_type(message))


def _describe(exc: BaseException | None, default: str) -> str:
    if exc is None:
        return default
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---------------------------------------------------------------------------------------------- framing
class _Chunked:
    """Incremental decoder of the chunked transfer coding."""

    __slots__ = ("_need", "_state", "_tail", "done", "extra")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self.done = False
        #: bytes received after the last chunk's trailer (a broken upstream; the connection is not reused).
        self.extra = False
        self._state = self._SIZE
        self._need = 0
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        """Decode ``data``; return the payload bytes it completed (possibly none)."""
        if self._tail:
            data = self._tail + data
            self._tail = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._need, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._need -= take
                if self._need == 0:
                    self._state = self._DATA_END
            elif state == self._DATA_END:  # the CRLF after a chunk's data
                if data.startswith(b"\r\n", pos):
                    pos += 2
                elif data.startswith(b"\n", pos):
                    pos += 1
                elif data[pos:] == b"\r":
                    self._tail = b"\r"
                    break
                else:
                    raise httpx.RemoteProtocolError("malformed chunked body")
                self._state = self._SIZE
            else:  # a size line or a trailer line
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if n - pos > 4096:
                        raise httpx.RemoteProtocolError("chunk size line too long")
                    self._tail = data[pos:]
                    break
                line = data[pos:nl].rstrip(b"\r")
                pos = nl + 1
                if state == self._SIZE:
                    size_text = line.split(b";", 1)[0].strip(b" \t")
                    if not _HEX.fullmatch(size_text):
                        raise httpx.RemoteProtocolError("malformed chunk size")
                    size = int(size_text, 16)
                    if size == 0:
                        self._state = self._TRAILER
                    else:
                        self._need = size
                        self._state = self._DATA
                elif not line:  # the empty line after the trailers
                    self.done = True
        if self.done and pos < n:
            self.extra = True
        return out[0] if len(out) == 1 else b"".join(out)


class _Decompressor:
    """``gzip`` / ``deflate`` content decoding (``deflate``: zlib-wrapped or raw, as servers differ).

    Each call gives at most ``_DECODE_STEP`` bytes: what a compressed piece holds beyond that stays
    :attr:`pending` and comes from :meth:`more` (a few KiB of gzip can unpack to gigabytes).

    Raises (every method):
        UpstreamError: ``upstream_bad_response``, the body is not what its coding says.
    """

    __slots__ = ("_raw_fallback", "_z")

    def __init__(self, coding: str) -> None:
        self._raw_fallback = coding == "deflate"
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if coding != "deflate" else zlib.MAX_WBITS)

    @property
    def pending(self) -> bool:
        """Input was left undecoded by the last call."""
        return bool(self._z.unconsumed_tail)

    def feed(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data, _DECODE_STEP)
        except zlib.error:
            if self._raw_fallback:
                self._raw_fallback = False
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data)
            raise errors.malformed("compressed body") from None
        if out:
            self._raw_fallback = False
        return out

    def more(self) -> bytes:
        """The next piece of what the last call left pending."""
        return self.feed(self._z.unconsumed_tail)

    def flush(self) -> bytes:
        """At the end of the body (nothing pending): what the decoder still holds."""
        try:
            return self._z.flush()
        except zlib.error:
            raise errors.malformed("compressed body") from None


async def _read_body(response: UpstreamResponse, limit: int) -> bytes:
    """The rest of ``response``'s body, at most ``limit`` bytes (see :meth:`UpstreamResponse.read`)."""
    parts: list[bytes] = []
    size = 0
    while data := await response.receive():
        size += len(data)
        if size > limit:
            await response.aclose()
            raise errors.too_large("upstream answer", limit)
        parts.append(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})


def _parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """(status, HTTP/1.1?, headers by lower-case name) of a response head without its blank line."""
    lines = head.split(b"\n")
    match = _STATUS_LINE.fullmatch(lines[0].rstrip(b"\r"))
    if match is None:
        raise httpx.RemoteProtocolError("malformed status line")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError("malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        old = headers.get(key)
        headers[key] = text if old is None else f"{old}, {text}"
    return int(match.group(2)), match.group(1) == b"1", headers


# ---------------------------------------------------------------------------------------------- response
class Http1Response:
    """A response of :class:`Http1Pool` (see :class:`UpstreamResponse`)."""

    __slots__ = (
        "_chunked",
        "_complete",
        "_conn",
        "_decoder",
        "_done",
        "_flushed",
        "_keep_alive",
        "_pending",
        "_pool",
        "_read_timeout",
        "_released",
        "_remaining",
        "headers",
        "status",
    )

    def __init__(
        self,
        pool: Http1Pool,
        conn: _Connection,
        status: int,
        headers: dict[str, str],
        keep_alive: bool,
        body_length: int | None,
        chunked: bool,
        pending: bytes,
        read_timeout: float,
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._conn = conn
        self._keep_alive = keep_alive
        self._remaining = body_length  # None: chunked or until the connection ends
        self._chunked = _Chunked() if chunked else None
        self._pending = pending
        self._read_timeout = read_timeout
        self._done = False
        self._complete = False
        self._released = False
        self._flushed = False
        coding = headers.get("content-encoding", "").strip().lower()
        self._decoder = _Decompressor(coding) if coding in _CODINGS else None
        if body_length == 0:
            self._finish(reusable=keep_alive and not pending)

    @property
    def complete(self) -> bool:
        return self._complete

    async def receive(self) -> bytes:
        decoder = self._decoder
        try:
            while True:
                if decoder is not None:
                    out = self._decoded_rest(decoder)
                    if out:
                        return out
                if self._done:
                    return b""
                if self._pending:
                    data, self._pending = self._pending, b""
                else:
                    data = await self._conn.read(self._read_timeout)
                    if not data:
                        if self._remaining is None and self._chunked is None:
                            self._finish(reusable=False)  # the body ends with the connection
                            continue
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body"
                        )
                body = self._frame(data)
                out = decoder.feed(body) if decoder is not None and body else body
                if out:
                    return out
        except BaseException:
            self._release(reusable=False)
            raise

    def _decoded_rest(self, decoder: _Decompressor) -> bytes:
        """What the decoder holds before more of the body is read: its pending output, or its last bytes once
        the body is complete."""
        while decoder.pending:
            if out := decoder.more():
                return out
        if self._complete and not self._flushed:
            self._flushed = True
            return decoder.flush()
        return b""

    def _frame(self, data: bytes) -> bytes:
        chunked = self._chunked
        if chunked is not None:
            body = chunked.feed(data)
            if chunked.done:
                self._finish(reusable=self._keep_alive and not chunked.extra)
            return body
        remaining = self._remaining
        if remaining is None:
            return data
        if len(data) >= remaining:
            extra = len(data) > remaining
            body = data[:remaining] if extra else data
            self._remaining = 0
            self._finish(reusable=self._keep_alive and not extra)
            return body
        self._remaining = remaining - len(data)
        return data

    async def read(self, limit: int) -> bytes:
        return await _read_body(self, limit)

    def __aiter__(self) -> Http1Response:
        return self

    async def __anext__(self) -> bytes:
        data = await self.receive()
        if not data:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        self._release(reusable=False)

    def _finish(self, *, reusable: bool) -> None:
        self._done = self._complete = True
        self._release(reusable=reusable)

    def _release(self, *, reusable: bool) -> None:
        if self._released:
            return
        self._released = True
        self._done = True
        self._pool._release(self._conn, reusable)


# ---------------------------------------------------------------------------------------------- pool
class Http1Pool:
    """Keep-alive HTTP/1.1 connections per origin, at most ``max_connections`` busy at a time.

    Args:
        max_connections: requests in flight at once (others wait, up to ``timeouts.connect`` seconds).
        max_keepalive: idle connections kept per origin.
        keepalive_expiry: seconds an idle connection may be reused.
        ssl_context: for ``https`` (default: httpx's, so certificates are trusted as before).
    """

    def __init__(
        self,
        *,
        max_connections: int = 512,
        max_keepalive: int = 64,
        keepalive_expiry: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1 or max_keepalive < 0 or keepalive_expiry < 0:
            raise ValueError("need max_connections >= 1, max_keepalive >= 0, keepalive_expiry >= 0")
        self._slots = asyncio.Semaphore(max_connections)
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    def idle_connections(self) -> int:
        """Connections kept open for reuse."""
        return sum(len(v) for v in self._idle.values())

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        headers: RequestHeaders,
        body: bytes,
        timeouts: Timeouts,
    ) -> Http1Response:
        """See :meth:`UpstreamTransport.request`.

        Raises:
            httpx.TransportError: see the module's docstring.
            RuntimeError: the pool is closed.
        """
        if self._closed:
            raise RuntimeError("the HTTP pool is closed")
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(timeouts.connect):
                    await slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection of the pool became free in time") from None
        else:
            await slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._idle_connection(endpoint)
            if conn is None:
                conn = await self._connect(endpoint, timeouts.connect)
            self._busy.add(conn)
            head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n" % (
                method.encode("ascii"),
                endpoint.target,
                endpoint.host_header,
                headers.block,
                len(body),
            )
            conn.write(head + body if len(body) <= 16384 else head)
            if len(body) > 16384:
                conn.write(body)
            await conn.drain(timeouts.write)
            return await self._response(conn, method, timeouts.read)
        except BaseException:
            if conn is not None:
                self._busy.discard(conn)
                conn.close()
            slots.release()
            raise

    def _idle_connection(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint.origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # the most recently used first
            if conn.reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self, endpoint: Endpoint, limit: float) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = endpoint.origin
        ssl_context = None
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
                self._ssl.set_alpn_protocols(["http/1.1"])
            ssl_context = self._ssl
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin, loop),
                    endpoint.host,
                    endpoint.port,
                    ssl=ssl_context,
                    server_hostname=endpoint.host if ssl_context is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {endpoint.host}:{endpoint.port} timed out"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS failure, TLS failure
            raise httpx.ConnectError(_describe(exc, "connection failed")) from None
        return conn

    async def _response(self, conn: _Connection, method: str, read_timeout: float) -> Http1Response:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head, rest = buf[:end], buf[end + 4 :]
            else:
                match = _HEAD_END.search(buf) if b"\n" in buf else None
                if match is not None:
                    head, rest = buf[: match.start()], buf[match.end() :]
                else:
                    if len(buf) > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("response head too large")
                    data = await conn.read(read_timeout)
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "Server disconnected without sending a response."
                            if not buf
                            else "upstream closed the connection in the response head"
                        )
                    buf = buf + data if buf else data
                    continue
            status, http11, headers = _parse_head(head)
            if 100 <= status < 200:
                if status == 101:
                    raise httpx.RemoteProtocolError("unexpected protocol switch")
                buf = rest  # an interim response: the final one follows
                continue
            break
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)
        chunked = False
        length: int | None
        if method == "HEAD" or status in _NO_BODY_STATUS:
            length = 0
        elif "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings != ["chunked"]:
                # as h11 does: a transfer coding we would have to undo ("gzip, chunked") is refused
                raise httpx.RemoteProtocolError(
                    f"unsupported Transfer-Encoding {headers['transfer-encoding']!r}"
                )
            chunked = True
            length = None
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
                raise httpx.RemoteProtocolError("malformed Content-Length")
            length = int(values.pop())
        else:
            length = None
            keep_alive = False
        return Http1Response(
            self, conn, status, headers, keep_alive, length, chunked, rest, read_timeout
        )

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        self._slots.release()
        if reusable and not self._closed:
            idle = self._idle.setdefault(conn.origin, [])
            if len(idle) < self._max_keepalive:
                conn.idle_since = asyncio.get_running_loop().time()
                idle.append(conn)
                return
        conn.close()

    async def aclose(self) -> None:
        """Close every connection, busy ones included (their reads then fail). Idempotent."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()


# ---------------------------------------------------------------------------------------------- httpx
class _HttpxResponse:
    """An ``httpx.Response`` (opened with ``stream=True``) as an :class:`UpstreamResponse`.

    The body is read raw and decoded here, as :class:`Http1Response` does (bounded pieces); it is ``complete``
    once its last byte was read (httpx's ``is_stream_consumed`` is set as soon as reading *starts*).
    """

    __slots__ = ("_chunks", "_complete", "_decoder", "_flushed", "_response")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_raw()
        coding = response.headers.get("content-encoding", "").strip().lower()
        self._decoder = _Decompressor(coding) if coding in _CODINGS else None
        self._complete = False
        self._flushed = False

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def complete(self) -> bool:
        return self._complete

    async def receive(self) -> bytes:
        decoder = self._decoder
        while True:
            if decoder is not None:
                while decoder.pending:
                    if out := decoder.more():
                        return out
                if self._complete and not self._flushed:
                    self._flushed = True
                    if out := decoder.flush():
                        return out
            if self._complete:
                return b""
            try:
                data = await anext(self._chunks)
            except StopAsyncIteration:
                self._complete = True
                continue
            out = decoder.feed(data) if decoder is not None else data
            if out:
                return out

    async def read(self, limit: int) -> bytes:
        return await _read_body(self, limit)

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            await self._response.aclose()


async def read_httpx_body(response: httpx.Response, limit: int) -> bytes:
    """The body of ``response`` (opened with ``stream=True``, not yet read) decoded, at most ``limit`` bytes;
    the response is closed.

    Raises:
        UpstreamError: over ``limit`` (``upstream_response_too_large``), or a bad compressed body.
        httpx.TransportError: the connection failed.
    """
    body = _HttpxResponse(response)
    try:
        return await body.read(limit)
    finally:
        await body.aclose()


class HttpxTransport:
    """:class:`UpstreamTransport` over a shared ``httpx.AsyncClient`` (not owned: :meth:`aclose` leaves it open)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        headers: RequestHeaders,
        body: bytes,
        timeouts: Timeouts,
    ) -> _HttpxResponse:
        request = self.client.build_request(
            method,
            endpoint.url,
            content=body,
            headers=list(headers.items),
            timeout=timeouts.for_http(),
        )
        return _HttpxResponse(await self.client.send(request, stream=True))

    async def aclose(self) -> None:
        return None
