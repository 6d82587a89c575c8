"""Gateway keys: bearer parsing, key files of SHA-256 digests, the loopback-only rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qwen_gateway.auth import KeyChecker, bearer_token, check_bind, is_loopback
from qwen_gateway.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "# team keys\n" + hashlib.sha256(b"file-key").hexdigest() + "  # device fleet\n\n"
    )
    s = load_settings({"QG_API_KEYS": "env-key", "QG_API_KEYS_FILE": str(keys_file)}, dotenv=None)
    checker = KeyChecker.from_settings(s)
    assert checker.check("env-key")
    assert checker.check("file-key")
    assert not checker.check("other")
    assert not checker.check(None)
    assert not checker.check("")


def test_bad_key_file_line_is_a_config_error(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("not-a-digest\n")
    s = load_settings({"QG_API_KEYS_FILE": str(keys_file)}, dotenv=None)
    with pytest.raises(ConfigError, match="QG_API_KEYS_FILE line 1"):
        KeyChecker.from_settings(s)


def test_auth_off_accepts_anything() -> None:
    s = load_settings({"QG_API_KEYS": "k", "QG_AUTH": "off"}, dotenv=None)
    assert KeyChecker.from_settings(s).check(None)


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.0.2.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_no_keys_refuses_public_bind_unless_auth_off() -> None:
    public = load_settings({"QG_HOST": "0.0.0.0"}, dotenv=None)
    with pytest.raises(ConfigError, match="QG_AUTH=off"):
        check_bind(public, KeyChecker.from_settings(public))
    off = load_settings({"QG_HOST": "0.0.0.0", "QG_AUTH": "off"}, dotenv=None)
    check_bind(off, KeyChecker.from_settings(off))
    keyed = load_settings({"QG_HOST": "0.0.0.0", "QG_API_KEYS": "k"}, dotenv=None)
    check_bind(keyed, KeyChecker.from_settings(keyed))
    local = load_settings({}, dotenv=None)
    check_bind(local, KeyChecker.from_settings(local))
    assert KeyChecker.from_settings(local).check(None)  # open on loopback without keys
