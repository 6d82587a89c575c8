"""The envelope of DashScope's task WebSocket protocol (``run-task`` / ``continue-task`` / ``finish-task``).

Server events are ``{"header": {"task_id", "event", "attributes", ["error_code", "error_message"]}, "payload"}``
(``dashscope-protocols.md`` §4.1). The tasks themselves (:mod:`.paraformer`, :mod:`.cosyvoice`) talk to their
connection through :class:`TaskHost`, and share :class:`Task`: their bookkeeping, endings and mid-task faults.
"""

from __future__ import annotations

from typing import Any, Protocol

from .asgi import dumps
from .faults import Fault
from .records import TaskRecord
from .state import SimulatorState
from .wsconn import Drop, Stall, Writer

__all__ = ["Task", "TaskError", "TaskHost", "task_event", "task_failed_event"]


class TaskError(Exception):
    """The task fails: ``task-failed`` with ``code`` and ``message``, then the socket closes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TaskHost(Protocol):
    """What a task may use of the connection that runs it."""

    state: SimulatorState
    writer: Writer

    @property
    def closing(self) -> bool:
        """True once the connection is ending: the task must stop producing."""
        ...

    async def fail(self, task_id: str, code: str, message: str, *, why: str = "failed") -> None:
        """Send ``task-failed`` and close the connection."""
        ...


def task_event(
    task_id: str, event: str, payload: dict[str, Any], attributes: dict[str, Any] | None = None
) -> str:
    """A server event of the task protocol, as the text frame to send."""
    return dumps(
        {
            "header": {"task_id": task_id, "event": event, "attributes": attributes or {}},
            "payload": payload,
        }
    ).decode()


def task_failed_event(task_id: str, code: str, message: str) -> str:
    """A ``task-failed`` event."""
    return dumps(
        {
            "header": {
                "task_id": task_id,
                "event": "task-failed",
                "error_code": code,
                "error_message": message,
                "attributes": {},
            },
            "payload": {},
        }
    ).decode()


class Task:
    """What every task of the task socket keeps and does alike.

    Attributes:
        done: the task has ended (finished, failed, aborted or dropped); the connection may take another.
        busy: the server is still producing (speech), so the client's silence is not idle.
        idle_since: when the task last became idle (the loop's clock).
        idle_seconds: the client silence after which the task fails (the ``idle_timeout`` fault, else
            ``asr_idle_timeout``).
        rec: the task's record in the log, set by the subclass.
    """

    rec: TaskRecord

    def __init__(
        self, host: TaskHost, task_id: str, model: str, faults: dict[str, Fault], idle_since: float
    ) -> None:
        self.host = host
        self.task_id = task_id
        self.model = model
        self.faults = faults
        self.done = False
        self.busy = False
        self.idle_since = idle_since
        idle = faults.get("idle_timeout")
        self.idle_seconds = (
            idle.seconds
            if idle is not None and idle.seconds is not None
            else host.state.config.asr_idle_timeout
        )

    async def abort(self) -> None:
        """A new run-task replaced this one."""
        self.done = True
        self.rec.aborted = True

    def failed(self, code: str, message: str) -> None:
        """The connection sent ``task-failed`` for this task."""
        self.done = True
        self.rec.failed = (code, message)

    async def _faults_at(self, position: int) -> bool:
        """Play the mid-task faults set for output number ``position`` (malformed event, stall, task-failed,
        drop); False when the task must stop producing (the connection is ending, or a fault ended it)."""
        host, faults = self.host, self.faults
        if host.closing:
            return False
        malformed = faults.get("malformed")
        if malformed is not None and malformed.after == position:
            await host.writer.put(
                malformed.payload
                or '{"header":{"task_id":"' + self.task_id + '","event":"result-gen'
            )
        stall = faults.get("stall")
        if stall is not None and stall.after == position:
            await host.writer.put(Stall(stall.seconds))
        failed = faults.get("task_failed")
        if failed is not None and not failed.before_start and failed.after == position:
            await host.fail(
                self.task_id,
                failed.code or "InternalError",
                failed.message or "Internal server error!",
            )
            return False
        drop = faults.get("drop")
        if drop is not None and drop.after == position:
            await host.writer.put(Drop())
            self.done = True
            return False
        return True
