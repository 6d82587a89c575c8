"""``GET /metrics``: the Prometheus text exposition of :class:`qwen_gateway.metrics.Metrics`.

Who may read it: a caller presenting ``QG_METRICS_TOKEN`` or one of the gateway's keys as ``Authorization: Bearer``;
in open keyless mode (no key asked for, which the gateway allows on loopback only, behind its ``Host`` check) anyone
who may use the gateway. In pass-through mode callers' keys are DashScope keys the gateway cannot judge: only the
metrics token or a configured gateway key opens it.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response, request

from ..auth import bearer_token
from .common import services, unauthorized

__all__ = ["metrics_allowed", "metrics_blueprint"]


def metrics_allowed(token: str | None) -> bool:
    """Whether a caller presenting ``token`` may read the metrics (see the module docstring)."""
    svc = services()
    wanted = svc.settings.metrics_token
    if token and wanted and hmac.compare_digest(token.encode(), wanted.encode()):
        return True
    if svc.keys.matches(token):
        return True
    return not wanted and svc.keys.open and not svc.settings.key_passthrough


def metrics_blueprint() -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    async def metrics() -> Response:
        if not metrics_allowed(bearer_token(request.headers.get("Authorization"))):
            return unauthorized()
        body, content_type = services().metrics.exposition()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return bp
