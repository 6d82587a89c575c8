"""Gateway API keys: ``Authorization: Bearer <key>`` (or ``?token=`` on WebSocket handshakes from browsers).

Keys come from ``QG_API_KEYS`` (comma-separated) and/or ``QG_API_KEYS_FILE`` (one SHA-256 hex digest per line,
``#`` comments allowed). Only digests are kept in memory; a presented key is hashed and compared with every
digest in constant time. Keys are never logged.

A caller also *owns* the conversations it writes: :meth:`KeyChecker.owner` names it by a keyed hash of its key
(BLAKE2b keyed with the owner secret, ``QG_OWNER_SECRET`` or ``owner.key`` in the data dir), so the same key gets
the same owner on every gateway sharing the secret, and the stored id reveals nothing of the key. In pass-through
mode the key is the caller's own DashScope key; in open keyless mode everybody is :data:`ANONYMOUS_OWNER`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from .config import ConfigError, Settings
from .storage.history import ANONYMOUS_OWNER

__all__ = ["KeyChecker", "bearer_token", "check_bind", "is_loopback"]


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
    ) -> None:
        self._digests = digests
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
        if settings.api_keys_file:
            for n, line in enumerate(Path(settings.api_keys_file).read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                try:
                    raw = bytes.fromhex(line)
                except ValueError:
                    raw = b""
                if len(raw) != 32:
                    raise ConfigError(
                        f"QG_API_KEYS_FILE line {n}: expected a SHA-256 hex digest (64 hex characters)"
                    )
                digests.append(raw)
        return cls(
            digests,
            enabled=settings.auth,
            passthrough=settings.key_passthrough,
            owner_secret=owner_secret,
        )

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
