"""The simulator as one raw ASGI application: DashScope's paths on one port, HTTP and WebSocket.

::

    POST /compatible-mode/v1/chat/completions        chat (OpenAI-compatible, streamed or not)
    WS   /api-ws/v1/inference[/]                     task protocol: paraformer ASR, CosyVoice TTS
    WS   /api-ws/v1/realtime?model=...               realtime TTS, realtime recognition, Qwen-Omni (by model)
    POST /api/v1/services/audio/asr/transcription    file ASR submit
    GET  /api/v1/tasks/<id>, POST .../<id>/cancel    file ASR poll / cancel
    GET  /simulator/results/<task>/<n>.json          the transcription_url files
    POST /api/v1/services/aigc/multimodal-generation/generation   HTTP TTS (qwen3-tts-flash, qwen-tts)
    GET  /simulator/audio/<id>.wav                   the output.audio.url of a non-streamed HTTP TTS answer
    GET  /health                                     {"status": "ok", "simulator": true}
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

from .asgi import Disconnected, HttpRequest, Receive, Scope, Send, WebSocket, dumps
from .chat import handle_chat
from .file_asr import handle_cancel, handle_poll, handle_result, handle_submit
from .http_tts import handle_http_tts, handle_tts_audio
from .inference import handle_inference
from .realtime_route import handle_realtime_socket
from .state import SimulatorState

__all__ = ["SimulatorApp"]


_TASK = re.compile(r"/api/v1/tasks/([^/]+)(/cancel)?/?")
_RESULT = re.compile(r"/simulator/results/([^/]+)/(\d+)\.json")
_TTS_AUDIO = re.compile(r"/simulator/audio/([A-Za-z0-9_-]+)\.wav")
_HEALTH = b'{"status":"ok","simulator":true}'


class SimulatorApp:
    """ASGI entry point. Tracks its running handlers so :meth:`close_connections` can end them."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.started = asyncio.Event()
        self._handlers: set[asyncio.Task[object]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            if kind == "http":
                await self._http(HttpRequest(scope, receive, send))
            elif kind == "websocket":
                await self._websocket(WebSocket(scope, receive, send))
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def close_connections(self, grace: float = 2.0) -> None:
        """End every running request and socket (WebSockets get close 1001)."""
        handlers = [t for t in self._handlers if not t.done()]
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=grace)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, req: HttpRequest) -> None:
        path, method, state = req.path, req.method, self.state
        if path == "/compatible-mode/v1/chat/completions":
            if method == "POST":
                await handle_chat(state, req)
                return
        elif path == "/api/v1/services/audio/asr/transcription":
            if method == "POST":
                await handle_submit(state, req)
                return
        elif path == "/api/v1/services/aigc/multimodal-generation/generation":
            if method == "POST":
                await handle_http_tts(state, req)
                return
        elif (m := _TASK.fullmatch(path)) is not None:
            if m.group(2) and method == "POST":
                await handle_cancel(state, req, m.group(1))
                return
            if not m.group(2) and method in ("GET", "POST"):
                await handle_poll(state, req, m.group(1))
                return
        elif (m := _RESULT.fullmatch(path)) is not None:
            if method == "GET":
                await handle_result(state, req, m.group(1), int(m.group(2)))
                return
        elif (m := _TTS_AUDIO.fullmatch(path)) is not None:
            if method == "GET":
                await handle_tts_audio(state, req, m.group(1))
                return
        elif path in ("/health", "/simulator/health"):
            await req.respond(200, _HEALTH)
            return
        else:
            await req.respond_json(
                404,
                {
                    "request_id": str(uuid.uuid4()),
                    "code": "NotFound",
                    "message": f"No route for {path}",
                },
            )
            return
        await req.respond(405, dumps({"code": "MethodNotAllowed", "message": f"{method} {path}"}))

    async def _websocket(self, ws: WebSocket) -> None:
        path = ws.path.rstrip("/")
        if path == "/api-ws/v1/inference":
            await handle_inference(self.state, ws)
        elif path == "/api-ws/v1/realtime":
            await handle_realtime_socket(self.state, ws)
        else:
            with contextlib.suppress(Disconnected):
                await ws.connect()
                await ws.reject(
                    404, dumps({"code": "NotFound", "message": f"No route for {ws.path}"})
                )
