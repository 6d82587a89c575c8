"""The environment reference (``docs/configuration.md``), generated from the ``Settings`` dataclass.

Every field with an ``env`` name is a row: the variable, its type, its default and a description. The
description is the field's ``doc`` metadata when it has one, else its ``#:`` comment in ``config.py`` (the
attribute-comment convention Sphinx reads too), so a new setting appears with its comment and nothing else to
edit. ``qwen-gateway config-reference`` writes the file; ``--check`` (and a test) fail when it is out of date.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

from .config import Settings

__all__ = ["DEFAULT_PATH", "field_comments", "render"]

DEFAULT_PATH = Path("docs") / "configuration.md"

_FIELD = re.compile(r"^\s+(\w+)\s*:")
_COMMENT = re.compile(r"^\s+#:\s?(.*)$")
_SECTION = re.compile(r"^\s+# ---\s*(.+?)\s*---\s*$")


def field_comments(cls: type = Settings) -> tuple[dict[str, str], dict[str, str]]:
    """(field -> its ``#:`` comment, field -> the ``# --- section ---`` it is under), read from the source."""
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # base classes first: a subclass's comment wins
        if dataclasses.is_dataclass(klass):
            _read_comments(inspect.getsource(klass), comments, sections)
    return comments, sections


def _read_comments(source: str, comments: dict[str, str], sections: dict[str, str]) -> None:
    pending: list[str] = []
    section = ""
    for line in source.splitlines():
        if m := _COMMENT.match(line):
            pending.append(m.group(1).strip())
            continue
        if m := _SECTION.match(line):
            section = m.group(1)
            pending = []
            continue
        m = _FIELD.match(line)
        if m and not line.lstrip().startswith(("def ", "@", "#")):
            name = m.group(1)
            if pending:
                comments[name] = " ".join(pending)
            sections[name] = section
        pending = []


def _type_name(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return {"tuple[str, ...]": "list (comma-separated)", "Path": "path", "str": "text"}.get(
        text, text
    )


def _default(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("secret"):
        return "(secret)" if f.default not in ("", None, ()) else "(empty)"
    value: Any = f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    if isinstance(value, bool):
        return "`on`" if value else "`off`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(empty)"
    if value in ("", None):
        return "(empty)"
    return f"`{value}`"


_ROLE = re.compile(r":\w+:`([^`]+)`")


def _cell(text: str) -> str:
    """Markdown of a ``#:`` comment (reST literals and roles become code spans)."""
    text = _ROLE.sub(r"`\1`", text.replace("``", "`"))
    return text.replace("|", "\\|").replace("\n", " ")


def render(cls: type = Settings) -> str:
    """The Markdown reference of every setting of ``cls``."""
    comments, sections = field_comments(cls)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from qwen_gateway/config.py by `qwen-gateway config-reference`: do not edit by hand. -->",
        "",
        "Every setting is read once at start from the environment, then from `.env` (values already in the",
        "environment win); `serve` options override both (`qwen-gateway serve --help`). A bad value stops the",
        "start with a message naming the variable. Empty means unset. Seed-era names (`QWEN_API_KEY`, `DB_HOST`,",
        "`BUCKET` ...) are kept so that an existing `.env` keeps working; everything else is `QG_*`.",
        "",
    ]
    section = None
    for f in dataclasses.fields(cls):
        env = f.metadata.get("env")
        if not env:
            continue
        here = sections.get(f.name, "")
        if here != section:
            section = here
            lines += [
                f"## {here[:1].upper() + here[1:] if here else 'Other'}",
                "",
                "| Variable | Type | Default | Description |",
                "|---|---|---|---|",
            ]
        doc = f.metadata.get("doc") or comments.get(f.name, "")
        lines.append(f"| `{env}` | {_type_name(f.type)} | {_cell(_default(f))} | {_cell(doc)} |")
    out: list[str] = []
    for line in lines:  # a blank line after each table
        if out and out[-1].startswith("|") and line.startswith("## "):
            out.append("")
        out.append(line)
    return "\n".join(out) + "\n"
