"""Tasks that leave no reference cycle behind when they end: the serving loop's task factory.

A cancelled task keeps the ``CancelledError`` it ended with (``Task._cancelled_exc``, Python 3.11) until someone
asks for its result, and ``asyncio.TaskGroup`` never asks for a cancelled child's. That error's traceback keeps
the frames the cancellation went through, and their locals often keep the task again (an ``asyncio.timeout``'s
``Timeout``, the group, the connection): a reference cycle that only the garbage collector frees, with everything
the frames held (a turn's audio, its encoder, the connection's buffers). Every client that vanished mid-turn left
one such graph per task (``tests/voice_ws/test_turn_garbage.py``), and Hypercorn's and Quart's own tasks for the
connection another. Under :mod:`qwen_gateway.collector` a cycle through a frozen object waits for the next quiet
sweep, so none may be left.

:func:`install` sets a task factory on the loop that adds :func:`release_cancelled` to every task: once a task is
cancelled, its stored error is taken out and the finished frames of its traceback are cleared
(:func:`forget_frames`). Awaiting such a task still raises ``CancelledError`` (a new one, without the old
traceback).
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Coroutine
from contextvars import Context
from typing import Any

__all__ = ["forget_frames", "install", "release_cancelled", "task_factory"]


def forget_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in ``exc``'s tracebacks (and its group's, its cause's).

    An exception keeps every frame it went through, and those frames keep their locals: the connection's runner,
    its turns and their buffers. ``TaskGroup.__aexit__`` (3.11) keeps the exception it raises in its own frame, a
    reference cycle that only a garbage-collector pass frees. The frame still running (the catcher's) is left
    alone by :func:`traceback.clear_frames`.
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def release_cancelled(task: asyncio.Future[Any]) -> None:
    """A done callback: a cancelled task lets go of the error it ended with, and of that error's frames."""
    if not task.cancelled():
        return
    try:
        task.exception()  # hands over the stored CancelledError and forgets it
    except asyncio.CancelledError as exc:
        forget_frames(exc)


def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    *,
    context: Context | None = None,
) -> asyncio.Task[Any]:
    """The loop's task factory: a plain ``asyncio.Task`` with :func:`release_cancelled` as a done callback."""
    task = asyncio.Task(coro, loop=loop, context=context)
    task.add_done_callback(release_cancelled)
    return task


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make :func:`task_factory` the loop's task factory (the serving loop; idempotent)."""
    loop.set_task_factory(task_factory)  # type: ignore[arg-type]
