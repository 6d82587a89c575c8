"""Structured logging: one JSON object per line, with the request/session id of the current task.

Use ``logging.getLogger("qwen_gateway.<module>")`` everywhere and pass fields with ``extra={"fields": {...}}``.
``bind(request_id=...)`` sets ids for the current task (a ``contextvars`` copy is taken by every task spawned from
it, so a turn's tasks log with their session's id). Keys, audio and full prompts are never logged at INFO.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "bind", "configure", "current_ids"]

_ids: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("qg_log_ids", default={})  # noqa: B039


def bind(**ids: str) -> contextvars.Token[dict[str, str]]:
    """Add ids (``request_id``, ``session_id``, ``turn_id`` ...) to every log line of this task."""
    return _ids.set({**_ids.get(), **ids})


def current_ids() -> dict[str, str]:
    return _ids.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_ids.get())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_qg", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._qg = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Hypercorn's access log is noisy and carries query strings (tokens): keep it at WARNING.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
