"""DashScope failures converted to :class:`~qwen_gateway.errors.UpstreamError` at the boundary.

Every function here returns (never raises) an ``UpstreamError`` carrying an OpenAI-style ``code``, the HTTP
``status`` to report, and whether a retry may succeed (``transient``). Sources of failures:

* HTTP error bodies, compat shape ``{"error": {"code", "message", "type", "param"}}`` or native shape
  ``{"code": "Throttling.RateQuota", "message": ...}`` (:func:`from_http`);
* a mid-stream SSE ``{"error": ...}`` event (:func:`from_error_object`);
* a ``task-failed`` event of the task WebSocket protocol (:func:`from_task_failed`);
* an ``error`` event of the realtime protocol (:func:`from_error_object`);
* a rejected WebSocket handshake, a refused connection, a timeout (:func:`from_handshake`,
  :func:`from_transport`).

Messages are cut short and scrubbed of anything that looks like an API key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from ...errors import UpstreamError, UpstreamTimeout

__all__ = [
    "closed_error",
    "from_error_object",
    "from_handshake",
    "from_http",
    "from_task_failed",
    "from_transport",
    "malformed",
    "redact",
    "request_id_of",
    "too_large",
]

#: Native DashScope codes (and aliases seen in the field) to compat / OpenAI-style codes.
NATIVE_CODES: dict[str, str] = {
    "InvalidParameter": "invalid_parameter_error",
    "InternalError.Algo.InvalidParameter": "invalid_parameter_error",
    "DataInspectionFailed": "data_inspection_failed",
    "InternalError.Algo.DataInspectionFailed": "data_inspection_failed",
    "Arrearage": "Arrearage",
    "InvalidApiKey": "invalid_api_key",
    "AccessDenied": "access_denied",
    "Model.AccessDenied": "access_denied",
    "Workspace.AccessDenied": "access_denied",
    "AccessDenied.Unpurchased": "access_denied",
    "AllocationQuota.FreeTierOnly": "access_denied",
    "ModelNotFound": "model_not_found",
    "Throttling": "limit_requests",
    "Throttling.RateQuota": "limit_requests",
    "LimitRequests": "limit_requests",
    "Throttling.BurstRate": "limit_burst_rate",
    "Throttling.AllocationQuota": "insufficient_quota",
    "InternalError": "internal_error",
    "ModelUnavailable": "model_unavailable",
}

#: The HTTP status each known code travels with (used when the transport gave none, e.g. WebSocket events).
CODE_STATUS: dict[str, int] = {
    "invalid_parameter_error": 400,
    "invalid_request_error": 400,
    "invalid_value": 400,
    "data_inspection_failed": 400,
    "Arrearage": 400,
    "invalid_file": 400,
    "invalid_api_key": 401,
    "access_denied": 403,
    "model_not_found": 404,
    "limit_requests": 429,
    "limit_burst_rate": 429,
    "insufficient_quota": 429,
    "internal_error": 500,
    "model_unavailable": 503,
}

#: Fallback code per HTTP status when the body carried none we understand.
STATUS_CODE: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "access_denied",
    404: "model_not_found",
    408: "upstream_timeout",
    413: "invalid_request_error",
    429: "limit_requests",
    500: "internal_error",
    502: "upstream_error",
    503: "model_unavailable",
    504: "upstream_timeout",
}

#: Transport errors (httpx names) meaning the upstream hung up in the middle of an exchange.
_CLOSED_ERRORS = frozenset({"RemoteProtocolError", "ReadError", "WriteError"})

_KEY_RE = re.compile(r"(sk-|Bearer\s+)[A-Za-z0-9._\-]{4,}", re.IGNORECASE)
_MAX_MESSAGE = 500


def redact(text: str) -> str:
    """``text`` cut to a sane length with anything shaped like a key or bearer token masked."""
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "..."
    return _KEY_RE.sub(lambda m: m.group(1) + "***", text)


def is_transient(status: int) -> bool:
    """True for statuses where a retry may succeed: 408, 429 (every throttle, TPM included) and 5xx."""
    return status in (408, 429) or status >= 500


def normalise_code(code: str | None, status: int) -> str:
    """An OpenAI-style code for a native or compat ``code`` and the HTTP status."""
    if code:
        mapped = NATIVE_CODES.get(code)
        if mapped is not None:
            return mapped
        if code.startswith("Throttling"):
            return "limit_requests"
        if code.startswith(("InvalidFile", "FILE_")):  # paraformer sub-tasks; Qwen-ASR whole tasks
            return "invalid_file"
        if code.endswith("DataInspectionFailed"):
            return "data_inspection_failed"
        return code
    return STATUS_CODE.get(status, "upstream_error")


def _build(
    status: int,
    code: str | None,
    message: str | None,
    *,
    type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> UpstreamError:
    norm = normalise_code(code, status)
    text = redact(message) if message else f"upstream answered HTTP {status}"
    return UpstreamError(
        text,
        code=norm,
        status=status,
        transient=is_transient(status),
        retry_after=retry_after,
        type=type,
        param=param,
        request_id=request_id,
    )


def request_id_of(headers: Mapping[str, str] | None, body: Any = None) -> str | None:
    """The upstream's id of a call: the body's ``request_id`` (DashScope native and compatible-mode error
    bodies), else the ``x-request-id`` header (compatible mode answers carry it)."""
    if isinstance(body, dict):
        rid = body.get("request_id")
        if isinstance(rid, str) and rid:
            return rid[:128]
    if headers:
        value = headers.get("x-request-id") or headers.get("X-Request-Id")
        if value:
            return str(value)[:128]
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def from_http(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> UpstreamError:
    """The error for a non-2xx HTTP answer (compat, native, or unparseable body)."""
    code: str | None = None
    message: str | None = None
    etype: str | None = None
    param: str | None = None
    try:
        data = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            code = _str(err.get("code"))
            message = _str(err.get("message"))
            etype = _str(err.get("type"))
            param = _str(err.get("param"))
        elif isinstance(err, str):
            message = err
        else:
            code = _str(data.get("code"))
            message = _str(data.get("message"))
    if code is None and etype in NATIVE_CODES.values():
        code = etype
    return _build(
        status,
        code,
        message,
        type=etype,
        param=param,
        retry_after=_retry_after(headers),
        request_id=request_id_of(headers, data),
    )


def from_error_object(obj: Any, *, default_status: int = 502) -> UpstreamError:
    """The error for an ``{"error": ...}`` object received inside a stream or a realtime session."""
    if isinstance(obj, dict):
        code = _str(obj.get("code"))
        message = _str(obj.get("message"))
        etype = _str(obj.get("type"))
        param = _str(obj.get("param"))
    else:
        code, message, etype, param = None, _str(obj), None, None
    norm = normalise_code(code, default_status)
    status = CODE_STATUS.get(norm, default_status)
    return _build(status, code, message or "upstream reported an error", type=etype, param=param)


def from_task_failed(error_code: str | None, error_message: str | None) -> UpstreamError:
    """The error for a ``task-failed`` event (task WebSocket protocol, file-recognition tasks)."""
    norm = normalise_code(error_code, 502)
    status = CODE_STATUS.get(norm, 502)
    return _build(status, error_code or "upstream_error", error_message or "upstream task failed")


def from_handshake(status: int, body: bytes) -> UpstreamError:
    """The error for a WebSocket handshake the server rejected with HTTP ``status``."""
    err = from_http(status, body)
    if not body or err.message.startswith("upstream answered HTTP"):
        err.message = f"upstream rejected the WebSocket handshake with HTTP {status}"
    return err


def from_transport(exc: BaseException, what: str) -> UpstreamError:
    """The error for a connection failure or timeout while doing ``what`` (no upstream answer)."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or name.endswith("Timeout"):
        return UpstreamTimeout(f"{what}: timed out")
    if name in _CLOSED_ERRORS:
        return closed_error(what)
    return UpstreamError(
        f"{what}: {type(exc).__name__}",
        code="upstream_unavailable",
        status=502,
        transient=True,
    )


def closed_error(what: str) -> UpstreamError:
    """The error for an upstream that closed the connection before the exchange was complete."""
    return UpstreamError(
        f"{what}: upstream closed the connection",
        code="upstream_closed",
        status=502,
        transient=True,
    )


def malformed(what: str) -> UpstreamError:
    """The error for an upstream answer we could not parse."""
    return UpstreamError(
        f"{what}: malformed upstream data", code="upstream_bad_response", status=502
    )


def too_large(what: str, limit: int) -> UpstreamError:
    """The error for an upstream answer (a body, a line or an event of a stream, once decompressed) over the
    ``limit`` bytes we read; the connection it came on is dropped."""
    return UpstreamError(
        f"{what}: the upstream's answer is over the {limit}-byte limit",
        code="upstream_response_too_large",
        status=502,
    )
