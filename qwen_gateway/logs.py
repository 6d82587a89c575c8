"""Structured logging: one JSON object per line, with the request/session id of the current task; or, for people
at a terminal, one readable line per record (``QG_LOG_FORMAT=auto|json|text``; ``auto``: JSON unless stderr is a
terminal). Both formats carry the same fields and both are masked by :class:`ScrubbingFormatter`.

Lines about an upstream call carry ``upstream`` (the protocol: ``chat``, ``asr``, ``tts``, ...) and
``upstream_request_id`` (DashScope's ``request_id`` / ``x-request-id``, or the task or session id it names the
call by), built with :func:`upstream_fields`, so that a line can be matched with DashScope's own records.

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
from collections.abc import Iterable
from typing import Any

__all__ = [
    "JsonFormatter",
    "ScrubbingFormatter",
    "TextFormatter",
    "bind",
    "configure",
    "current_ids",
    "json_lines_for",
    "upstream_fields",
]

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


class TextFormatter(logging.Formatter):
    """One readable line per record: ``HH:MM:SS.mmm LEVEL logger: message key=value ...`` (ids, then fields;
    values with spaces are quoted), a traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = (
            time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        )
        parts = [f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"]
        pairs: dict[str, Any] = dict(_ids.get())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            pairs.update(fields)
        for key, value in pairs.items():
            parts.append(f"{key}={_text_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def upstream_fields(upstream: str, request_id: str | None, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about an upstream call: ``{"fields": {"upstream", "upstream_request_id",
    ...}}`` (``upstream_request_id`` is ``""`` when the upstream gave none yet)."""
    return {"fields": {"upstream": upstream, "upstream_request_id": request_id or "", **more}}


#: Library loggers and the lowest level they may log at: below it they write secrets. Hypercorn's access log
#: carries query strings (``?token=``); oss2 logs every request's headers at DEBUG, the access key id among them.
_QUIET = {
    "hypercorn.access": logging.WARNING,
    "oss2": logging.INFO,
}


class ScrubbingFormatter(logging.Formatter):
    """Another formatter's lines with every known secret value replaced by ``***``: the last line of defence
    against a library that logs what it should not (values shorter than 4 characters are left alone)."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        # longest first: a secret containing another is masked whole
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self._inner.format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def json_lines_for(log_format: str, stream: Any = None) -> bool:
    """``QG_LOG_FORMAT`` -> JSON lines? ``json``: yes, ``text``: no, ``auto``: unless ``stream`` (stderr) is a
    terminal."""
    if log_format == "json":
        return True
    if log_format == "text":
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def configure(level: str = "INFO", *, json_lines: bool = True, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once (idempotent). ``secrets`` (``Settings.secret_values()``) never appear in
    its output, in either format."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_qg", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._qg = True  # type: ignore[attr-defined]
    inner = JsonFormatter() if json_lines else TextFormatter()
    handler.setFormatter(ScrubbingFormatter(inner, secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Loggers of libraries that write secrets, kept above the level where they do (see _QUIET).
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, logging.getLevelName(level.upper())))
