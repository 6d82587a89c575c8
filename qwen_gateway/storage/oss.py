"""Aliyun OSS object store via oss2: signature V4, a bounded thread pool, timeouts, typed errors, retries.

oss2 is synchronous (requests). Its calls run in a dedicated thread pool whose size equals the HTTP connection
pool's, so no thread waits for a connection and none is thrown away. Each call is bounded twice: requests'
(connect, read) timeouts inside the thread, and an overall deadline the caller awaits (the caller returns at the
deadline even if the thread is still waiting on a slow socket; the thread ends at the socket timeout).
Transient failures (5xx, network, timeouts, CRC mismatch) are retried with backoff; every oss2 error becomes an
:class:`~qwen_gateway.storage.objects.ObjectStoreError` subclass.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import oss2  # type: ignore[import-untyped]
import requests
from oss2 import exceptions as osserr

from qwen_gateway.storage.objects import (
    ObjectAccessDenied,
    ObjectKind,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreTimeout,
    ObjectStoreUnavailable,
    StoredObject,
    new_object_key,
    validate_key,
)

if TYPE_CHECKING:
    from qwen_gateway.config import Settings

__all__ = ["OssObjectStore", "oss_endpoint"]

log = logging.getLogger("qwen_gateway.storage.oss")

T = TypeVar("T")

#: A key that is never written: :meth:`OssObjectStore.ping` asks for it to check reachability and credentials.
_PING_KEY = "qwen-gateway-ping/.probe"
_DENIED = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "RequestTimeTooSkewed"}


def oss_endpoint(region: str, endpoint: str = "") -> str:
    """The endpoint to use: the configured one, else ``https://oss-<region>.aliyuncs.com``."""
    if endpoint:
        return endpoint if "://" in endpoint else f"https://{endpoint}"
    region = region.strip()
    if region.startswith("oss-"):
        region = region[4:]
    return f"https://oss-{region}.aliyuncs.com"


def _map_error(exc: Exception, what: str) -> ObjectStoreError:
    """Turn an oss2 error into ours. Messages carry OSS's code and request id, never credentials."""
    if isinstance(exc, osserr.RequestError):
        inner = getattr(exc, "exception", None)
        if isinstance(inner, requests.Timeout):
            return ObjectStoreTimeout(f"OSS {what}: timed out", code="RequestTimeout")
        return ObjectStoreUnavailable(
            f"OSS {what}: cannot reach the endpoint ({type(inner).__name__})", code="RequestError"
        )
    if isinstance(exc, osserr.InconsistentError):
        return ObjectStoreUnavailable(
            f"OSS {what}: CRC check failed", code="InconsistentError", request_id=exc.request_id
        )
    if isinstance(exc, osserr.ClientError):
        return ObjectStoreError(f"OSS {what}: {exc.body}", code="ClientError")
    if isinstance(exc, osserr.OssError):
        code = exc.code or ""
        status = int(exc.status)
        detail = f"OSS {what}: {code or 'error'} (HTTP {status}, request {exc.request_id or '-'})"
        if status == 404 and code != "NoSuchBucket":
            return ObjectNotFound(
                detail, code=code or "NoSuchKey", status=404, request_id=exc.request_id
            )
        if status == 403 or code in _DENIED:
            return ObjectAccessDenied(detail, code=code, status=status, request_id=exc.request_id)
        if status >= 500 or status == 429:
            return ObjectStoreUnavailable(
                detail, code=code, status=status, request_id=exc.request_id
            )
        return ObjectStoreError(detail, code=code, status=status, request_id=exc.request_id)
    return ObjectStoreError(f"OSS {what}: {type(exc).__name__}: {exc}", code="Unexpected")


class OssObjectStore:
    """:class:`~qwen_gateway.storage.objects.ObjectStore` on an Aliyun OSS bucket.

    Args:
        access_key_id, access_key_secret, bucket, region: the seed's ``ACCESSKEY_ID``, ``ACCESSKEY_SECRET``,
            ``BUCKET``, ``REGIN``.
        endpoint: overrides ``https://oss-<region>.aliyuncs.com`` (an IP or ``localhost`` endpoint gets
            path-style URLs, as oss2 does).
        public_base_url: when the bucket (or a CDN in front) is public, links are ``<base>/<key>``; otherwise
            links are presigned GET URLs valid ``url_expires`` seconds.
        pool_size: threads and HTTP connections.
        connect_timeout, read_timeout: requests' socket timeouts, seconds.
        op_timeout: overall seconds one call (its retries included) may take; default from the two above.
        retries: extra attempts after a transient failure.
        signature_version: ``"v4"`` (default; required for new buckets) or ``"v1"`` for old buckets.
    """

    engine = "oss"

    def __init__(
        self,
        *,
        access_key_id: str,
        access_key_secret: str,
        bucket: str,
        region: str,
        endpoint: str = "",
        public_base_url: str = "",
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        op_timeout: float | None = None,
        retries: int = 2,
        retry_backoff: float = 0.2,
        url_expires: int = 24 * 3600,
        signature_version: Literal["v4", "v1"] = "v4",
    ) -> None:
        if not (access_key_id and access_key_secret and bucket):
            raise ValueError("OSS needs an access key id, its secret and a bucket")
        self.bucket_name = bucket
        self.region = region
        self.endpoint = oss_endpoint(region, endpoint)
        self.public_base_url = public_base_url.rstrip("/")
        self.url_expires = url_expires
        self._retries = max(0, retries)
        self._retry_backoff = retry_backoff
        self._op_timeout = (
            op_timeout
            if op_timeout is not None
            else (connect_timeout + read_timeout) * (self._retries + 1) + 1.0
        )
        auth: Any
        if signature_version == "v4":
            auth = oss2.AuthV4(access_key_id, access_key_secret)
        elif signature_version == "v1":
            auth = oss2.Auth(access_key_id, access_key_secret)
        else:
            raise ValueError(f"unknown OSS signature version {signature_version!r}")
        self._bucket = oss2.Bucket(
            auth,
            self.endpoint,
            bucket,
            session=oss2.Session(pool_size=pool_size),
            connect_timeout=(connect_timeout, read_timeout),
            region=region,
            enable_crc=True,
        )
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="qg-oss")
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OssObjectStore:
        """The store the settings describe (``ACCESSKEY_ID``, ``ACCESSKEY_SECRET``, ``BUCKET``, ``REGIN``...)."""
        return cls(
            access_key_id=settings.oss_access_key_id,
            access_key_secret=settings.oss_access_key_secret,
            bucket=settings.oss_bucket,
            region=settings.oss_region,
            endpoint=settings.oss_endpoint,
            public_base_url=settings.oss_public_base_url,
            pool_size=settings.oss_pool_size,
            connect_timeout=settings.connect_timeout,
            read_timeout=min(settings.read_timeout, 60.0),
            retries=settings.upstream_retries,
        )

    def __repr__(self) -> str:
        return f"OssObjectStore(bucket={self.bucket_name!r}, endpoint={self.endpoint!r})"

    # ------------------------------------------------------------------ plumbing
    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise ObjectStoreError("object store is closed", code="Closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._op_timeout):
                attempt = 0
                while True:
                    try:
                        return await loop.run_in_executor(self._executor, fn)
                    except osserr.OssError as exc:
                        error = _map_error(exc, what)
                    if not error.transient or attempt >= self._retries:
                        raise error
                    attempt += 1
                    log.info(
                        "OSS %s failed (%s), retry %d/%d", what, error.code, attempt, self._retries
                    )
                    await asyncio.sleep(self._retry_backoff * 2 ** (attempt - 1))
        except TimeoutError:
            raise ObjectStoreTimeout(
                f"OSS {what}: no answer within {self._op_timeout:g}s", code="RequestTimeout"
            ) from None

    # ------------------------------------------------------------------ keys and links
    def new_key(
        self, kind: ObjectKind, session_id: str, ext: str, now: datetime | None = None
    ) -> str:
        return new_object_key(kind, session_id, ext, now)

    def presigned_url(self, key: str, expires: int) -> str:
        validate_key(key)
        if expires <= 0:
            raise ValueError("expires must be > 0 seconds")
        url: str = self._bucket.sign_url("GET", key, int(expires), slash_safe=True)
        return url

    def url_for(self, key: str) -> str:
        """The link handed to clients and DashScope: public when configured, presigned otherwise."""
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(validate_key(key), safe='/')}"
        return self.presigned_url(key, self.url_expires)

    # ------------------------------------------------------------------ operations
    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        validate_key(key)
        headers = {
            "Content-Type": content_type,
            "Content-MD5": base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()
            ).decode(),
        }
        result = await self._call(
            "put", partial(self._bucket.put_object, key, data, headers=headers)
        )
        etag = getattr(result, "etag", None)
        return StoredObject(
            key=key, url=self.url_for(key), size=len(data), content_type=content_type, etag=etag
        )

    def _read(self, key: str) -> bytes:
        body: bytes = self._bucket.get_object(key).read()
        return body

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._call("get", partial(self._read, key))

    async def exists(self, key: str) -> bool:
        validate_key(key)
        found: bool = await self._call("exists", partial(self._bucket.object_exists, key))
        return found

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call("delete", partial(self._bucket.delete_object, key))

    async def ping(self) -> None:
        await self._call("ping", partial(self._bucket.object_exists, _PING_KEY))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False)  # queued calls still finish; threads end after
        self._bucket.session.session.close()
