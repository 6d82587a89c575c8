"""``create_app(settings, services)``: the Quart application, its routes and cross-cutting behaviour.

Cross-cutting: a request id on every request (``X-Request-Id``, taken from the caller when it sent a sane one),
CORS for the configured origins, the ``Origin`` check of every WebSocket handshake and the ``Host`` check of open
mode (both decided by :class:`qwen_gateway.origins.OriginPolicy`), OpenAI-style JSON for every HTTP error, and a
*bounded* WebSocket receive queue (Quart's own is unbounded: a fast sender would fill server memory; bounded, the
sender is slowed down by TCP).

The two Quart classes below replace internals of Quart 0.22 (``pyproject.toml`` pins the minor version;
``tests/gateway/test_framework_pins.py`` fails loudly when what they rely on changes).
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
from .lifecycle import Lifecycle
from .logs import bind
from .metrics import ROUTE, LoopLagSampler, measure_http
from .origins import OriginPolicy
from .routes.chat import chat_blueprint
from .routes.common import error_response
from .routes.health import health_blueprint
from .routes.metrics import metrics_blueprint
from .routes.realtime_ws import realtime_ws_blueprint
from .routes.usage import usage_blueprint
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


def create_app(settings: Settings, services: Services, lifecycle: Lifecycle | None = None) -> Quart:
    """Build the application around already-built ``services`` (see :func:`open_services`).

    ``lifecycle`` is the server's readiness and drain (``qwen-gateway serve`` passes the one its SIGTERM handler
    drains); without one the app gets its own, already started, that nothing drains.
    """
    check_bind(settings, services.keys)
    if lifecycle is None:
        lifecycle = Lifecycle.from_settings(settings)
        lifecycle.mark_started()
    app = Quart("qwen_gateway")
    app.config.update(
        QG_SETTINGS=settings,
        QG_SERVICES=services,
        QG_LIFECYCLE=lifecycle,
        QG_WS_RECEIVE_QUEUE=settings.ws_receive_queue,
        # A hard cap; routes apply QG_MAX_BODY_BYTES themselves and answer 413 cleanly (routes.common.read_body).
        MAX_CONTENT_LENGTH=max(settings.max_body_bytes * 4, 64 * 1024 * 1024),
        BODY_TIMEOUT=int(settings.read_timeout),
        JSON_AS_ASCII=False,
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.asgi_websocket_class = BoundedWebsocketConnection
    app.websocket_class = DirectWebsocket
    policy = OriginPolicy.from_settings(settings, services.keys)

    # Request ids need to be unique, not secret: a random prefix per app and a counter (no syscall per request).
    rid_prefix = f"req-{secrets.token_hex(8)}"
    rid_counter = itertools.count(1)

    metrics = services.metrics
    if metrics.enabled:
        app.asgi_app = measure_http(app.asgi_app, metrics)  # type: ignore[method-assign]
        sampler = LoopLagSampler(metrics, backlog=services.storage.outbox.backlog)
        app.before_serving(sampler.start)
        app.after_serving(sampler.stop)

    @app.before_request
    async def _request_id() -> Response | None:
        rule = request.url_rule
        request.scope[ROUTE] = rule.rule if rule is not None else "unmatched"  # type: ignore[typeddict-unknown-key]
        rid = request.headers.get("X-Request-Id", "")
        if not (rid and _REQUEST_ID.match(rid)):
            rid = f"{rid_prefix}{next(rid_counter):016x}"
        g.request_id = rid
        bind(request_id=rid)
        if not policy.host_allowed(request.host):
            return _host_refused()
        if lifecycle.draining and not request.path.startswith("/health"):
            return _draining_refused()
        if request.method == "OPTIONS":  # CORS preflight (and plain OPTIONS) on any path
            return _preflight()
        return None

    @app.before_websocket
    async def _ws_handshake() -> Response | None:
        """Every WebSocket route: a request id, then the Host and Origin checks (403 before the upgrade)."""
        g.request_id = f"req-{uuid.uuid4().hex}"
        bind(request_id=g.request_id)
        if not policy.host_allowed(websocket.host):
            return _host_refused()
        if lifecycle.draining:
            return _draining_refused()
        origin = websocket.headers.get("Origin")
        if origin is not None and not policy.websocket_origin_allowed(origin, websocket.host):
            log.info("websocket origin refused", extra={"fields": {"origin": origin[:200]}})
            return error_response(
                403,
                f"WebSocket connections from the origin {origin[:200]!r} are not allowed "
                "(QG_CORS_ORIGINS lists the allowed ones).",
                code="origin_not_allowed",
            )
        return None

    def _draining_refused() -> Response:
        """During a drain: 503 for every new request and WebSocket handshake (not for /health*)."""
        return error_response(
            503,
            "This gateway instance is shutting down; retry (another instance will answer).",
            code="shutting_down",
            headers={"Retry-After": "1", "Connection": "close"},
        )

    def _host_refused() -> Response:
        return error_response(
            403,
            "This gateway runs without keys and answers only to a loopback Host or the host of "
            "QG_PUBLIC_URL (a guard against DNS rebinding).",
            code="host_not_allowed",
        )

    @app.after_request
    async def _headers(resp: Response) -> Response:
        if resp.status_code >= 400 and metrics.enabled:
            metrics.error("http", getattr(resp, "qg_error_code", None) or str(resp.status_code))
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers["X-Request-Id"] = rid
        origin = request.headers.get("Origin")
        if policy.cors_allowed(origin):
            resp.headers["Access-Control-Allow-Origin"] = "*" if policy.any_origin else str(origin)
            resp.headers["Access-Control-Expose-Headers"] = (
                "X-Request-Id, X-Conversation-Id, Retry-After, X-Gateway-Overhead-Ms"
            )
            if not policy.any_origin:
                resp.headers["Vary"] = "Origin"
        return resp

    @app.after_websocket
    async def _ws_refused(resp: Response | None) -> Response | None:
        """A handshake answered with an HTTP error instead of the upgrade counts as an HTTP error response."""
        if resp is not None and resp.status_code >= 400 and metrics.enabled:
            metrics.error("http", getattr(resp, "qg_error_code", None) or str(resp.status_code))
        return resp

    def _preflight() -> Response:
        resp = Response("", status=204)
        if policy.cors_allowed(request.headers.get("Origin")):
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
    if metrics.enabled:
        app.register_blueprint(metrics_blueprint())
    app.register_blueprint(chat_blueprint())
    app.register_blueprint(voice_ws_blueprint())
    app.register_blueprint(realtime_ws_blueprint())
    app.register_blueprint(usage_blueprint())
    web_dir, schemas_dir = default_dirs()
    if web_dir.is_dir():
        app.register_blueprint(web_blueprint(web_dir, schemas_dir))

        @app.get("/")
        async def _root() -> Response:
            return redirect("/web/")  # type: ignore[return-value]

    _register_optional(app, settings, services)
    app.asgi_app = _counting_requests(app.asgi_app, lifecycle)  # type: ignore[method-assign]
    return app


def _counting_requests(asgi_app: Any, lifecycle: Lifecycle) -> Any:
    """``asgi_app`` with every HTTP request counted by ``lifecycle`` until its response is sent (a drain waits
    for them within its grace period; WebSocket connections are counted by the voice routes)."""

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return
        with lifecycle.request():
            await asgi_app(scope, receive, send)

    return counted


def _register_optional(app: Quart, settings: Settings, services: Services) -> None:
    """Routes whose modules build on the services (registered when the service they need exists)."""
    from .storage.objects import LocalObjectStore

    objects = services.storage.objects
    if isinstance(objects, LocalObjectStore):
        from .routes.objects import objects_blueprint

        app.register_blueprint(objects_blueprint(objects, services.keys.matches))
