"""``WS /v1/chat/audio`` (voice chat) and ``WS /v1/chat/vlm`` (a spoken question about an image).

The handshake needs a gateway key when keys are configured (``Authorization: Bearer`` or, for browsers,
``?token=``) and is answered 401 before the upgrade otherwise. In pass-through mode (``QG_KEY_PASSTHROUGH``) the
caller's key is its own DashScope key: it must be present, and the upstream judges it. A ``?conversation_id=``
names one of the caller's own conversations (see ``KeyChecker.owner``).
"""

from __future__ import annotations

from typing import Any, cast

from quart import Blueprint, Response, g, websocket

from ..voice.runner import Endpoint, handshake, serve_voice
from .common import caller_allowed, lifecycle, services, unauthorized

__all__ = ["voice_ws_blueprint"]


async def _serve(endpoint: Endpoint) -> Response | None:
    svc = services()
    shake = handshake(
        websocket.headers.get("Authorization"),
        websocket.args,
        svc.settings,
        getattr(g, "request_id", ""),
        owner_of=svc.keys.owner,
    )
    if not caller_allowed(shake.token):
        return unauthorized()  # an HTTP 401 instead of the upgrade
    await websocket.accept()
    await serve_voice(
        cast(Any, websocket)._get_current_object(), svc, endpoint, shake.info, lifecycle()
    )
    return None


def voice_ws_blueprint() -> Blueprint:
    """The two voice endpoints (they use the app's ``Services``)."""
    bp = Blueprint("voice_ws", __name__)

    @bp.websocket("/v1/chat/audio")
    async def chat_audio() -> Response | None:
        return await _serve("audio")

    @bp.websocket("/v1/chat/vlm")
    async def chat_vlm() -> Response | None:
        return await _serve("vlm")

    return bp
