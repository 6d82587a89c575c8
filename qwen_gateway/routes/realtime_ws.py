"""``WS /v1/realtime?model=...``: OpenAI's Realtime protocol (see :mod:`qwen_gateway.realtime`).

The handshake takes the gateway key as on the other endpoints (``Authorization: Bearer``, ``?token=``) or, from
browsers, as OpenAI's subprotocol ``openai-insecure-api-key.<key>`` (the ``realtime`` subprotocol is then
accepted back). A missing or wrong key is answered 401 before the upgrade, a ``model`` that is not a name, or that
names a recognition or synthesis model, 400. Origin and Host are checked for every WebSocket by the app.

Limits as on the voice endpoints: a connection is one voice session of its key (over the key's concurrent
sessions: an ``error`` event ``rate_limit_exceeded`` and close 1013); each response is admitted on its own.
"""

from __future__ import annotations

import re
from typing import Any, cast

from quart import Blueprint, Response, g, websocket

from protocol import realtime as rt

from ..providers.dashscope.catalogue import ASR_MODELS, TTS_MODELS
from ..quota import Refusal
from ..realtime.server import serve_realtime
from ..voice.runner import handshake
from .common import caller_allowed, caller_limits, error_response, lifecycle, services, unauthorized

__all__ = ["realtime_ws_blueprint", "subprotocol_key"]

#: OpenAI's browser form of the key: a subprotocol (browsers cannot set headers on a WebSocket).
KEY_SUBPROTOCOL = "openai-insecure-api-key."
#: The subprotocol accepted back when the client offers it.
REALTIME_SUBPROTOCOL = "realtime"

_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def subprotocol_key(offered: list[str]) -> str | None:
    """The key in an offered ``openai-insecure-api-key.<key>`` subprotocol, if any."""
    for name in offered:
        if name.startswith(KEY_SUBPROTOCOL) and len(name) > len(KEY_SUBPROTOCOL):
            return name[len(KEY_SUBPROTOCOL) :]
    return None


def _model_problem(model: str) -> str | None:
    """Why ``model`` cannot be the model of a realtime session (None: it can)."""
    if not _MODEL.match(model):
        return "model must be a model name (letters, digits, '.', '_', ':', '/', '-'; at most 128)"
    if model in ASR_MODELS or model in TTS_MODELS:
        return f"{model} is a speech model: name a chat model (qwen-plus, ...) or a Qwen-Omni realtime model"
    return None


async def _serve() -> Response | None:
    svc = services()
    offered = list(websocket.requested_subprotocols)
    authorization = websocket.headers.get("Authorization")
    key = subprotocol_key(offered)
    if authorization is None and key is not None:
        authorization = f"Bearer {key}"
    shake = handshake(
        authorization,
        websocket.args,
        svc.settings,
        getattr(g, "request_id", ""),
        owner_of=svc.keys.owner,
    )
    if not caller_allowed(shake.token):
        return unauthorized()  # an HTTP 401 instead of the upgrade
    model = websocket.args.get("model") or svc.settings.chat_model
    problem = _model_problem(model)
    if problem is not None:
        return error_response(400, problem, code="invalid_model", param="model")
    limits = caller_limits(shake.token)
    name = svc.keys.policy(shake.token).name
    if name:
        await svc.quotas.name_owner(name, shake.info.owner)
    await websocket.accept(
        subprotocol=REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None
    )
    session = await svc.quotas.open_session(shake.info.owner, limits)
    if isinstance(session, Refusal):
        if svc.metrics.enabled:
            svc.metrics.quota_refused(session.kind)
        refusal = rt.RealtimeError(
            "rate_limit_exceeded", session.message(), type="rate_limit_error"
        )
        await websocket.send(rt.encode_server_event(rt.error_event(refusal), "event_1"))
        await websocket.close(1013, "too many concurrent sessions for this key")
        return None
    try:
        await serve_realtime(
            cast(Any, websocket)._get_current_object(),
            svc,
            shake.info,
            model,
            limits,
            lifecycle(),
        )
    finally:
        await svc.quotas.release(session)
    return None


def realtime_ws_blueprint() -> Blueprint:
    """``/v1/realtime`` (it uses the app's ``Services``)."""
    bp = Blueprint("realtime_ws", __name__)

    @bp.websocket("/v1/realtime")
    async def realtime() -> Response | None:
        return await _serve()

    return bp
