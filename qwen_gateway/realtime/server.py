"""Serving one accepted ``/v1/realtime`` connection: the connection shell, metrics, the drain, and the backend the
``model`` picks (:func:`backend_for`).

The route (:mod:`qwen_gateway.routes.realtime_ws`) checks the key and the model and holds the session's lease;
:func:`serve_realtime` runs the connection until it ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

from protocol import realtime as rt

from ..lifecycle import Lifecycle
from ..logs import bind
from ..providers.dashscope.catalogue import omni_model
from ..quota import Limits as QuotaLimits
from ..voice.turn import SessionInfo, VoiceConfig
from ..ws import CloseInfo, WebSocketLike, WsConnection, WsLimits
from .cascade import CascadeConfig, CascadeSession
from .ledger import ENDPOINT
from .omni_session import OmniSession
from .response import ResponseDeps

if TYPE_CHECKING:
    from ..services import Services

__all__ = ["Backend", "backend_for", "cascade_config", "serve_realtime"]

log = logging.getLogger("qwen_gateway.realtime")

Backend = Literal["cascade", "omni"]


def backend_for(model: str) -> Backend:
    """The backend that serves ``model``: the seam between the two.

    A Qwen-Omni realtime model of the catalogue (``omni_model``: by name, dated snapshot or family) goes to the
    Omni pass-through (:class:`~.omni_session.OmniSession`); any other name is a chat model of the cascade.
    """
    return "omni" if omni_model(model) is not None else "cascade"


def _error_frame(code: str, message: str) -> str:
    """The shell's own ``error`` events (idle timeout, send timeout, internal error) in OpenAI's shape."""
    return rt.encode_server_event(
        rt.error_event(rt.RealtimeError(code, message, type="server_error")), "event_shell"
    )


def cascade_config(services: Services) -> CascadeConfig:
    """The cascade's engines and knobs from the app's services."""
    settings = services.settings
    voice = VoiceConfig.from_settings(settings)
    providers = services.providers
    return CascadeConfig(
        response=ResponseDeps(
            chat=providers.chat,
            synthesizer=providers.synthesizer,
            tuning=voice.answer,
            clock=time.monotonic,
        ),
        recognizer_for=providers.recognizer_for,
        outbox=services.storage.outbox,
        read_timeout=settings.read_timeout,
        cleanup_timeout=voice.cleanup_timeout,
        max_audio_seconds=settings.max_audio_seconds,
        max_frame_bytes=settings.max_frame_bytes,
        system_prompt=settings.default_system_prompt,
        max_turns=settings.max_turns_per_connection,
        history=services.storage.history,
        history_turns=voice.history_turns,
        history_tokens=voice.history_tokens,
    )


async def serve_realtime(
    websocket: WebSocketLike,
    services: Services,
    info: SessionInfo,
    model: str,
    quota_limits: QuotaLimits | None = None,
    lifecycle: Lifecycle | None = None,
) -> CloseInfo:
    """Run an accepted ``/v1/realtime`` connection until it ends.

    Raises:
        asyncio.CancelledError: the client went away; everything the session started was cancelled.
    """
    bind(session_id=info.session_id)
    metrics = services.metrics if services.metrics.enabled else None
    error_frame = _error_frame
    if metrics is not None:

        def error_frame(code: str, message: str) -> str:
            metrics.error("ws", code)
            return _error_frame(code, message)

        metrics.ws_total.labels(ENDPOINT).inc()
        metrics.ws_active.labels(ENDPOINT).inc()
    conn = WsConnection(
        websocket, WsLimits.from_settings(services.settings), error_frame=error_frame
    )
    backend = backend_for(model)
    session: CascadeSession | OmniSession
    if backend == "omni":
        session = OmniSession(
            conn,
            services.settings,
            info,
            model=model,
            outbox=services.storage.outbox,
            quotas=services.quotas,
            quota_limits=quota_limits,
            metrics=metrics,
            lifecycle=lifecycle,
        )
    else:
        session = CascadeSession(
            conn,
            cascade_config(services),
            info,
            model=model,
            quotas=services.quotas,
            quota_limits=quota_limits,
            metrics=metrics,
            lifecycle=lifecycle,
        )
    log.info("realtime connection open", extra={"fields": {"backend": backend, "model": model}})
    counted = lifecycle.connection() if lifecycle is not None else contextlib.nullcontext()
    with counted:
        try:
            return await conn.run(session.on_frame, on_open=session.on_open)
        finally:
            if metrics is not None:
                metrics.ws_active.labels(ENDPOINT).dec()
