"""Gateway API keys: ``Authorization: Bearer <key>`` (or ``?token=`` on WebSocket handshakes from browsers).

Keys come from ``QG_API_KEYS`` (comma-separated) and/or ``QG_API_KEYS_FILE`` (one SHA-256 hex digest per line,
``#`` comments allowed, optionally followed by ``field=value`` words: a ``name``, limit overrides and ``admin``,
see :func:`parse_key_line`). Only digests are kept in memory; a presented key is hashed and compared with every
digest in constant time. Keys are never logged.

A caller also *owns* the conversations it writes: :meth:`KeyChecker.owner` names it by a keyed hash of its key
(BLAKE2b keyed with the owner secret, ``QG_OWNER_SECRET`` or ``owner.key`` in the data dir), so the same key gets
the same owner on every gateway sharing the secret, and the stored id reveals nothing of the key. In pass-through
mode the key is the caller's own DashScope key; in open keyless mode everybody is :data:`ANONYMOUS_OWNER`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, Settings
from .storage.history import ANONYMOUS_OWNER

__all__ = ["KeyChecker", "KeyPolicy", "bearer_token", "check_bind", "is_loopback", "parse_key_line"]


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What the keys file says of one key beyond its digest.

    Attributes:
        name: a label for usage queries and logs ("" when none).
        limits: overrides of the default limits (``Limits`` field -> value; None lifts a limit).
        admin: the key may read every key's usage (``GET /v1/usage``).
    """

    name: str = ""
    limits: Mapping[str, int | float | None] = field(default_factory=dict)
    admin: bool = False


#: Keys-file words after the digest: word -> (``Limits`` field, type of its value).
_LIMIT_FIELDS: Mapping[str, tuple[str, type]] = {
    "rpm": ("rpm", int),
    "sessions": ("sessions", int),
    "tokens_per_day": ("tokens_per_day", int),
    "tts_chars_per_day": ("tts_chars_per_day", int),
    "audio_seconds_per_day": ("audio_seconds_per_day", float),
}
_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")


def parse_key_line(line: str, n: int = 0) -> tuple[bytes, KeyPolicy] | None:
    """One keys-file line: ``<sha256 hex> [name=NAME] [rpm=N] [sessions=N] [tokens_per_day=N]
    [tts_chars_per_day=N] [audio_seconds_per_day=X] [admin]`` (a limit ``none`` lifts the default); None for a
    blank or comment line. Raises :class:`ConfigError` naming the line."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    try:
        raw = bytes.fromhex(words[0])
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            f"QG_API_KEYS_FILE line {n}: expected a SHA-256 hex digest (64 hex characters)"
        )
    name, admin, limits = "", False, {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if key == "admin" and (not eq or value.lower() in ("1", "true", "yes", "on")):
            admin = True
        elif key == "name" and _NAME.match(value):
            name = value
        elif key in _LIMIT_FIELDS and eq:
            target, kind = _LIMIT_FIELDS[key]
            if value.lower() == "none":
                limits[target] = None
                continue
            try:
                number = kind(value)
            except ValueError:
                number = -1
            if number < 0:
                raise ConfigError(
                    f"QG_API_KEYS_FILE line {n}: {key}={value!r}: expected a number >= 0 or none"
                )
            limits[target] = number
        else:
            raise ConfigError(
                f"QG_API_KEYS_FILE line {n}: unknown field {word[:40]!r} (expected name=, "
                f"{'=, '.join(_LIMIT_FIELDS)}= or admin)"
            )
    return raw, KeyPolicy(name=name, limits=limits, admin=admin)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


#: BLAKE2b personalisation of the owner hash (its version: a new one makes new owners).
_OWNER_PERSON = b"qg-owner-v1"


class KeyChecker:
    """Checks presented keys against the configured gateway keys, and names the owner of a caller.

    Args:
        digests: SHA-256 digests of the gateway keys.
        enabled: whether keys are asked for (``QG_AUTH``).
        passthrough: callers present their own DashScope key (``QG_KEY_PASSTHROUGH``).
        owner_secret: the key of the owner hash (at least 32 bytes); a random one (owners that change at every
            start) when not given.
    """

    def __init__(
        self,
        digests: list[bytes],
        *,
        enabled: bool,
        passthrough: bool = False,
        owner_secret: bytes | None = None,
        policies: Mapping[bytes, KeyPolicy] | None = None,
    ) -> None:
        self._digests = digests
        self._policies = dict(policies or {})
        self.enabled = enabled
        self.passthrough = passthrough
        if owner_secret is not None and len(owner_secret) < 32:
            raise ValueError("owner_secret must be at least 32 bytes")
        secret = owner_secret or secrets.token_bytes(32)
        # BLAKE2b takes a key of at most 64 bytes: a longer secret is hashed down to one
        self._owner_key = secret if len(secret) <= 64 else hashlib.sha512(secret).digest()

    def __repr__(self) -> str:
        return (
            f"KeyChecker(keys={len(self._digests)}, enabled={self.enabled}, "
            f"passthrough={self.passthrough})"
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, owner_secret: bytes | None = None) -> KeyChecker:
        digests = [hashlib.sha256(k.encode()).digest() for k in settings.api_keys]
        policies: dict[bytes, KeyPolicy] = {}
        if settings.api_keys_file:
            for n, line in enumerate(Path(settings.api_keys_file).read_text().splitlines(), 1):
                parsed = parse_key_line(line, n)
                if parsed is None:
                    continue
                raw, policy = parsed
                digests.append(raw)
                if policy != KeyPolicy():
                    policies[raw] = policy
        return cls(
            digests,
            enabled=settings.auth,
            passthrough=settings.key_passthrough,
            owner_secret=owner_secret,
            policies=policies,
        )

    def policy(self, key: str | None) -> KeyPolicy:
        """The keys file's name, limit overrides and admin flag of ``key`` (an empty policy for other keys).
        Call it for admitted keys only (the lookup is not constant time)."""
        if not key or not self._policies:
            return _NO_POLICY
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        return self._policies.get(digest, _NO_POLICY)

    def named(self, name: str) -> KeyPolicy | None:
        """The policy of the key named ``name`` in the keys file, if any."""
        for policy in self._policies.values():
            if policy.name == name:
                return policy
        return None

    def is_admin(self, key: str | None) -> bool:
        """``key`` is a configured key flagged ``admin`` in the keys file."""
        return self.matches(key) and self.policy(key).admin

    @property
    def has_keys(self) -> bool:
        return bool(self._digests)

    @property
    def open(self) -> bool:
        """No key is asked for: auth is off, or no keys are configured (allowed on loopback only,
        see :func:`check_bind`)."""
        return not self.enabled or not self._digests

    def check(self, key: str | None) -> bool:
        """True when no key is asked for, or ``key`` is one of the configured keys (constant time)."""
        return self.open or self.matches(key)

    def matches(self, key: str | None) -> bool:
        """True only when auth is on and ``key`` is one of the configured keys (constant time): a real
        credential, whatever the mode (open mode accepts no key here)."""
        if not self.enabled or not key:
            return False
        presented = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(presented, digest)
        return ok

    def owner(self, key: str | None) -> str:
        """The owner id of a caller presenting ``key`` (already admitted): ``k_`` and 32 hex digits of
        BLAKE2b-128 keyed with the owner secret (a MAC: without the secret, owner ids say nothing of the keys, and
        cannot be checked against guessed keys); :data:`ANONYMOUS_OWNER` in open mode (no keys asked for, no
        pass-through) or without a key."""
        if not key or (self.open and not self.passthrough):
            return ANONYMOUS_OWNER
        mac = hashlib.blake2b(
            key.encode(), key=self._owner_key, digest_size=16, person=_OWNER_PERSON
        )
        return "k_" + mac.hexdigest()


_NO_POLICY = KeyPolicy()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, checker: KeyChecker) -> None:
    """Refuse to serve without keys on a non-loopback address unless auth is explicitly off."""
    if checker.enabled and not checker.has_keys and not is_loopback(settings.host):
        raise ConfigError(
            f"QG_HOST={settings.host}: no gateway keys are configured (QG_API_KEYS or "
            "QG_API_KEYS_FILE), so the gateway only listens on a loopback address. Set keys, "
            "or disable auth explicitly with QG_AUTH=off."
        )
