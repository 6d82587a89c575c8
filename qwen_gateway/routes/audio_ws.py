"""``WS /v1/chat/audio``: voice chat. The handshake needs a gateway key when keys are configured."""

from __future__ import annotations

from typing import Any, cast

from quart import Blueprint, Response, g, websocket

from ..voice.runner import handshake, serve_voice
from .common import services, unauthorized

__all__ = ["audio_ws_blueprint"]


def audio_ws_blueprint() -> Blueprint:
    """The blueprint of ``/v1/chat/audio`` (uses the app's ``Services``)."""
    bp = Blueprint("audio_ws", __name__)

    @bp.websocket("/v1/chat/audio")
    async def chat_audio() -> Response | None:
        svc = services()
        shake = handshake(
            websocket.headers.get("Authorization"),
            websocket.args,
            svc.settings,
            getattr(g, "request_id", ""),
        )
        if not svc.keys.check(shake.token):
            return unauthorized()  # an HTTP 401 instead of the upgrade
        await websocket.accept()
        await serve_voice(cast(Any, websocket)._get_current_object(), svc, "audio", shake.info)
        return None

    return bp
