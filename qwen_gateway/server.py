"""Run the app under Hypercorn: for ``qwen-gateway serve`` and, on an ephemeral loopback port, for tests and
benchmarks (``async with serving(app) as base_url``)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from . import hypercorn_fixes, tasks
from .config import Settings
from .ws import set_unread_timeout

__all__ = ["hypercorn_config", "listen", "release_free_memory", "serving"]


def release_free_memory() -> bool:
    """Give the memory the C allocator holds free back to the system (glibc ``malloc_trim(0)``).

    False where there is no glibc (the call is then a no-op). It takes the allocator's locks for a few
    milliseconds: call it off the hot path.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound, listening TCP socket (``port=0`` picks a free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    return sock


def hypercorn_config(settings: Settings, sock: socket.socket) -> Config:
    """Hypercorn settings for the gateway, serving on the already-listening ``sock`` (whose options it sets).

    Also installs the gateway's fixes to Hypercorn internals (:mod:`qwen_gateway.hypercorn_fixes`).
    """
    hypercorn_fixes.install()
    # A client that reads nothing cannot be evicted through ASGI (the close waits behind a blocked drain):
    # let the kernel drop connections whose peer acknowledges nothing for longer than the send timeout.
    # (A value the caller already set on the socket is kept.)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None and sock.getsockopt(socket.IPPROTO_TCP, option) == 0:
        set_unread_timeout(sock, settings.ws_send_timeout + 5)
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    # Hypercorn's own lines go through our handler (JSON or text, secrets masked), not a second format of its own.
    errorlog = logging.getLogger("hypercorn.error")
    errorlog.setLevel(logging.WARNING)  # its INFO lines ("Running on fd://...") say nothing useful
    config.errorlog = errorlog
    config.loglevel = "WARNING"
    config.keep_alive_timeout = 75
    config.graceful_timeout = 5
    # Hypercorn closes over-large WebSocket messages with 1009; our own codec limits are lower (a typed error
    # event, then 1009).
    config.websocket_max_message_size = max(settings.max_frame_bytes * 2, 64 * 1024)
    hypercorn_fixes.configure(
        config,
        compression=settings.ws_compression,
        linger_timeout=min(hypercorn_fixes.LINGER_TIMEOUT, settings.ws_send_timeout),
    )
    config.h11_max_incomplete_size = 64 * 1024
    return config


@asynccontextmanager
async def serving(
    app: Any, settings: Settings, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop until the block exits; yields the base URL (``http://host:port``).

    The loop's task factory is :func:`qwen_gateway.tasks.task_factory` meanwhile, as under ``qwen-gateway serve``.
    """
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    tasks.install(loop)
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    config = hypercorn_config(settings, sock)
    sock.detach()  # Hypercorn owns the descriptor from here on
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0)
        yield f"http://{host}:{bound_port}"
    finally:
        stop.set()
        try:
            async with asyncio.timeout(10):
                await task
        except TimeoutError:
            task.cancel()
        finally:
            loop.set_task_factory(factory)
