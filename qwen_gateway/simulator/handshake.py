"""Admission of a WebSocket: the delay fault, the API key, an injected HTTP error — before the upgrade."""

from __future__ import annotations

import asyncio
import uuid

from .asgi import WebSocket, bearer_key, dumps
from .errors import find_family, native_body
from .faults import Endpoint
from .state import SimulatorState

__all__ = ["admit"]


async def admit(state: SimulatorState, ws: WebSocket, endpoint: Endpoint, call: str) -> int | None:
    """Check a handshake. Returns None when accepted (not yet upgraded), else the status it was refused with."""
    cfg = state.config
    delay = state.faults.take(endpoint, frozenset({"delay"}), call).get("delay")
    if delay is not None:
        await asyncio.sleep(delay.seconds or 0.0)
    query = ws.query if cfg.accept_query_api_key else None
    if not cfg.key_ok(bearer_key(ws.headers, query)):
        status = cfg.ws_reject_status
        await ws.reject(status, dumps(native_body(find_family(401), str(uuid.uuid4()))))
        return status
    injected = state.faults.take(endpoint, frozenset({"http_error"}), call).get("http_error")
    if injected is not None:
        family = find_family(injected.status, injected.code)
        body = native_body(family, str(uuid.uuid4()), message=injected.message)
        await ws.reject(injected.status, dumps(body))
        return injected.status
    return None
