"""A fake Aliyun OSS server on loopback that checks request signatures as OSS does.

It exists so that oss2 itself is the client under test: a wrong secret, a tampered or expired presigned URL, a
skewed clock fail here with the status, error code and headers OSS answers with, and oss2 raises the same exception
class it raises in production. It speaks path-style URLs (``http://127.0.0.1:<port>/<bucket>/<key>``), which oss2
uses for an IP endpoint.

Implemented from the OSS documentation of signature V4 and V1 (see ``/work/shared/oss-facts.md``), independently of
oss2's signing code:

- V4 ``Authorization: OSS4-HMAC-SHA256 Credential=<ak>/<date>/<region>/oss/aliyun_v4_request,
  Signature=<hex>[, AdditionalHeaders=<h;h>]`` and V4 presigned query (``x-oss-signature-version`` ...);
- V1 ``Authorization: OSS <ak>:<base64 sig>`` and V1 presigned query (``OSSAccessKeyId``, ``Expires``,
  ``Signature``);
- PUT (Content-MD5 checked, Content-Length or chunked body), GET, HEAD (``?objectMeta`` too), DELETE;
- responses with ``x-oss-request-id``, ``Server: AliyunOSS``, ``ETag`` (upper-case MD5), ``x-oss-hash-crc64ecma``,
  ``Last-Modified``; XML error bodies, and the base64 error XML in ``x-oss-err`` for HEAD.

The ``EC`` values in error bodies are representative, not a copy of OSS's table.

Faults for tests: :meth:`FakeOss.fail_next` answers the next requests with a server error; :meth:`stall_next`
holds them unanswered until :meth:`release` (or :meth:`stop`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

import crcmod

__all__ = ["FakeOss", "RequestLog", "StoredBlob", "crc64ecma"]

_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)

#: V1: query parameters that are part of the canonical resource (the OSS "sub-resources").
_V1_SUBRESOURCES = frozenset(
    {
        "acl",
        "append",
        "bucketInfo",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "objectMeta",
        "partNumber",
        "position",
        "referer",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "security-token",
        "stat",
        "symlink",
        "tagging",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "website",
        "x-oss-process",
    }
)

_V4_ALGORITHM = "OSS4-HMAC-SHA256"
_V4_TERMINATOR = "aliyun_v4_request"
_DEFAULT_SIGNED = ("content-type", "content-md5")

_EC = {
    "AccessDenied": "0003-00000001",
    "InvalidAccessKeyId": "0002-00000902",
    "SignatureDoesNotMatch": "0002-00000040",
    "RequestTimeTooSkewed": "0002-00000504",
    "NoSuchBucket": "0015-00000101",
    "NoSuchKey": "0026-00000001",
    "InvalidDigest": "0016-00000002",
    "InvalidArgument": "0016-00000001",
    "ServiceUnavailable": "0001-00000503",
    "InternalError": "0001-00000500",
    "MethodNotAllowed": "0001-00000405",
}


def crc64ecma(data: bytes) -> int:
    """CRC-64/ECMA-182 as OSS reports it in ``x-oss-hash-crc64ecma`` (the CRC-64/XZ parameters)."""
    return int(_crc64(data))


def _v4_encode(text: str, *, keep_slash: bool) -> str:
    out: list[str] = []
    for byte in text.encode("utf-8"):
        c = chr(byte)
        if (c.isascii() and (c.isalnum() or c in "-_.~")) or (keep_slash and c == "/"):
            out.append(c)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _hmac256(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


@dataclass
class StoredBlob:
    """An object held by the fake."""

    data: bytes
    content_type: str
    etag: str
    crc64: int
    last_modified: float
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestLog:
    """One request the fake received: what tests assert on."""

    method: str
    bucket: str
    key: str
    auth: str  # "v4", "v4-presigned", "v1", "v1-presigned", "anonymous"
    status: int
    code: str = ""


class _OssError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOss

    def process_request(self, request: Any, client_address: Any) -> None:
        self.fake._track(request)
        super().process_request(request, client_address)


class FakeOss:
    """The fake server. Use as a context manager, or :meth:`start` / :meth:`stop`.

    Args:
        credentials: access key id -> secret.
        buckets: bucket names that exist.
        region: the region the server signs for (V4 scope).
        max_skew: seconds of clock difference tolerated (OSS: 15 minutes).
    """

    def __init__(
        self,
        credentials: dict[str, str],
        buckets: Iterable[str] = ("test-bucket",),
        *,
        region: str = "cn-beijing",
        max_skew: float = 900.0,
    ) -> None:
        self.credentials = dict(credentials)
        self.region = region
        self.max_skew = max_skew
        #: seconds added to the server's clock (to test skew and expiry without waiting).
        self.clock_offset = 0.0
        self.buckets: dict[str, dict[str, StoredBlob]] = {name: {} for name in buckets}
        self.log: list[RequestLog] = []
        self._lock = threading.Lock()
        self._faults: list[tuple[int, str]] = []
        self._stalls = 0
        self._release = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeOss:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-oss",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:  # end keep-alive connections so their handler threads exit
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOss:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeOss is not started"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: give it to oss2 as the endpoint."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ faults
    def fail_next(
        self, count: int = 1, *, status: int = 503, code: str = "ServiceUnavailable"
    ) -> None:
        """Answer the next ``count`` requests with ``status`` and an OSS error body of ``code``."""
        with self._lock:
            self._faults.extend([(status, code)] * count)

    def stall_next(self, count: int = 1) -> None:
        """Leave the next ``count`` requests unanswered until :meth:`release` or :meth:`stop`."""
        with self._lock:
            self._stalls += count
            self._release.clear()

    def release(self) -> None:
        """Let stalled requests go (they are then dropped without an answer)."""
        self._release.set()

    def _take_fault(self) -> tuple[int, str] | str | None:
        with self._lock:
            if self._stalls:
                self._stalls -= 1
                return "stall"
            if self._faults:
                return self._faults.pop(0)
        return None

    # ------------------------------------------------------------------ helpers for tests
    def object(self, bucket: str, key: str) -> StoredBlob | None:
        with self._lock:
            return self.buckets.get(bucket, {}).get(key)

    def requests(self) -> list[RequestLog]:
        with self._lock:
            return list(self.log)

    def now(self) -> float:
        """The server's clock."""
        return time.time() + self.clock_offset

    def _record(self, entry: RequestLog) -> None:
        with self._lock:
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered: the response leaves at the end of the request (handle_one_request's flush), after _handle has
    # recorded it, so a client that has its answer always finds its request in requests() (unbuffered, a test
    # could read the log before the server thread wrote it).
    wbufsize = -1
    server: _Server

    # quiet: tests read the fake's request log instead
    def log_message(self, format: str, *args: Any) -> None:
        return

    def version_string(self) -> str:
        return "AliyunOSS"

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._untrack(self.request)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    # ------------------------------------------------------------------ request plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline(1024).strip()
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        request_id = secrets.token_hex(12).upper()
        parts = urlsplit(self.path)
        raw_path = parts.path
        segments = raw_path.split("/", 2)
        bucket = unquote(segments[1]) if len(segments) > 1 else ""
        key = unquote(segments[2]) if len(segments) > 2 else ""
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self._read_body() if method in ("PUT", "POST") else b""
        auth = "anonymous"
        try:
            fault = fake._take_fault()
            if fault == "stall":
                fake._release.wait(timeout=60)
                self.close_connection = True
                return
            if isinstance(fault, tuple):
                status, code = fault
                raise _OssError(status, code, "Injected fault.")
            auth = self._scheme(query)
            self._authenticate(auth, method, bucket, key, query, body)
            if bucket not in fake.buckets:
                raise _OssError(
                    404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket
                )
            if not key:
                raise _OssError(
                    405, "MethodNotAllowed", "Bucket-level operations are not supported."
                )
            status = self._operate(method, bucket, key, query, body, request_id)
            fake._record(RequestLog(method, bucket, key, auth, status))
        except _OssError as exc:
            fake._record(RequestLog(method, bucket, key, auth, exc.status, exc.code))
            self._send_error(method, exc, request_id, bucket)

    def _common_headers(self, request_id: str) -> None:
        self.send_header("x-oss-request-id", request_id)
        self.send_header("x-oss-server-time", "1")

    def _send_error(self, method: str, exc: _OssError, request_id: str, bucket: str) -> None:
        ec = _EC.get(exc.code, "0000-00000000")
        details = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in exc.details.items())
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
            f"  <Code>{escape(exc.code)}</Code>\n"
            f"  <Message>{escape(exc.message)}</Message>\n"
            f"  <RequestId>{request_id}</RequestId>\n"
            f"  <HostId>{escape(bucket)}.oss-{self.server.fake.region}.aliyuncs.com</HostId>\n"
            f"  {details}\n"
            f"  <EC>{ec}</EC>\n"
            f"  <RecommendDoc>https://api.aliyun.com/troubleshoot?q={ec}</RecommendDoc>\n"
            "</Error>\n"
        ).encode()
        self.send_response(exc.status)
        self._common_headers(request_id)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-oss-ec", ec)
        if method == "HEAD":
            self.send_header("x-oss-err", base64.b64encode(xml).decode())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    # ------------------------------------------------------------------ authentication
    def _scheme(self, query: dict[str, str]) -> str:
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith(_V4_ALGORITHM + " "):
            return "v4"
        if authorization.startswith("OSS "):
            return "v1"
        if query.get("x-oss-signature-version") == _V4_ALGORITHM:
            return "v4-presigned"
        if "OSSAccessKeyId" in query or "Signature" in query:
            return "v1-presigned"
        return "anonymous"

    def _authenticate(
        self, scheme: str, method: str, bucket: str, key: str, query: dict[str, str], body: bytes
    ) -> None:
        authorization = self.headers.get("Authorization", "")
        if scheme == "v4":
            self._verify_v4_header(method, bucket, key, query, authorization, body)
        elif scheme == "v1":
            self._verify_v1_header(method, bucket, key, query, authorization)
        elif scheme == "v4-presigned":
            self._verify_v4_query(method, bucket, key, query)
        elif scheme == "v1-presigned":
            self._verify_v1_query(method, bucket, key, query)
        else:
            raise _OssError(
                403,
                "AccessDenied",
                "You have no right to access this object because of bucket acl.",
            )

    def _secret(self, access_key_id: str) -> str:
        secret = self.server.fake.credentials.get(access_key_id)
        if secret is None:
            raise _OssError(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_key_id,
            )
        return secret

    def _check_skew(self, when: datetime) -> None:
        skew = abs(self.server.fake.now() - when.timestamp())
        if skew > self.server.fake.max_skew:
            raise _OssError(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                MaxAllowedSkewMilliseconds=str(int(self.server.fake.max_skew * 1000)),
            )

    # ---- V4
    def _parse_scope(self, credential: str) -> tuple[str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[3] != "oss" or parts[4] != _V4_TERMINATOR:
            raise _OssError(400, "InvalidArgument", "Invalid credential in Authorization header.")
        access_key_id, date, region = parts[0], parts[1], parts[2]
        secret = self._secret(access_key_id)
        if region != self.server.fake.region:
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                f"Invalid signing region in Authorization header: {region}.",
            )
        return secret, date

    def _v4_signature(
        self,
        secret: str,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        additional: list[str],
        date_time: str,
        payload_hash: str,
    ) -> tuple[str, str]:
        canonical_uri = _v4_encode(f"/{bucket}/{key}" if bucket else "/", keep_slash=True)
        encoded = sorted(
            (_v4_encode(k, keep_slash=False), _v4_encode(v, keep_slash=False))
            for k, v in query.items()
            if k != "x-oss-signature"
        )
        canonical_query = "&".join(f"{k}={v}" if v else k for k, v in encoded)
        signed: list[tuple[str, str]] = []
        for name, value in self.headers.items():
            low = name.lower()
            if low.startswith("x-oss-") or low in _DEFAULT_SIGNED or low in additional:
                signed.append((low, value.strip()))
        signed.sort()
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in signed)
        canonical_request = "\n".join(
            [
                method,
                canonical_uri,
                canonical_query,
                canonical_headers,
                ";".join(sorted(additional)),
                payload_hash,
            ]
        )
        date = date_time[:8]
        scope = f"{date}/{self.server.fake.region}/oss/{_V4_TERMINATOR}"
        string_to_sign = "\n".join(
            [
                _V4_ALGORITHM,
                date_time,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        key_bytes = _hmac256(("aliyun_v4" + secret).encode("utf-8"), date)
        key_bytes = _hmac256(key_bytes, self.server.fake.region)
        key_bytes = _hmac256(key_bytes, "oss")
        key_bytes = _hmac256(key_bytes, _V4_TERMINATOR)
        signature = hmac.new(key_bytes, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        return signature, string_to_sign

    @staticmethod
    def _parse_v4_time(value: str) -> datetime:
        try:
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _OssError(400, "InvalidArgument", "Invalid x-oss-date.") from None

    def _verify_v4_header(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        authorization: str,
        body: bytes,
    ) -> None:
        fields: dict[str, str] = {}
        for part in authorization[len(_V4_ALGORITHM) + 1 :].split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value
        if "Credential" not in fields or "Signature" not in fields:
            raise _OssError(400, "InvalidArgument", "Authorization header is malformed.")
        secret, date = self._parse_scope(fields["Credential"])
        date_time = self.headers.get("x-oss-date", "")
        when = self._parse_v4_time(date_time)
        if date_time[:8] != date:
            raise _OssError(
                403, "SignatureDoesNotMatch", "Credential date does not match x-oss-date."
            )
        self._check_skew(when)
        payload_hash = self.headers.get("x-oss-content-sha256")
        if payload_hash is None:
            raise _OssError(400, "InvalidArgument", "Missing x-oss-content-sha256.")
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
            raise _OssError(400, "InvalidArgument", "x-oss-content-sha256 does not match the body.")
        additional = [
            h.strip().lower() for h in fields.get("AdditionalHeaders", "").split(";") if h.strip()
        ]
        expected, string_to_sign = self._v4_signature(
            secret, method, bucket, key, query, additional, date_time, payload_hash
        )
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign,
            )

    def _verify_v4_query(self, method: str, bucket: str, key: str, query: dict[str, str]) -> None:
        for required in ("x-oss-credential", "x-oss-date", "x-oss-expires", "x-oss-signature"):
            if required not in query:
                raise _OssError(403, "AccessDenied", f"Missing {required} in the signed URL.")
        secret, date = self._parse_scope(query["x-oss-credential"])
        date_time = query["x-oss-date"]
        when = self._parse_v4_time(date_time)
        if date_time[:8] != date:
            raise _OssError(
                403, "SignatureDoesNotMatch", "Credential date does not match x-oss-date."
            )
        try:
            expires = int(query["x-oss-expires"])
        except ValueError:
            raise _OssError(400, "InvalidArgument", "Invalid x-oss-expires.") from None
        if self.server.fake.now() > when.timestamp() + expires:
            raise _OssError(403, "AccessDenied", "Request has expired.")
        if when.timestamp() > self.server.fake.now() + self.server.fake.max_skew:
            raise _OssError(403, "RequestTimeTooSkewed", "Request time is in the future.")
        additional = [
            h.strip().lower()
            for h in query.get("x-oss-additional-headers", "").split(";")
            if h.strip()
        ]
        payload_hash = self.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
        expected, string_to_sign = self._v4_signature(
            secret, method, bucket, key, query, additional, date_time, payload_hash
        )
        if not hmac.compare_digest(expected, query["x-oss-signature"]):
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign,
            )

    # ---- V1
    def _v1_string_to_sign(
        self, method: str, bucket: str, key: str, query: dict[str, str], date: str
    ) -> str:
        oss_headers = sorted(
            (name.lower(), value.strip())
            for name, value in self.headers.items()
            if name.lower().startswith("x-oss-")
        )
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
        resource = f"/{bucket}/{key}" if bucket else "/"
        subresources = sorted((k, v) for k, v in query.items() if k in _V1_SUBRESOURCES)
        if subresources:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
        return "\n".join(
            [
                method,
                self.headers.get("Content-MD5", ""),
                self.headers.get("Content-Type", ""),
                date,
                canonical_headers + resource,
            ]
        )

    @staticmethod
    def _v1_sign(secret: str, string_to_sign: str) -> str:
        mac = hmac.new(
            secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1
        ).digest()
        return base64.b64encode(mac).decode("ascii")

    def _verify_v1_header(
        self, method: str, bucket: str, key: str, query: dict[str, str], authorization: str
    ) -> None:
        credential = authorization[4:]
        access_key_id, sep, signature = credential.rpartition(":")
        if not sep:
            raise _OssError(400, "InvalidArgument", "Authorization header is malformed.")
        secret = self._secret(access_key_id)
        date = self.headers.get("x-oss-date") or self.headers.get("Date", "")
        try:
            when = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            raise _OssError(403, "AccessDenied", "Invalid or missing Date header.") from None
        self._check_skew(when)
        string_to_sign = self._v1_string_to_sign(method, bucket, key, query, date)
        if not hmac.compare_digest(self._v1_sign(secret, string_to_sign), signature):
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign,
            )

    def _verify_v1_query(self, method: str, bucket: str, key: str, query: dict[str, str]) -> None:
        for required in ("OSSAccessKeyId", "Expires", "Signature"):
            if required not in query:
                raise _OssError(403, "AccessDenied", f"Missing {required} in the signed URL.")
        secret = self._secret(query["OSSAccessKeyId"])
        try:
            expires = int(query["Expires"])
        except ValueError:
            raise _OssError(400, "InvalidArgument", "Invalid Expires.") from None
        if self.server.fake.now() > expires:
            raise _OssError(403, "AccessDenied", "Request has expired.")
        string_to_sign = self._v1_string_to_sign(method, bucket, key, query, str(expires))
        if not hmac.compare_digest(self._v1_sign(secret, string_to_sign), query["Signature"]):
            raise _OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                StringToSign=string_to_sign,
            )

    # ------------------------------------------------------------------ operations
    def _operate(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        body: bytes,
        request_id: str,
    ) -> int:
        fake = self.server.fake
        if method == "PUT":
            md5 = hashlib.md5(body).digest()
            sent_md5 = self.headers.get("Content-MD5")
            if sent_md5 is not None and sent_md5 != base64.b64encode(md5).decode():
                raise _OssError(
                    400,
                    "InvalidDigest",
                    "The Content-MD5 you specified was invalid.",
                    Content_MD5=sent_md5,
                )
            blob = StoredBlob(
                data=body,
                content_type=self.headers.get("Content-Type") or "application/octet-stream",
                etag=md5.hex().upper(),
                crc64=crc64ecma(body),
                last_modified=time.time(),
                meta={
                    k.lower(): v
                    for k, v in self.headers.items()
                    if k.lower().startswith("x-oss-meta-")
                },
            )
            with fake._lock:
                fake.buckets[bucket][key] = blob
            self.send_response(200)
            self._common_headers(request_id)
            self.send_header("ETag", f'"{blob.etag}"')
            self.send_header("x-oss-hash-crc64ecma", str(blob.crc64))
            self.send_header("Content-MD5", base64.b64encode(md5).decode())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 200
        if method == "DELETE":
            with fake._lock:
                fake.buckets[bucket].pop(key, None)
            self.send_response(204)
            self._common_headers(request_id)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return 204
        if method in ("GET", "HEAD"):
            found = fake.object(bucket, key)
            if found is None:
                raise _OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key)
            self.send_response(200)
            self._common_headers(request_id)
            self.send_header("Content-Type", found.content_type)
            self.send_header("Content-Length", str(len(found.data)))
            self.send_header("ETag", f'"{found.etag}"')
            self.send_header("Last-Modified", formatdate(found.last_modified, usegmt=True))
            self.send_header("x-oss-object-type", "Normal")
            self.send_header("x-oss-storage-class", "Standard")
            self.send_header("x-oss-hash-crc64ecma", str(found.crc64))
            for name, value in found.meta.items():
                self.send_header(name, value)
            self.end_headers()
            if method == "GET":
                self.wfile.write(found.data)
            return 200
        raise _OssError(
            405, "MethodNotAllowed", "The specified method is not allowed against this resource."
        )
