"""``/api-ws/v1/realtime?model=``: one socket path, three protocols, chosen by the model (:mod:`.models`).

``REALTIME_TTS`` models (``qwen-tts-realtime`` ...) get the TTS session (:mod:`.realtime`), ``REALTIME_ASR``
(``qwen3-asr-flash-realtime``) realtime recognition (:mod:`.realtime_asr`), ``OMNI`` the Qwen-Omni session
(:mod:`.omni`). Any other model (a file or task model, a typo, none) is refused as DashScope refuses it on this
socket: the handshake is accepted (key checked first), then one ``error`` event with code ``model_not_found`` and
a close 1008 ([U]: DashScope's exact wording is undocumented; the SDK only sees an ``error`` event and the close).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from .asgi import WebSocket, dumps
from .handshake import serve_socket
from .models import Endpoint, serves
from .omni import handle_omni
from .realtime import handle_realtime
from .realtime_asr import handle_realtime_asr
from .records import ConnectionRecord
from .state import SimulatorState
from .wsconn import event_id

__all__ = ["handle_realtime_socket"]

_HANDLERS: Mapping[Endpoint, Callable[[SimulatorState, WebSocket], Awaitable[None]]] = {
    Endpoint.REALTIME_TTS: handle_realtime,
    Endpoint.REALTIME_ASR: handle_realtime_asr,
    Endpoint.OMNI: handle_omni,
}


async def handle_realtime_socket(state: SimulatorState, ws: WebSocket) -> None:
    """Serve one ``/api-ws/v1/realtime`` socket by its ``model=``."""
    model = ws.query.get("model", "")
    for endpoint, handler in _HANDLERS.items():
        if serves(endpoint, model):
            await handler(state, ws)
            return

    async def refuse(conn: ConnectionRecord, call: str) -> tuple[str, int | None]:
        await ws.accept()
        error = {
            "type": "invalid_request_error",
            "code": "model_not_found",
            "message": f"Model not found ({model}): the model does not exist or is not served on "
            "/api-ws/v1/realtime.",
        }
        await ws.send_text(
            dumps({"event_id": event_id(), "type": "error", "error": error}).decode()
        )
        await ws.close(1008)
        return "rejected", 1008

    # Recorded (and faulted) as the socket's historical kind, the realtime TTS one.
    await serve_socket(state, ws, "tts", refuse)
