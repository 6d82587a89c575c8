"""``GET /v1/usage?key=NAME|OWNER&day=YYYY-MM-DD``: one key's usage on one UTC day (admin keys only).

``key`` is the ``name=`` of a key in ``QG_API_KEYS_FILE`` (known once the key has been used) or an owner id
(``k_...``, as in the history database); raw keys are never asked for (URLs end up in logs). ``day`` defaults to
today (UTC). An admin key is one flagged ``admin`` in the keys file.
"""

from __future__ import annotations

import datetime as dt
import re

from quart import Blueprint, Response, jsonify, request

from ..auth import bearer_token
from .common import error_response, services, unauthorized

__all__ = ["usage_blueprint"]

_OWNER = re.compile(r"^(k_[0-9a-f]{32}|anonymous)$")
_COUNTERS = ("requests", "tokens", "tts_chars", "audio_seconds")


def _day(raw: str) -> dt.date | None:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    return None


def usage_blueprint() -> Blueprint:
    bp = Blueprint("usage", __name__)

    @bp.get("/v1/usage")
    async def usage() -> Response:
        svc = services()
        token = bearer_token(request.headers.get("Authorization"))
        if not svc.keys.matches(token):
            return unauthorized()
        if not svc.keys.is_admin(token):
            return error_response(
                403,
                "Usage is readable with an admin key only (flag 'admin' in QG_API_KEYS_FILE).",
                code="admin_key_required",
            )
        key = request.args.get("key", "").strip()
        if not key:
            return error_response(
                400,
                "Name the key: ?key=<name in the keys file or owner id>",
                code="missing_key",
                param="key",
            )
        raw_day = request.args.get("day", "").strip()
        day = _day(raw_day) if raw_day else dt.datetime.now(dt.UTC).date()
        if day is None:
            return error_response(
                400,
                f"Invalid day {raw_day[:40]!r}: expected YYYY-MM-DD",
                code="invalid_value",
                param="day",
            )
        quotas = svc.quotas
        policy = svc.keys.named(key)
        owner = key if _OWNER.match(key) else await quotas.owner_of(key)
        if owner is None and policy is None:
            return error_response(
                404, f"No key named {key[:64]!r}", code="unknown_key", param="key"
            )
        counters = await quotas.usage(owner, day.strftime("%Y%m%d")) if owner else {}
        limits = svc.settings.default_limits.merged(policy.limits if policy else {})
        body = {
            "object": "usage",
            "key": key,
            "owner": owner,
            "day": day.isoformat(),
            **{name: _number(counters.get(name, 0.0)) for name in _COUNTERS},
            "limits": {
                "requests_per_minute": limits.rpm,
                "sessions": limits.sessions,
                "tokens": limits.tokens_per_day,
                "tts_chars": limits.tts_chars_per_day,
                "audio_seconds": limits.audio_seconds_per_day,
            },
            "shared": quotas.backend == "redis" and not quotas.degraded,
        }
        return jsonify(body)

    return bp


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 3)
