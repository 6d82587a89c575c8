"""Object storage for uploaded audio and images and spoken answers: the interface, keys, and the local engine.

Engines: :class:`LocalObjectStore` (the embedded default: a folder under the data dir, served by the gateway at
``/objects/<key>``) and :class:`qwen_gateway.storage.oss.OssObjectStore` (Aliyun OSS via oss2).

Keys are always made by the gateway (:func:`new_object_key`), never taken from a client, in the seed's layout
so that tooling reading the bucket keeps working::

    audio/20240101/audio_<session>_20240101_120000_<random>.mp3
    image/20240101/image_<session>_20240101_120000_<random>.jpg

Every engine accepts only keys of that form (:func:`validate_key`), so no key can name a path outside its folder.

Errors::

    StorageError (qwen_gateway.errors)
    └── ObjectStoreError             code, status, transient, request_id
        ├── InvalidObjectKey         not a key the gateway makes (also a ValueError)
        ├── ObjectNotFound           no object under that key
        ├── ObjectAccessDenied       credentials, signature or permissions refused
        └── ObjectStoreUnavailable   5xx, network error: a retry may succeed
            └── ObjectStoreTimeout   no answer in time
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from urllib.parse import quote, urlencode

from qwen_gateway.errors import StorageError

__all__ = [
    "CONTENT_TYPES",
    "InvalidObjectKey",
    "LocalObjectStore",
    "ObjectAccessDenied",
    "ObjectKind",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreTimeout",
    "ObjectStoreUnavailable",
    "StoredObject",
    "content_type_for",
    "load_signing_secret",
    "new_object_key",
    "validate_key",
]

log = logging.getLogger("qwen_gateway.storage.objects")

T = TypeVar("T")

#: What a stored object is: the user's audio, the user's image, the spoken answer.
ObjectKind = Literal["audio", "image", "tts"]

#: Extensions the gateway stores, with the Content-Type each is served with.
CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "application/octet-stream",
    "opus": "audio/opus",
    "ogg": "audio/ogg",
    "webm": "audio/webm",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "m4a": "audio/mp4",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
}

_KINDS = ("audio", "image", "tts")
_SESSION_MAX = 64
MAX_KEY_LENGTH = 200
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")
_KEY_RE = re.compile(
    r"(?:audio|image|tts)/[0-9]{8}/[A-Za-z0-9][A-Za-z0-9_-]{0,150}\.(?:"
    + "|".join(sorted(CONTENT_TYPES))
    + r")"
)


class ObjectStoreError(StorageError):
    """An object-store operation failed.

    Attributes:
        code: the engine's error code (OSS ``Code`` such as ``SignatureDoesNotMatch``, or ours).
        status: the HTTP status that goes with it (0 when there was no answer).
        transient: a retry may succeed.
        request_id: the engine's request id, for support tickets ("" when none).
    """

    transient = False

    def __init__(
        self, message: str, *, code: str = "", status: int = 0, request_id: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class InvalidObjectKey(ObjectStoreError, ValueError):
    """The key is not one the gateway generates (traversal, absolute path, NUL, too long, bad extension...)."""


class ObjectNotFound(ObjectStoreError):
    """No object is stored under the key."""


class ObjectAccessDenied(ObjectStoreError):
    """The store refused our credentials, signature or permissions."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The store failed or could not be reached; a retry may succeed."""

    transient = True


class ObjectStoreTimeout(ObjectStoreUnavailable):
    """The store did not answer in time."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object just stored.

    Attributes:
        key: where it is stored.
        url: a link that fetches it (presigned unless the store serves it publicly): the events' ``oss_url``.
        size: bytes stored.
        content_type: the Content-Type it is served with.
        etag: the store's entity tag, when it gives one.
    """

    key: str
    url: str
    size: int
    content_type: str
    etag: str | None = None


def validate_key(key: str) -> str:
    """Return ``key`` if it has the form :func:`new_object_key` makes; raise :class:`InvalidObjectKey` otherwise."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not _KEY_RE.fullmatch(key):
        shown = repr(key)[:80]
        raise InvalidObjectKey(
            f"not a valid object key: {shown}", code="InvalidObjectName", status=400
        )
    return key


def content_type_for(key: str) -> str:
    """The Content-Type a (valid) key is served with, from its extension."""
    return CONTENT_TYPES[validate_key(key).rsplit(".", 1)[1]]


def new_object_key(kind: ObjectKind, session_id: str, ext: str, now: datetime | None = None) -> str:
    """A fresh key in the seed's layout: ``<kind>/<yyyymmdd>/<kind>_<session>_<yyyymmdd_hhmmss>_<random>.<ext>``.

    ``session_id`` is reduced to letters, digits, ``-`` and ``_`` (at most 64); ``now`` defaults to the current
    UTC time. Raises ``ValueError`` for an unknown kind or extension.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    ext = ext.lower().lstrip(".")
    if ext not in CONTENT_TYPES:
        raise ValueError(f"unsupported object extension {ext!r}")
    when = now if now is not None else datetime.now(UTC)
    session = re.sub(r"[^A-Za-z0-9_-]", "", session_id)[:_SESSION_MAX] or "anon"
    key = f"{kind}/{when:%Y%m%d}/{kind}_{session}_{when:%Y%m%d_%H%M%S}_{secrets.token_hex(4)}.{ext}"
    return validate_key(key)


def load_signing_secret(path: Path) -> bytes:
    """The secret that signs object links, created (32 random bytes, mode 0600) on first use.

    Kept in a file so that links stay valid across restarts and across processes sharing the data dir.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
    for _ in range(50):  # another process may be writing it right now
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
        time.sleep(0.01)
    raise StorageError(f"{path}: signing secret is too short")


class ObjectStore(Protocol):
    """Where uploaded audio/images and spoken answers are kept. Keys come from :meth:`new_key` only."""

    @property
    def engine(self) -> str:
        """``"local"`` or ``"oss"``."""
        ...

    def new_key(
        self, kind: ObjectKind, session_id: str, ext: str, now: datetime | None = None
    ) -> str:
        """A fresh key (see :func:`new_object_key`)."""
        ...

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        """Store ``data`` under ``key`` (replacing any object there) and return where it is."""
        ...

    async def get(self, key: str) -> bytes:
        """The object's bytes. Raises :class:`ObjectNotFound`."""
        ...

    async def exists(self, key: str) -> bool:
        """True when an object is stored under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""
        ...

    def presigned_url(self, key: str, expires: int) -> str:
        """A GET link that works without other credentials for ``expires`` seconds."""
        ...

    async def ping(self) -> None:
        """Check the store works (reachable, credentials accepted); raise :class:`ObjectStoreError` if not."""
        ...

    async def aclose(self) -> None:
        """Release threads and connections."""
        ...


class LocalObjectStore:
    """:class:`ObjectStore` in a local folder, served by the gateway (``routes/objects.py``).

    Links are ``<public_base_url>/objects/<key>?expires=<epoch>&token=<hmac>``: the token is an HMAC-SHA256 of
    the key and expiry under ``signing_secret``, so a link cannot be altered to reach another object or to live
    longer. File I/O runs in a small thread pool.

    Args:
        root: the folder (created when missing).
        public_base_url: how clients reach the gateway, e.g. ``http://127.0.0.1:5000``.
        signing_secret: at least 32 bytes (see :func:`load_signing_secret`).
        url_expires: lifetime in seconds of the links :meth:`put` returns.
        route_prefix: where ``routes/objects.py`` serves the folder.
    """

    engine = "local"

    def __init__(
        self,
        root: Path,
        public_base_url: str,
        signing_secret: bytes,
        *,
        url_expires: int = 7 * 24 * 3600,
        route_prefix: str = "/objects",
        max_workers: int = 4,
    ) -> None:
        if len(signing_secret) < 32:
            raise ValueError("signing_secret must be at least 32 bytes")
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self.route_prefix = "/" + route_prefix.strip("/")
        self.url_expires = url_expires
        self._secret = signing_secret
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="qg-objects"
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # ------------------------------------------------------------------ keys and links
    def new_key(
        self, kind: ObjectKind, session_id: str, ext: str, now: datetime | None = None
    ) -> str:
        return new_object_key(kind, session_id, ext, now)

    def path_for(self, key: str) -> Path:
        """The file of a key, guaranteed inside :attr:`root` (symlinks resolved). Raises InvalidObjectKey."""
        validate_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidObjectKey(
                f"not a valid object key: {key[:80]!r}", code="InvalidObjectName", status=400
            )
        return path

    def _token(self, key: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"GET\n{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def presigned_url(self, key: str, expires: int) -> str:
        validate_key(key)
        if expires <= 0:
            raise ValueError("expires must be > 0 seconds")
        deadline = int(time.time()) + int(expires)
        query = urlencode({"expires": deadline, "token": self._token(key, deadline)})
        return f"{self.public_base_url}{self.route_prefix}/{quote(key, safe='/')}?{query}"

    def verify_token(
        self, key: str, expires: str | None, token: str | None, *, now: float | None = None
    ) -> bool:
        """True when ``token`` was made by :meth:`presigned_url` for this key and has not expired."""
        if not expires or not token or not _EXPIRES_RE.fullmatch(expires) or len(token) > 64:
            return False
        if not token.isascii():  # compare_digest raises on non-ASCII str; no token we make has any
            return False
        deadline = int(expires)
        if deadline < (time.time() if now is None else now):
            return False
        try:
            validate_key(key)
        except InvalidObjectKey:
            return False
        return hmac.compare_digest(self._token(key, deadline), token)

    # ------------------------------------------------------------------ I/O
    async def _io(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise ObjectStoreError("object store is closed", code="Closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except ObjectStoreError:
            raise
        except OSError as exc:
            raise ObjectStoreUnavailable(
                f"local object store: {exc.strerror or exc}", code="IOError"
            ) from exc

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self.path_for(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        await self._io(write)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return StoredObject(
            key=key,
            url=self.presigned_url(key, self.url_expires),
            size=len(data),
            content_type=content_type,
            etag=etag,
        )

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await self._io(path.read_bytes)
        except ObjectStoreUnavailable as exc:
            if isinstance(exc.__cause__, FileNotFoundError | IsADirectoryError):
                raise ObjectNotFound(f"no object {key}", code="NoSuchKey", status=404) from None
            raise

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await self._io(path.is_file)

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        await self._io(lambda: path.unlink(missing_ok=True))

    async def ping(self) -> None:
        def check() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise ObjectStoreUnavailable(f"{self.root} is not writable", code="NotWritable")

        await self._io(check)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False)  # queued calls still finish; threads end after
