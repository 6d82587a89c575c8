"""``OriginPolicy``: the one decision on ``Origin`` (CORS, WebSocket handshakes) and ``Host`` (open mode)."""

from __future__ import annotations

from typing import Any

import pytest

from qwen_gateway.auth import KeyChecker
from qwen_gateway.config import load_settings
from qwen_gateway.origins import OriginPolicy, split_host


def policy(**env: str) -> OriginPolicy:
    settings = load_settings(env, dotenv=None)
    return OriginPolicy.from_settings(settings, KeyChecker.from_settings(settings))


@pytest.mark.parametrize(
    ("host", "split"),
    [
        ("127.0.0.1:5000", ("127.0.0.1", 5000)),
        ("LocalHost", ("localhost", None)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("gw.example:notaport", ("gw.example", None)),
        ("", ("", None)),
    ],
)
def test_split_host(host: str, split: tuple[str, int | None]) -> None:
    assert split_host(host) == split


#: (settings, Origin, Host the gateway was reached by, accepted)
WEBSOCKET_CASES: list[tuple[dict[str, str], str, str, bool]] = [
    ({}, "http://127.0.0.1:5000", "127.0.0.1:5000", True),  # the gateway's own page
    ({}, "http://LOCALHOST:5000", "localhost:5000", True),
    ({}, "https://gw.example", "gw.example", True),  # default ports filled in
    ({}, "https://gw.example", "gw.example:443", True),
    ({}, "http://gw.example", "gw.example:443", False),
    ({}, "http://127.0.0.1:5001", "127.0.0.1:5000", False),  # another port is another origin
    ({}, "http://localhost:5000", "127.0.0.1:5000", False),
    ({}, "https://evil.example", "127.0.0.1:5000", False),
    ({}, "null", "127.0.0.1:5000", False),
    ({}, "not a url", "127.0.0.1:5000", False),
    ({}, "http://[::1]:5000", "[::1]:5000", True),
    ({"QG_CORS_ORIGINS": "https://app.example"}, "https://app.example", "127.0.0.1:5000", True),
    ({"QG_CORS_ORIGINS": "https://App.example/"}, "https://app.example", "x", True),
    ({"QG_CORS_ORIGINS": "https://app.example"}, "https://app.example:8443", "x", False),
    ({"QG_CORS_ORIGINS": "*"}, "https://anyone.example", "x", True),
    ({"QG_PUBLIC_URL": "https://gw.example"}, "https://gw.example", "10.0.0.5:5000", True),
    ({"QG_API_KEYS": "k"}, "https://evil.example", "gw.example", False),  # every mode
]


@pytest.mark.parametrize(("env", "origin", "host", "ok"), WEBSOCKET_CASES)
def test_websocket_origin(env: dict[str, str], origin: str, host: str, ok: bool) -> None:
    assert policy(**env).websocket_origin_allowed(origin, host) is ok


def test_no_origin_is_not_a_browser() -> None:
    assert policy().websocket_origin_allowed(None, "anything")


#: (settings, Host header, accepted)
HOST_CASES: list[tuple[dict[str, Any], str, bool]] = [
    ({}, "127.0.0.1:5000", True),
    ({}, "127.9.9.9", True),
    ({}, "localhost", True),
    ({}, "[::1]:5000", True),
    ({}, "rebind.evil.example:5000", False),
    ({}, "localhost.evil.example", False),
    ({}, "", False),
    ({"QG_PUBLIC_URL": "https://gw.example/base"}, "gw.example", True),
    ({"QG_PUBLIC_URL": "https://gw.example"}, "GW.example:443", True),
    ({"QG_HOST": "0.0.0.0", "QG_AUTH": "off"}, "192.0.2.1", False),
    (
        {"QG_HOST": "0.0.0.0", "QG_AUTH": "off", "QG_PUBLIC_URL": "http://192.0.2.1:5000"},
        "192.0.2.1:5000",
        True,
    ),
    # A credential is asked for: no Host check.
    ({"QG_API_KEYS": "k"}, "anything.example", True),
    ({"QG_KEY_PASSTHROUGH": "on"}, "anything.example", True),
]


@pytest.mark.parametrize(("env", "host", "ok"), HOST_CASES)
def test_host(env: dict[str, str], host: str, ok: bool) -> None:
    assert policy(**env).host_allowed(host) is ok


def test_cors() -> None:
    listed = policy(QG_CORS_ORIGINS="https://app.example, https://two.example")
    assert listed.cors_allowed("https://app.example")
    assert listed.cors_allowed("https://two.example")
    assert not listed.cors_allowed("https://evil.example")
    assert not listed.cors_allowed(None)
    assert not policy().cors_allowed("http://127.0.0.1:5000")  # same origin needs no CORS headers
    assert policy(QG_CORS_ORIGINS="*").cors_allowed("https://evil.example")


def test_host_decisions_stay_right_for_many_hosts() -> None:
    """Decisions are remembered, within a bound: many distinct Host values change no answer."""
    p = policy()
    for i in range(1000):
        assert not p.host_allowed(f"h{i}.rebind.evil.example")
        assert p.host_allowed(f"127.0.0.{i % 250 + 1}:5000")
    assert p.host_allowed("localhost") and not p.host_allowed("h1.rebind.evil.example")
