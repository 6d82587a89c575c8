"""``WS /v1/chat/audio`` (voice chat) and ``WS /v1/chat/vlm`` (a spoken question about an image).

The handshake needs a gateway key when keys are configured (``Authorization: Bearer`` or, for browsers,
``?token=``) and is answered 401 before the upgrade otherwise. A device option with a value the gateway does
not take (``audio_format``, ``sample_rate``, ``frame_ms``, ``pace``, ``mode``, ``silence_ms``; see
:mod:`protocol.device`) is answered 400 before the upgrade (``invalid_parameter``, ``param`` names it). In pass-through mode (``QG_KEY_PASSTHROUGH``) the
caller's key is its own DashScope key: it must be present, and the upstream judges it. A ``?conversation_id=``
names one of the caller's own conversations (see ``KeyChecker.owner``).

Limits (``qwen_gateway.quota``): a connection is one voice session of its key; over the key's concurrent sessions
it gets an ``error`` event ``rate_limited`` and is closed (1013). Each turn is checked when it starts (see
``VoiceRunner``): a refused turn gets an ``error`` event and the connection stays open.
"""

from __future__ import annotations

from typing import Any, cast

from quart import Blueprint, Response, g, websocket

from protocol import HandshakeError, encode_event

from ..quota import Refusal
from ..voice.runner import Endpoint, handshake, refusal_event, serve_voice
from .common import caller_allowed, caller_limits, error_response, lifecycle, services, unauthorized

__all__ = ["voice_ws_blueprint"]


async def _serve(endpoint: Endpoint) -> Response | None:
    svc = services()
    try:
        shake = handshake(
            websocket.headers.get("Authorization"),
            websocket.args,
            svc.settings,
            getattr(g, "request_id", ""),
            owner_of=svc.keys.owner,
        )
    except HandshakeError as exc:
        # A bad device option (audio_format, pace, mode ...): an HTTP 400 instead of the upgrade.
        return error_response(400, exc.message, code="invalid_parameter", param=exc.param)
    if endpoint == "vlm" and shake.info.device.stream:
        # The VLM question is complete at its end already; open-microphone turns are the audio endpoint's.
        message = "mode=stream is for /v1/chat/audio; /v1/chat/vlm turns start on end"
        return error_response(400, message, code="invalid_parameter", param="mode")
    if not caller_allowed(shake.token):
        return unauthorized()  # an HTTP 401 instead of the upgrade
    limits = caller_limits(shake.token)
    name = svc.keys.policy(shake.token).name
    if name:
        await svc.quotas.name_owner(name, shake.info.owner)  # for usage queries by name
    await websocket.accept()
    session = await svc.quotas.open_session(shake.info.owner, limits)
    if isinstance(session, Refusal):
        # Over the key's concurrent sessions: say why, then close with 1013 (try again later).
        if svc.metrics.enabled:
            svc.metrics.quota_refused(session.kind)
        await websocket.send(encode_event(refusal_event(session)))
        await websocket.close(1013, "too many concurrent sessions for this key")
        return None
    try:
        await serve_voice(
            cast(Any, websocket)._get_current_object(),
            svc,
            endpoint,
            shake.info,
            limits,
            lifecycle(),
        )
    finally:
        await svc.quotas.release(session)
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
