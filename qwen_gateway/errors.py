"""Errors raised by the I/O side of the gateway (the pure ``protocol`` package has its own).

::

    GatewayError
    ├── UpstreamError          an upstream (DashScope or a compatible server) failed; carries an
    │   │                      OpenAI-style ``code``, the HTTP ``status`` to answer with, ``transient``
    │   └── UpstreamTimeout    connect/read/idle timeout talking to an upstream
    ├── StorageError           the history database or the object store failed
    └── ClientGone             the client went away (used to end a turn quietly)
"""

from __future__ import annotations

import copy
from typing import TypeVar

__all__ = [
    "ClientGone",
    "GatewayError",
    "StorageError",
    "UpstreamError",
    "UpstreamTimeout",
    "detached",
]

E = TypeVar("E", bound=BaseException)


def detached(error: E) -> E:
    """A copy of ``error`` without its traceback: the form in which an object keeps an error it raises later (a
    session's recorded failure), and in which it raises it.

    A traceback holds the frames the error went through, and those frames hold their locals, among them the object
    that keeps the error: kept or raised as it is, the error closes a reference cycle, with the turn's whole graph,
    that only the garbage collector frees (``tests/voice_ws/test_turn_garbage.py``). An error that cannot be
    copied (a constructor that does not take its own ``args`` back) is returned as it is.
    """
    try:
        return copy.copy(error)
    except Exception:
        return error


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class UpstreamError(GatewayError):
    """An upstream call failed.

    Attributes:
        code: OpenAI-style machine code (``invalid_api_key``, ``limit_requests``, ``model_not_found``, ...).
        status: the upstream HTTP status (or the closest equivalent for WebSocket failures).
        message: human-readable text (never contains keys).
        transient: a retry may succeed (429 throttles, 5xx, connection errors).
        retry_after: seconds the upstream asked us to wait, when it said so.
        type: the OpenAI error ``type`` the upstream used, when known.
        request_id: the upstream's id of the failed call (``request_id`` / ``x-request-id``, a task id), when
            known: logged with the failure so that it can be matched with the upstream's records.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "upstream_error",
        status: int = 502,
        transient: bool = False,
        retry_after: float | None = None,
        type: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.message = message
        self.code = code
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.type = type
        self.param = param

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class UpstreamTimeout(UpstreamError):
    """An upstream did not answer in time."""

    def __init__(self, message: str = "upstream timed out", *, status: int = 504) -> None:
        super().__init__(message, code="upstream_timeout", status=status, transient=True)


class StorageError(GatewayError):
    """The history database or object store failed."""


class ClientGone(GatewayError):
    """The client disconnected."""
