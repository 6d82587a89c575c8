"""``/api-ws/v1/inference``: DashScope's task WebSocket, carrying recognition and CosyVoice tasks.

One connection runs one task at a time (``dashscope-protocols.md`` §4.1): ``run-task`` -> ``task-started``; a new
``run-task`` replaces a running task; ``task-failed`` closes the socket; after ``task-finished`` the socket can
take another task, and is closed when none comes within ``task_reuse_timeout``. A running task whose client stays
silent for ``asr_idle_timeout`` fails with ``request timeout after 23 seconds.``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from .asgi import Disconnected, WebSocket
from .cosyvoice import CosyVoiceTask
from .errors import find_family
from .faults import ALLOWED
from .handshake import serve_socket
from .paraformer import AsrTask
from .records import ConnectionRecord
from .state import SimulatorState
from .taskproto import TaskError, task_event, task_failed_event
from .wsconn import Close, ConnectionDone, Stall, Writer

__all__ = ["handle_inference"]


_Task = AsrTask | CosyVoiceTask


async def handle_inference(state: SimulatorState, ws: WebSocket) -> None:
    """Serve one task socket."""

    async def serve(conn: ConnectionRecord, call: str) -> tuple[str, int | None]:
        await ws.accept()
        return await _TaskConnection(state, ws, conn).run()

    await serve_socket(state, ws, "inference", serve)


class _TaskConnection:
    """Implements :class:`~.taskproto.TaskHost` for the tasks it runs."""

    def __init__(self, state: SimulatorState, ws: WebSocket, conn: ConnectionRecord) -> None:
        self.state = state
        self.cfg = state.config
        self.ws = ws
        self.conn = conn
        self.writer = Writer(ws)
        self.task: _Task | None = None
        self.last_task_id = ""
        self._closing = False
        self._tg: asyncio.TaskGroup | None = None

    @property
    def closing(self) -> bool:
        return self._closing

    async def run(self) -> tuple[str, int | None]:
        why, code = "error", None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self.writer.run())
                await self._reader()
        except* ConnectionDone as group:
            done = group.exceptions[0]
            assert isinstance(done, ConnectionDone)
            why, code = done.why, done.code
        except* Disconnected:
            why, code = "client", self.ws.client_close_code
            if self.task is not None and not self.task.done:
                self.task.rec.aborted = True
        return why, code

    async def fail(self, task_id: str, code: str, message: str, *, why: str = "failed") -> None:
        """Send ``task-failed`` and close the socket (``why`` is the recorded close reason)."""
        if self._closing:
            return
        self._closing = True
        if self.task is not None and self.task.task_id == task_id:
            self.task.failed(code, message)
        await self.writer.put(task_failed_event(task_id, code, message))
        await self.writer.put(Close(self.cfg.task_failed_close_code, "", why=why))

    # ------------------------------------------------------------------ reading
    def _deadline(self, last_client: float) -> float:
        task = self.task
        if task is None or task.done:
            return last_client + self.cfg.task_reuse_timeout
        return max(last_client, task.idle_since) + task.idle_seconds

    async def _reader(self) -> None:
        loop = asyncio.get_running_loop()
        last_client = loop.time()
        while True:
            if self._closing:
                await self.ws.receive()
                continue
            try:
                async with asyncio.timeout_at(self._deadline(last_client)):
                    message = await self.ws.receive()
            except TimeoutError:
                await self._on_idle()
                continue
            last_client = loop.time()
            if self._closing:
                continue
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_text(message)

    async def _on_idle(self) -> None:
        task = self.task
        if task is None or task.done:
            self._closing = True
            await self.writer.put(Close(1000, "", why="idle"))
            return
        if task.busy:  # the server is still speaking; the client has nothing to say
            task.idle_since = asyncio.get_running_loop().time()
            return
        message = f"request timeout after {task.idle_seconds:g} seconds."
        await self.fail(task.task_id, "CLIENT_ERROR", message, why="idle")

    async def _on_audio(self, data: bytes) -> None:
        task = self.task
        if task is None or task.done:
            await self.fail(
                self.last_task_id,
                "InvalidParameter",
                "Missing required parameter 'payload.model'! Please follow the protocol!",
            )
            return
        await task.on_audio(data)

    async def _on_text(self, text: str) -> None:
        try:
            message = msgspec.json.decode(text)
        except msgspec.DecodeError:
            await self.fail(
                self.last_task_id, "InvalidParameter", "Invalid JSON! Please follow the protocol!"
            )
            return
        header = message.get("header") if isinstance(message, dict) else None
        if not isinstance(header, dict):
            await self.fail(
                self.last_task_id,
                "InvalidParameter",
                "Missing required parameter 'header'! Please follow the protocol!",
            )
            return
        task_id = header.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            await self.fail(
                "",
                "InvalidParameter",
                "Missing required parameter 'header.task_id'! Please follow the protocol!",
            )
            return
        action = header.get("action")
        if action == "run-task":
            await self._run_task(task_id, message)
            return
        task = self.task
        if action not in ("continue-task", "finish-task"):
            await self.fail(task_id, "InvalidParameter", f"Unsupported action: {action}!")
            return
        if task is None or task.task_id != task_id:
            await self.fail(
                task_id, "InvalidParameter", f"Task {task_id} not found, send run-task first!"
            )
            return
        if task.done:
            return  # a late instruction for a task that already ended
        task.rec.instructions.append(message)
        if action == "continue-task":
            await task.on_continue(message.get("payload"))
        else:
            await task.on_finish()

    async def _run_task(self, task_id: str, message: dict[str, Any]) -> None:
        if self.task is not None and not self.task.done:
            await self.task.abort()
        self.task = None
        self.last_task_id = task_id
        payload = message.get("payload")
        if not isinstance(payload, dict):
            await self.fail(
                task_id,
                "InvalidParameter",
                "Missing required parameter 'payload'! Please follow the protocol!",
            )
            return
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            await self.fail(
                task_id,
                "InvalidParameter",
                "Missing required parameter 'payload.model'! Please follow the protocol!",
            )
            return
        if "input" not in payload:
            await self.fail(task_id, "InvalidParameter", "InvalidParameter: task can not be null")
            return
        name = payload.get("task")
        kind = {"asr": "asr", "tts": "tts_cosyvoice"}.get(str(name))
        if kind is None:
            await self.fail(task_id, "InvalidParameter", f"Unsupported task: {name}!")
            return
        self.conn.tasks.append(kind)
        faults = self.state.faults.take(kind, ALLOWED[kind], task_id)
        injected = faults.get("http_error")
        if injected is not None:
            family = find_family(injected.status, injected.code)
            await self.fail(task_id, family.native_code, injected.message or family.native_message)
            return
        early = faults.get("task_failed")
        if early is not None and early.before_start:
            await self.fail(
                task_id, early.code or "InternalError", early.message or "Internal server error!"
            )
            return
        try:
            task: _Task = (
                AsrTask(self, self.conn, task_id, message, faults)
                if kind == "asr"
                else CosyVoiceTask(self, self.conn, task_id, message, faults)
            )
        except TaskError as err:
            await self.fail(task_id, err.code, err.message)
            return
        self.task = task
        task.rec.instructions.append(message)
        delay = faults.get("delay")
        if delay is not None:
            await self.writer.put(Stall(delay.seconds or 0.0))
        await self.writer.put(task_event(task_id, "task-started", {}))
        self.state.log.touch()
        if isinstance(task, CosyVoiceTask):
            assert self._tg is not None
            await task.started(self._tg)
