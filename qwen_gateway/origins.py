"""Which browsers may use the gateway: the one place that decides on ``Origin`` and ``Host``.

Three rules, all applied by hooks in :mod:`qwen_gateway.app` (so every route gets them, later ones included):

- **CORS** (HTTP): responses carry ``Access-Control-Allow-Origin`` only for an origin listed in
  ``QG_CORS_ORIGINS`` (``*`` for any), so no other web page can read them.
- **WebSocket handshakes** (every WebSocket route, in every mode): the browser's ``Origin`` must be absent (not a
  browser), the gateway's own (the ``Host`` it was reached by, or ``QG_PUBLIC_URL``), or listed in
  ``QG_CORS_ORIGINS``; otherwise 403 before the upgrade. Browsers do not apply CORS to WebSockets: without this
  check any page the user visits could talk to a gateway the user's machine can reach.
- **Host** (open mode only: no gateway key is asked for): the ``Host`` header must name a loopback address
  (``localhost``, ``127.0.0.0/8``, ``::1``) or the configured public host (``QG_PUBLIC_URL``, default
  ``QG_HOST``). This defeats DNS rebinding, where an attacker's name resolves to 127.0.0.1 and makes the gateway
  same-origin with the attacker's page.

Pure: strings in, booleans out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .auth import KeyChecker, is_loopback
from .config import Settings

__all__ = ["OriginPolicy", "split_host"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """``host[:port]`` (as in a ``Host`` header) as a lower-case name and a port (None when absent or bad)."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:5000
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:  # a bare name, or a bare IPv6 address
        name, port = host, ""
    return name, int(port) if port.isdigit() and len(port) <= 5 else None


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or URL (the port filled in from the scheme), else None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class OriginPolicy:
    """The gateway's decisions on ``Origin`` and ``Host`` (see the module docstring)."""

    #: ``QG_CORS_ORIGINS`` entries, normalised (lower case, no trailing ``/``)
    cors_origins: frozenset[str]
    #: open mode (no credential asked for): the ``Host`` header is checked
    check_host: bool
    #: host names accepted in open mode besides loopback ones
    public_hosts: frozenset[str]
    #: the gateway's own origin when ``QG_PUBLIC_URL`` is set (also accepted as same origin)
    public_origin: tuple[str, str, int] | None
    _seen_hosts: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, keys: KeyChecker) -> OriginPolicy:
        public = settings.public_url or f"http://{settings.host}:{settings.port}"
        public_origin = _origin(public)
        hosts = {public_origin[1]} if public_origin else set()
        return cls(
            cors_origins=frozenset(o.strip().lower().rstrip("/") for o in settings.cors_origins),
            check_host=keys.open and not settings.key_passthrough,
            public_hosts=frozenset(h.strip("[]") for h in hosts),
            public_origin=_origin(settings.public_url) if settings.public_url else None,
        )

    @property
    def any_origin(self) -> bool:
        return "*" in self.cors_origins

    def cors_allowed(self, origin: str | None) -> bool:
        """Whether HTTP responses to a page of ``origin`` may be read by it (CORS headers are sent)."""
        if not origin:
            return False
        return self.any_origin or origin.strip().lower().rstrip("/") in self.cors_origins

    def host_allowed(self, host: str) -> bool:
        """Whether a request that named ``host`` (its ``Host`` header) is served."""
        if not self.check_host:
            return True
        # Every request asks: parsing costs ~15 us, a lookup ~0.1 us.
        ok = self._seen_hosts.get(host)
        if ok is None:
            name, _ = split_host(host)
            ok = bool(name) and (is_loopback(name) or name in self.public_hosts)
            if len(self._seen_hosts) >= 256:  # bounded, whatever Host values callers send
                self._seen_hosts.clear()
            self._seen_hosts[host] = ok
        return ok

    def websocket_origin_allowed(self, origin: str | None, host: str) -> bool:
        """Whether a WebSocket handshake from a page of ``origin``, to the gateway reached as ``host``, is
        accepted: no ``Origin`` (not a browser), the gateway's own origin, or one listed in ``QG_CORS_ORIGINS``."""
        if origin is None:
            return True
        if self.cors_allowed(origin):
            return True
        parsed = _origin(origin)
        if parsed is None:  # "null" (sandboxed frames, files) and anything unparsable
            return False
        if parsed == self.public_origin:
            return True
        name, port = split_host(host)
        return parsed[1] == name.strip("[]") and parsed[2] == (port or _DEFAULT_PORTS[parsed[0]])
