"""Helpers shared by the HTTP routes: OpenAI-style error bodies, auth, request ids."""

from __future__ import annotations

import json
from typing import Any

from quart import Response, current_app, request

from ..auth import bearer_token
from ..quota import Limits, Refusal

__all__ = [
    "authorized",
    "caller_allowed",
    "caller_limits",
    "error_response",
    "is_json",
    "lifecycle",
    "limit_response",
    "not_json",
    "read_body",
    "services",
    "unauthorized",
]

#: HTTP status -> OpenAI error ``type``.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    type: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    if type is None:
        type = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    resp = Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json; charset=utf-8",
    )
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    resp.qg_error_code = code or str(status)  # type: ignore[attr-defined]  # for the errors metric
    return resp


def unauthorized() -> Response:
    return error_response(
        401,
        "Incorrect API key provided. Send 'Authorization: Bearer <gateway key>'.",
        code="invalid_api_key",
        type="invalid_request_error",
        headers={"WWW-Authenticate": 'Bearer realm="qwen-gateway"'},
    )


def services() -> Any:
    return current_app.config["QG_SERVICES"]


def lifecycle() -> Any:
    """The app's :class:`~qwen_gateway.lifecycle.Lifecycle` (readiness, drain)."""
    return current_app.config["QG_LIFECYCLE"]


def authorized(*, allow_query_token: bool = False) -> bool:
    """Check the request's gateway key (``Authorization: Bearer``; ``?token=`` where allowed)."""
    keys = services().keys
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and allow_query_token:
        token = request.args.get("token") or None
    return bool(keys.check(token))


def caller_allowed(token: str | None) -> bool:
    """Whether a chat or voice caller presenting ``token`` may go on.

    Normally ``token`` must be a gateway key. In pass-through mode (``QG_KEY_PASSTHROUGH``) it is the caller's own
    DashScope key: it must be present, and the upstream judges it.
    """
    svc = services()
    if svc.settings.key_passthrough:
        return bool(token)
    return bool(svc.keys.check(token))


def caller_limits(token: str | None) -> Limits:
    """The limits of a caller presenting ``token``: the defaults (``QG_LIMIT_*``) with its keys-file overrides."""
    svc = services()
    overrides = svc.keys.policy(token).limits
    return svc.settings.default_limits.merged(overrides)  # type: ignore[no-any-return]


def limit_response(refusal: Refusal) -> Response:
    """The HTTP answer to a request refused by a limit: 429 ``rate_limit_exceeded`` (a rate or concurrency limit)
    or ``insufficient_quota`` (a daily quota), 503 ``server_busy`` (no upstream session free); ``Retry-After``."""
    headers = {"Retry-After": str(refusal.retry_seconds)}
    if refusal.kind == "upstream":
        return error_response(
            503, refusal.message(), code="server_busy", type="server_error", headers=headers
        )
    if refusal.is_quota:
        return error_response(
            429,
            refusal.message(),
            code="insufficient_quota",
            type="insufficient_quota",
            headers=headers,
        )
    return error_response(429, refusal.message(), code="rate_limit_exceeded", headers=headers)


def is_json(mimetype: str) -> bool:
    """Whether a request's media type (``request.mimetype``: lower case, no parameters) is JSON."""
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def not_json() -> Response:
    """415 for a JSON endpoint called with another content type.

    Not a formality: a web page can send ``text/plain``, form or multipart bodies to any site without a CORS
    preflight (a "simple request"); requiring ``application/json`` makes the browser ask first, and the gateway
    answers that question only for the origins in ``QG_CORS_ORIGINS``.
    """
    return error_response(
        415,
        "Send the body as JSON with 'Content-Type: application/json'.",
        code="unsupported_media_type",
    )


async def read_body(limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes.

    An over-large body is still read to its end (and discarded, so memory stays bounded): a server that answers
    413 and closes with unread bytes in its socket makes the kernel reset the connection, and the client never
    sees the answer. Quart's own ``MAX_CONTENT_LENGTH`` (a larger hard cap) still guards against absurd sizes.
    """
    buf = bytearray()
    over = False
    async for chunk in request.body:
        if over:
            continue
        if len(buf) + len(chunk) > limit:
            over = True
            buf = bytearray()
            continue
        buf += chunk
    return None if over else bytes(buf)
