"""Timeouts and retry policy shared by the DashScope clients."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from ...errors import UpstreamError
from ...logs import upstream_fields

__all__ = ["Backoff", "ReadLimits", "Timeouts"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of an upstream exchange.

    Attributes:
        connect: TCP + TLS + (WebSocket) handshake, and the wait for a task to be accepted.
        read: the wait for the first answer byte, and the longest silence while an answer is expected (idle).
        write: the wait for the upstream to accept what we send (flow control).
        close: the closing handshake of a WebSocket before the socket is dropped.
        task: the whole life of an asynchronous file-recognition task (submit, polls, result).
    """

    connect: float = 10.0
    read: float = 60.0
    write: float = 30.0
    close: float = 2.0
    task: float = 600.0

    def for_http(self) -> httpx.Timeout:
        """These timeouts as httpx takes them (waiting for a pooled connection counts as connecting)."""
        return httpx.Timeout(
            connect=self.connect, read=self.read, write=self.write, pool=self.connect
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadLimits:
    """Bytes read from an HTTP upstream at most (sizes once decompressed); over them, the answer is refused
    with ``upstream_response_too_large`` and its connection dropped.

    Attributes:
        event: a line, and the data of one event, of a streamed (SSE) answer.
        body: a whole non-streamed answer (a chat completion, a recognition task's status or result).
        error_body: the body of an HTTP error answer (past it, the error is told from its status alone).
    """

    event: int = 1024 * 1024
    body: int = 16 * 1024 * 1024
    error_body: int = 64 * 1024

    def __post_init__(self) -> None:
        if min(self.event, self.body, self.error_body) < 1:
            raise ValueError("read limits must be >= 1 byte")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter.

    Attributes:
        retries: extra attempts after the first one.
        base: the first delay's upper bound, in seconds; doubled on every attempt.
        cap: the largest delay.
        on_retry: called with ``what`` before each retry.
    """

    retries: int = 2
    base: float = 0.25
    cap: float = 4.0
    #: called with the operation's name before each retry (the gateway's metrics count them)
    on_retry: Callable[[str], None] | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); honours a server hint up to ``cap``."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        ceiling = min(self.cap, self.base * (2.0**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def sleep(self, attempt: int, retry_after: float | None = None) -> None:
        """Wait before retry number ``attempt``."""
        await asyncio.sleep(self.delay(attempt, retry_after))

    async def retry_or_raise(self, err: UpstreamError, attempt: int, what: str) -> None:
        """After failed attempt number ``attempt`` (0-based): wait before the next one when ``err`` is transient
        and retries are left (the upstream's ``retry_after`` honoured); otherwise raise ``err``.

        Raises:
            UpstreamError: ``err``, when no further attempt should be made.
        """
        if not err.transient or attempt >= self.retries:
            raise err
        delay = self.delay(attempt, err.retry_after)
        if self.on_retry is not None:
            self.on_retry(what)
        log.warning(
            "%s failed (status=%s code=%s); retry %d/%d in %.2fs",
            what,
            err.status,
            err.code,
            attempt + 1,
            self.retries,
            delay,
            extra=upstream_fields(what, err.request_id),
        )
        await asyncio.sleep(delay)

    async def run(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """Call ``attempt`` until it succeeds, retrying transient :class:`UpstreamError` up to ``retries`` times.

        ``attempt`` must have sent nothing to our caller: it is called again from scratch.
        """
        n = 0
        while True:
            try:
                return await attempt()
            except UpstreamError as err:
                await self.retry_or_raise(err, n, what)
            n += 1
