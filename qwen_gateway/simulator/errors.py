"""DashScope error families and the two body shapes they come in.

* OpenAI-compatible mode (``/compatible-mode/v1``)::

    {"error": {"message", "type", "param", "code"}, "id": "chatcmpl-<uuid>", "request_id": "<uuid>"}

* Native API (``/api/v1``, WebSocket handshakes)::

    {"request_id": "<uuid>", "code": "InvalidApiKey", "message": "Invalid API-key provided."}

Codes and messages follow ``dashscope-protocols.md`` §0.3 and §1.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ERROR_FAMILIES",
    "ErrorFamily",
    "compat_body",
    "find_family",
    "native_body",
]

_DOC = " For details, see: https://help.aliyun.com/zh/model-studio/error-code#"


@dataclass(frozen=True, slots=True)
class ErrorFamily:
    """One documented DashScope error: its status, both codes and both messages."""

    status: int
    native_code: str
    compat_code: str
    compat_type: str
    native_message: str
    compat_message: str


ERROR_FAMILIES: tuple[ErrorFamily, ...] = (
    ErrorFamily(
        400,
        "InvalidParameter",
        "invalid_parameter_error",
        "invalid_request_error",
        "Invalid parameter.",
        "Invalid parameter.",
    ),
    ErrorFamily(
        400,
        "DataInspectionFailed",
        "data_inspection_failed",
        "data_inspection_failed",
        "Input data may contain inappropriate content.",
        "Input data may contain inappropriate content." + _DOC + "inappropriate-content",
    ),
    ErrorFamily(
        400,
        "Arrearage",
        "Arrearage",
        "Arrearage",
        "Access denied, please make sure your account is in good standing.",
        "Access denied, please make sure your account is in good standing."
        + _DOC
        + "overdue-payment",
    ),
    ErrorFamily(
        401,
        "InvalidApiKey",
        "invalid_api_key",
        "invalid_request_error",
        "Invalid API-key provided.",
        "Incorrect API key provided." + _DOC + "apikey-error",
    ),
    ErrorFamily(
        403,
        "AccessDenied",
        "access_denied",
        "access_denied",
        "Access denied.",
        "Access denied.",
    ),
    ErrorFamily(
        404,
        "ModelNotFound",
        "model_not_found",
        "invalid_request_error",
        "Model not found.",
        "The model does not exist or you do not have access to it.",
    ),
    ErrorFamily(
        429,
        "Throttling.RateQuota",
        "limit_requests",
        "limit_requests",
        "Requests rate limit exceeded, please try again later.",
        "You have exceeded your current request limit." + _DOC + "rate-limit",
    ),
    ErrorFamily(
        429,
        "Throttling.BurstRate",
        "limit_burst_rate",
        "limit_burst_rate",
        "Request rate increased too quickly, please try again later.",
        "Request rate increased too quickly, please try again later." + _DOC + "rate-limit",
    ),
    ErrorFamily(
        429,
        "Throttling.AllocationQuota",
        "insufficient_quota",
        "insufficient_quota",
        "Allocated quota exceeded, please increase your quota limit.",
        "You exceeded your current quota, please check your plan and billing details."
        + _DOC
        + "token-limit",
    ),
    ErrorFamily(
        500,
        "InternalError",
        "internal_error",
        "internal_error",
        "An internal error has occured, please try again later or contact service support.",
        "An internal error has occured, please try again later or contact service support.",
    ),
    # [U] the compat code of 503 is not documented.
    ErrorFamily(
        503,
        "ModelUnavailable",
        "model_unavailable",
        "model_unavailable",
        "Model is unavailable, please try again later.",
        "Model is unavailable, please try again later.",
    ),
)

_BY_CODE = {f.native_code.lower(): f for f in ERROR_FAMILIES} | {
    f.compat_code.lower(): f for f in ERROR_FAMILIES
}
_BY_STATUS: dict[int, ErrorFamily] = {}
for _family in ERROR_FAMILIES:
    _BY_STATUS.setdefault(_family.status, _family)


def find_family(status: int, code: str | None = None) -> ErrorFamily:
    """The documented family for ``status`` (and ``code``, native or compat spelling).

    An undocumented code keeps the status's default messages but uses ``code`` verbatim; an undocumented
    status gets a generic family named after ``InternalError``.
    """
    if code is not None:
        family = _BY_CODE.get(code.lower())
        if family is not None and family.status == status:
            return family
    base = _BY_STATUS.get(status) or ErrorFamily(
        status,
        "InternalError",
        "internal_error",
        "internal_error",
        f"HTTP {status}",
        f"HTTP {status}",
    )
    if code is None:
        return base
    return ErrorFamily(
        status, code, code, base.compat_type, base.native_message, base.compat_message
    )


def compat_body(
    family: ErrorFamily,
    request_id: str,
    *,
    message: str | None = None,
    param: str | None = None,
    type: str | None = None,
) -> dict[str, Any]:
    """The OpenAI-compatible error body of ``family``."""
    return {
        "error": {
            "message": message if message is not None else family.compat_message,
            "type": type if type is not None else family.compat_type,
            "param": param,
            "code": family.compat_code,
        },
        "id": f"chatcmpl-{request_id}",
        "request_id": request_id,
    }


def native_body(
    family: ErrorFamily, request_id: str, *, message: str | None = None
) -> dict[str, Any]:
    """The native-API error body of ``family``."""
    return {
        "request_id": request_id,
        "code": family.native_code,
        "message": message if message is not None else family.native_message,
    }
