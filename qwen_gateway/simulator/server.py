"""``Simulator``: the DashScope simulator served by Hypercorn inside the caller's event loop.

The listening socket is bound before Hypercorn starts (so ``port=0`` gives an ephemeral port known at once) and
handed to it as ``fd://``; ``hypercorn.asyncio.serve`` runs as a task the simulator owns and stops through its
``shutdown_trigger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from types import TracebackType
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .app import SimulatorApp
from .config import SimulatorConfig
from .faults import FaultSet
from .records import SimulatorLog
from .state import Reply, SimulatorState, ToolCallScript

__all__ = ["Simulator"]

logger = logging.getLogger("qwen_gateway.simulator.server")


class Simulator:
    """A running DashScope simulator. Use ``async with Simulator(config) as sim`` (or ``start``/``stop``)."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._state = SimulatorState(config or SimulatorConfig())
        self._state.log.max_records = self._state.config.max_records
        self._app = SimulatorApp(self._state)
        self._host = host
        self._requested_port = port
        self._port = 0
        self._shutdown: asyncio.Event | None = None
        self._serve_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port and start serving; returns once requests are answered.

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._serve_task is not None:
            raise RuntimeError("simulator already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self._host, self._requested_port))
            sock.listen(self._state.config.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._state.base_url = self.base_url
        fd = sock.detach()
        config = Config()
        config.bind = [f"fd://{fd}"]
        config.accesslog = None
        # Hypercorn's own lines ("Running on ... CTRL + C") would read as the gateway's: warnings and up only.
        hypercorn_log = logging.getLogger("qwen_gateway.simulator.hypercorn")
        hypercorn_log.setLevel(logging.WARNING)
        config.errorlog = hypercorn_log
        config.graceful_timeout = 1.0
        config.backlog = self._state.config.backlog
        config.keep_alive_timeout = 30.0
        self._shutdown = asyncio.Event()
        self._serve_task = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._shutdown.wait, mode="asgi"),  # type: ignore[arg-type]
            name=f"dashscope-simulator:{self._port}",
        )
        started = asyncio.create_task(self._app.started.wait())
        try:
            await asyncio.wait({started, self._serve_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if self._serve_task.done():
            task, self._serve_task = self._serve_task, None
            task.result()  # raises what stopped it
            raise RuntimeError("the simulator stopped while starting")
        logger.info("DashScope simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Close every connection and stop serving (idempotent)."""
        task, self._serve_task = self._serve_task, None
        if task is None:
            return
        await self._app.close_connections()
        assert self._shutdown is not None
        self._shutdown.set()
        try:
            async with asyncio.timeout(5.0):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (for the command line)."""
        async with self:
            await stop.wait()

    # ------------------------------------------------------------------ addresses
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def ws_base_url(self) -> str:
        """``ws://HOST:PORT``."""
        return "ws" + self.base_url[4:]

    @property
    def env(self) -> dict[str, str]:
        """The four variables that point a gateway at this simulator."""
        return {
            "QWEN_API_CHAT_URL": f"{self.base_url}/compatible-mode/v1/chat/completions",
            "REAL_TIME_AUDIO_URL": f"{self.ws_base_url}/api-ws/v1/realtime?model=qwen-tts-realtime",
            "DASHSCOPE_WEBSOCKET_BASE_URL": f"{self.ws_base_url}/api-ws/v1/inference",
            "DASHSCOPE_HTTP_BASE_URL": f"{self.base_url}/api/v1",
        }

    # ------------------------------------------------------------------ test controls
    @property
    def config(self) -> SimulatorConfig:
        return self._state.config

    @config.setter
    def config(self, value: SimulatorConfig) -> None:
        self._state.config = value
        self._state.log.max_records = value.max_records

    def configure(self, **changes: Any) -> SimulatorConfig:
        """Replace some config fields (new calls see them). Returns the new config."""
        self.config = dataclasses.replace(self._state.config, **changes)
        return self._state.config

    @property
    def faults(self) -> FaultSet:
        """Armed faults: ``sim.faults.add(Fault.http_error(429, times=2))``."""
        return self._state.faults

    @property
    def log(self) -> SimulatorLog:
        """What the simulator received."""
        return self._state.log

    def set_reply(self, reply: Reply | None, *, times: int | None = None) -> None:
        """Chat replies: ``reply`` (text, or a function of the request body) for the next ``times`` requests
        (``None``: all, until changed); ``None`` returns to the built-in corpus."""
        self._state.replies.set(reply, times)

    def set_tool_call(self, name: str, arguments: str, *, text: str = "") -> None:
        """The next chat request offering the function ``name`` (in ``tools``) says ``text``, then calls ``name``
        with ``arguments`` (JSON text, streamed in fragments) and ends with ``finish_reason: "tool_calls"``.
        Calls set this way are used once each, in order."""
        self._state.tool_calls.add(ToolCallScript(name, arguments, text))

    def register_transcript(self, audio: bytes, text: str) -> str:
        """Recognising exactly ``audio`` (the bytes the recogniser receives) gives ``text``. Returns its key."""
        return self._state.registry.register(audio, text)

    async def wait_closed(self, kind: str | None = None, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until no connection of ``kind`` (``chat``, ``tts``, ``inference``, ``asr``, ``tts_cosyvoice``,
        ``file_asr``, ``tasks``; None: any) is open.

        Raises:
            TimeoutError: still open after ``timeout`` seconds.
        """
        await self._state.log.wait_closed(kind, timeout)

    def reset(self) -> None:
        """Forget records, faults, set replies and registered transcripts."""
        self._state.log.clear()
        self._state.faults.clear()
        self._state.replies.set(None)
        self._state.tool_calls.clear()
        self._state.registry.clear()
