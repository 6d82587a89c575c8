"""Gateway API keys: ``Authorization: Bearer <key>`` (or ``?token=`` on WebSocket handshakes from browsers).

Keys come from ``QG_API_KEYS`` (comma-separated) and/or ``QG_API_KEYS_FILE`` (one SHA-256 hex digest per line,
``#`` comments allowed). Only digests are kept in memory; a presented key is hashed and compared with every
digest in constant time. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .config import ConfigError, Settings

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


class KeyChecker:
    """Checks presented keys against the configured gateway keys."""

    def __init__(self, digests: list[bytes], *, enabled: bool) -> None:
        self._digests = digests
        self.enabled = enabled

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyChecker:
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
        return cls(digests, enabled=settings.auth)

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
