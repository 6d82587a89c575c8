"""``QG_UPSTREAM_MAX_EVENT_BYTES`` / ``QG_UPSTREAM_MAX_BODY_BYTES``: defaults, bad values, listed by ``serve --help``
(what they bound is tested in tests/providers/test_upstream_bounds.py and tests/api/test_upstream_bounds.py)."""

from __future__ import annotations

import pytest

from qwen_gateway.__main__ import main
from qwen_gateway.config import ConfigError, load_settings


def test_defaults_and_values() -> None:
    default = load_settings({}, dotenv=None)
    assert (default.upstream_max_event_bytes, default.upstream_max_body_bytes) == (
        1024 * 1024,
        16 * 1024 * 1024,
    )
    s = load_settings(
        {"QG_UPSTREAM_MAX_EVENT_BYTES": "65536", "QG_UPSTREAM_MAX_BODY_BYTES": "1048576"},
        dotenv=None,
    )
    assert (s.upstream_max_event_bytes, s.upstream_max_body_bytes) == (65536, 1048576)


@pytest.mark.parametrize("name", ["QG_UPSTREAM_MAX_EVENT_BYTES", "QG_UPSTREAM_MAX_BODY_BYTES"])
@pytest.mark.parametrize("raw", ["0", "-1", "lots"])
def test_a_bad_value_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: raw}, dotenv=None)


def test_serve_help_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "QG_UPSTREAM_MAX_EVENT_BYTES" in out and "QG_UPSTREAM_MAX_BODY_BYTES" in out
