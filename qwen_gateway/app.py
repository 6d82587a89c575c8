"""``create_app(settings, services)``: the Quart application, its routes and cross-cutting behaviour.

Cross-cutting: a request id on every request (``X-Request-Id``, taken from the caller when it sent a sane one),
CORS for the configured origins, OpenAI-style JSON for every HTTP error, and a *bounded* WebSocket receive queue
(Quart's own is unbounded: a fast sender would fill server memory; bounded, the sender is slowed down by TCP).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart, Response, g, has_websocket_context, redirect, request, websocket
from quart.asgi import ASGIWebsocketConnection
from quart.wrappers import Websocket
from werkzeug.exceptions import HTTPException

from .auth import check_bind
from .config import Settings
from .logs import bind
from .routes.chat import chat_blueprint
from .routes.common import error_response
from .routes.health import health_blueprint
from .routes.voice_ws import voice_ws_blueprint
from .routes.web import default_dirs, web_blueprint
from .services import Services

__all__ = ["create_app"]

log = logging.getLogger("qwen_gateway.app")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_WEBSOCKET_SIGNATURE = inspect.signature(Websocket.__init__)


class DirectWebsocket(Websocket):
    """Quart's ``websocket`` whose :meth:`send` hands the frame to the server at once.

    Quart's own ``send`` first yields to the event loop (``asyncio.sleep(0)``, so that a handler sending in a
    tight loop lets others run). Our frames are sent by one writer task per connection that waits on a bounded
    queue (``ws.WsConnection``), which yields whenever the queue is empty; the extra yield only let other work
    run between a frame being taken and being written: measured 0.2 ms on the way of every voice event.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The ASGI-level send Quart built for this connection (``partial(send_data, send)``).
        bound = _WEBSOCKET_SIGNATURE.bind(self, *args, **kwargs)
        self._send_frame: Callable[[str | bytes], Awaitable[None]] = bound.arguments["send"]
        self._accepted_once = False

    async def accept(self, headers: Any = None, subprotocol: str | None = None) -> None:
        await super().accept(headers, subprotocol)
        self._accepted_once = True

    async def send(self, data: str | bytes) -> None:
        if not self._accepted_once:
            await self.accept()
        await self._send_frame(data)


class BoundedWebsocketConnection(ASGIWebsocketConnection):
    """Quart's WebSocket connection with a bounded receive queue (``QG_WS_RECEIVE_QUEUE`` messages)."""

    def __init__(self, app: Quart, scope: Any) -> None:
        super().__init__(app, scope)
        self.queue = asyncio.Queue(maxsize=app.config["QG_WS_RECEIVE_QUEUE"])


def create_app(settings: Settings, services: Services) -> Quart:
    """Build the application around already-built ``services`` (see :func:`open_services`)."""
    check_bind(settings, services.keys)
    app = Quart("qwen_gateway")
    app.config.update(
        QG_SETTINGS=settings,
        QG_SERVICES=services,
        QG_WS_RECEIVE_QUEUE=settings.ws_receive_queue,
        # A hard cap; routes apply QG_MAX_BODY_BYTES themselves and answer 413 cleanly (routes.common.read_body).
        MAX_CONTENT_LENGTH=max(settings.max_body_bytes * 4, 64 * 1024 * 1024),
        BODY_TIMEOUT=int(settings.read_timeout),
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.asgi_websocket_class = BoundedWebsocketConnection
    app.websocket_class = DirectWebsocket
    cors = set(settings.cors_origins)

    # Request ids need to be unique, not secret: a random prefix per app and a counter (no syscall per request).
    rid_prefix = f"req-{secrets.token_hex(8)}"
    rid_counter = itertools.count(1)

    @app.before_request
    async def _request_id() -> Response | None:
        rid = request.headers.get("X-Request-Id", "")
        if not (rid and _REQUEST_ID.match(rid)):
            rid = f"{rid_prefix}{next(rid_counter):016x}"
        g.request_id = rid
        bind(request_id=rid)
        if request.method == "OPTIONS":  # CORS preflight (and plain OPTIONS) on any path
            return _preflight()
        return None

    @app.before_websocket
    async def _ws_request_id() -> None:
        g.request_id = f"req-{uuid.uuid4().hex}"
        bind(request_id=g.request_id)

    @app.after_request
    async def _headers(resp: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers["X-Request-Id"] = rid
        if not cors:
            return resp
        origin = request.headers.get("Origin")
        if origin and ("*" in cors or origin in cors):
            resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in cors else origin
            resp.headers["Access-Control-Expose-Headers"] = (
                "X-Request-Id, X-Conversation-Id, Retry-After"
            )
            if "*" not in cors:
                resp.headers["Vary"] = "Origin"
        return resp

    def _preflight() -> Response:
        resp = Response("", status=204)
        origin = request.headers.get("Origin")
        if origin and ("*" in cors or origin in cors):
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers",
                "Authorization, Content-Type, X-Conversation-Id, X-Request-Id",
            )
            resp.headers["Access-Control-Max-Age"] = "600"
        return resp

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        # Also raised for a WebSocket handshake (an unknown path, say): answered before the upgrade.
        current = websocket if has_websocket_context() else request
        status = exc.code or 500
        messages = {
            404: f"Unknown path: {current.path}",
            405: f"Method {current.method} is not allowed on {current.path}",
            413: f"Request body too large (limit {settings.max_body_bytes} bytes)",
        }
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        resp = error_response(
            status, messages.get(status, exc.description or exc.name), code=codes.get(status)
        )
        allow = dict(exc.get_headers()).get("Allow")
        if allow:
            resp.headers["Allow"] = allow  # 405: the methods the path takes (RFC 9110 §15.5.6)
        return resp

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "Internal error", code="internal_error")

    app.register_blueprint(health_blueprint())
    app.register_blueprint(chat_blueprint())
    app.register_blueprint(voice_ws_blueprint())
    web_dir, schemas_dir = default_dirs()
    if web_dir.is_dir():
        app.register_blueprint(web_blueprint(web_dir, schemas_dir))

        @app.get("/")
        async def _root() -> Response:
            return redirect("/web/")  # type: ignore[return-value]

    _register_optional(app, settings, services)
    return app


def _register_optional(app: Quart, settings: Settings, services: Services) -> None:
    """Routes whose modules build on the services (registered when the service they need exists)."""
    from .storage.objects import LocalObjectStore

    objects = services.storage.objects
    if isinstance(objects, LocalObjectStore):
        from .routes.objects import objects_blueprint

        app.register_blueprint(objects_blueprint(objects, services.keys.check))
