"""The switch between the quick suite (``make test``) and the long one: ``QG_TEST_LONG=1`` scales the number of
generated cases (fuzzing, schemathesis, reliability runs) up."""

from __future__ import annotations

import os

#: True when ``QG_TEST_LONG=1`` (or ``true``/``yes``/``on``) is set.
LONG = os.environ.get("QG_TEST_LONG", "").strip().lower() in {"1", "true", "yes", "on"}


def scaled(quick: int, long: int) -> int:
    """``long`` under ``QG_TEST_LONG=1``, ``quick`` otherwise."""
    return long if LONG else quick
