"""Admission of a WebSocket: the delay fault, the API key, an injected HTTP error — before the upgrade; and
:func:`serve_socket`, the life of one simulated WebSocket around it (recorded, admitted, served, drained)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from .asgi import DRAIN_SECONDS, Disconnected, WebSocket, bearer_key, dumps
from .errors import find_family, native_body
from .faults import Endpoint
from .records import ConnectionRecord
from .state import SimulatorState

__all__ = ["admit", "serve_socket"]


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


async def serve_socket(
    state: SimulatorState,
    ws: WebSocket,
    endpoint: Endpoint,
    serve: Callable[[ConnectionRecord, str], Awaitable[tuple[str, int | None]]],
) -> None:
    """Serve one WebSocket of ``endpoint``: record the connection (kind ``endpoint``), admit the handshake, then
    ``serve(connection, call)``, which accepts the socket and returns the close reason and code to record.

    ``call`` (``"<endpoint>-<connection id>"``) names the connection for the fault plan. A refused handshake, a
    client that leaves and a shutdown (close 1001, then the cancellation goes on) are recorded as such; the
    socket is always drained.
    """
    conn = state.log.open(endpoint, ws.path, ws.headers)
    if state.config.capture_frames:
        ws.frames_in = conn.frames_in
    call = f"{endpoint}-{conn.id}"
    why, code = "error", None
    try:
        await ws.connect()
        refused = await admit(state, ws, endpoint, call)
        if refused is not None:
            why, code = "rejected", refused
            return
        why, code = await serve(conn, call)
    except Disconnected:
        why, code = "client", ws.client_close_code
    except asyncio.CancelledError:
        why, code = "shutdown", 1001
        await ws.close_soon(1001)
        raise
    finally:
        state.log.close(conn, why, code=code)
        await ws.drain(1.0 if why == "shutdown" else DRAIN_SECONDS)
