"""The envelope of DashScope's task WebSocket protocol (``run-task`` / ``continue-task`` / ``finish-task``).

Server events are ``{"header": {"task_id", "event", "attributes", ["error_code", "error_message"]}, "payload"}``
(``dashscope-protocols.md`` §4.1). The tasks themselves (:mod:`.paraformer`, :mod:`.cosyvoice`) talk to their
connection through :class:`TaskHost`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .asgi import dumps
from .state import SimulatorState
from .wsconn import Writer

__all__ = ["TaskError", "TaskHost", "task_event", "task_failed_event"]


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
