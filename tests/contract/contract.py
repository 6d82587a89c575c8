"""Validation against the committed contract files in ``schemas/``."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return loaded


@functools.cache
def validator(name: str, definition: str | None = None) -> Draft202012Validator:
    """A validator for the root of ``schemas/<name>``, or for one of its ``$defs``."""
    schema = document(name)
    if definition is not None:
        assert definition in schema["$defs"], f"{name} has no $defs/{definition}"
        schema = {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    return Draft202012Validator(schema)


def valid(name: str, instance: Any, definition: str | None = None) -> bool:
    return validator(name, definition).is_valid(instance)


def errors(name: str, instance: Any, definition: str | None = None) -> list[str]:
    return [e.message for e in validator(name, definition).iter_errors(instance)]
