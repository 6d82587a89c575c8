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


# ------------------------------------------------------------------------------------------ conversation owners


def test_owners_are_keyed_hashes_stable_under_one_secret(tmp_path: Path) -> None:
    from qwen_gateway.services import load_owner_secret
    from qwen_gateway.storage.history import ANONYMOUS_OWNER, TurnRecord

    keys_file = tmp_path / "keys"
    keys_file.write_text(hashlib.sha256(b"file-key").hexdigest() + "\n")
    env = {"QG_API_KEYS": "env-key", "QG_API_KEYS_FILE": str(keys_file)}
    s = load_settings(env, dotenv=None, data_dir=tmp_path / "data")
    secret = load_owner_secret(s)
    assert (tmp_path / "data" / "owner.key").stat().st_mode & 0o777 == 0o600
    assert load_owner_secret(s) == secret  # kept across restarts
    one = KeyChecker.from_settings(s, owner_secret=secret)
    again = KeyChecker.from_settings(s, owner_secret=secret)
    other = KeyChecker.from_settings(s, owner_secret=b"x" * 32)

    owners = {one.owner("env-key"), one.owner("file-key")}
    assert len(owners) == 2
    assert again.owner("env-key") == one.owner("env-key")  # another process, same secret
    assert other.owner("env-key") != one.owner("env-key")
    for owner in owners:
        assert "key" not in owner and owner.startswith("k_") and len(owner) == 34
        TurnRecord.new(
            conversation_id="c", channel="chat", model="m", user_content="u", owner=owner
        )
    assert "env-key" not in repr(one) and "file-key" not in repr(one)

    # QG_OWNER_SECRET wins over the file, and must be long enough to be a key
    configured = load_settings({**env, "QG_OWNER_SECRET": "s" * 40}, dotenv=None)
    assert load_owner_secret(configured) == b"s" * 40
    with pytest.raises(ConfigError, match="QG_OWNER_SECRET"):
        load_settings({"QG_OWNER_SECRET": "short"}, dotenv=None)

    # open keyless mode: everybody is one anonymous owner; pass-through: the bearer decides
    open_mode = KeyChecker.from_settings(load_settings({}, dotenv=None), owner_secret=secret)
    assert open_mode.owner("a") == open_mode.owner("b") == open_mode.owner(None) == ANONYMOUS_OWNER
    passthrough = KeyChecker.from_settings(
        load_settings({"QG_KEY_PASSTHROUGH": "on"}, dotenv=None), owner_secret=secret
    )
    assert passthrough.owner("sk-a") != passthrough.owner("sk-b")
    assert passthrough.owner("sk-a").startswith("k_")
