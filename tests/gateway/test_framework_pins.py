"""Quart and Hypercorn internals the gateway relies on: a new release that changes them must fail here, loudly.

``qwen_gateway/app.py`` replaces two Quart classes (``DirectWebsocket`` writes frames through the ASGI ``send``
that Quart passes to ``Websocket.__init__``; ``BoundedWebsocketConnection`` swaps the receive queue that
``ASGIWebsocketConnection`` fills), and ``server.py`` sets Hypercorn ``Config`` attributes (an unknown attribute
would be set silently and do nothing). ``pyproject.toml`` pins both to the minor versions checked here.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import tomllib
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config
from packaging.requirements import Requirement
from quart import Quart
from quart.asgi import ASGIWebsocketConnection
from quart.wrappers import Websocket

from qwen_gateway.app import BoundedWebsocketConnection, DirectWebsocket
from qwen_gateway.config import Settings
from qwen_gateway.server import hypercorn_config

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pins() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {r.name.lower(): r for r in reqs if r.name.lower() in ("quart", "hypercorn")}


@pytest.mark.parametrize("name", ["quart", "hypercorn"])
def test_the_installed_framework_is_the_pinned_minor_version(name: str) -> None:
    pin = _pins()[name]
    installed = version(name)
    assert pin.specifier.contains(installed), (
        f"{name} {installed} is installed, pyproject pins {pin}"
    )
    upper = [s for s in pin.specifier if s.operator == "<"]
    assert upper, f"{name} has no upper bound in pyproject.toml: its internals are patched"


def test_quart_websocket_constructor_still_takes_the_asgi_send() -> None:
    params = list(inspect.signature(Websocket.__init__).parameters)
    assert params == [
        "self",
        "path",
        "query_string",
        "scheme",
        "headers",
        "root_path",
        "http_version",
        "subprotocols",
        "receive",
        "send",
        "accept",
        "close",
        "scope",
    ]
    assert list(inspect.signature(Websocket.accept).parameters) == [
        "self",
        "headers",
        "subprotocol",
    ]
    assert list(inspect.signature(ASGIWebsocketConnection.__init__).parameters) == [
        "self",
        "app",
        "scope",
    ]


def _app(queue_size: int) -> Quart:
    app = Quart(__name__)
    app.config["QG_WS_RECEIVE_QUEUE"] = queue_size
    app.asgi_websocket_class = BoundedWebsocketConnection
    app.websocket_class = DirectWebsocket
    return app


def _scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/ws",
        "query_string": b"",
        "scheme": "ws",
        "headers": [(b"host", b"127.0.0.1")],
        "asgi": {"spec_version": "2.3"},
    }


async def test_quart_builds_our_websocket_around_the_bounded_queue_and_the_asgi_send() -> None:
    app = _app(queue_size=3)
    conn = BoundedWebsocketConnection(app, _scope())  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def asgi_send(message: dict[str, Any]) -> None:
        sent.append(message)

    ws = conn._create_websocket_from_scope(asgi_send)  # type: ignore[arg-type]
    assert isinstance(ws, DirectWebsocket)
    await ws.send("hello")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    assert sent[1]["text"] == "hello"
    assert isinstance(ws._send_frame, partial) and ws._send_frame.func == conn.send_data

    # The receive side: Quart's reader puts into conn.queue, which is ours and bounded.
    incoming = [{"type": "websocket.receive", "text": f"m{i}"} for i in range(10)]
    taken: list[int] = []

    async def asgi_receive() -> dict[str, Any]:
        taken.append(1)
        return incoming.pop(0)

    reader = asyncio.get_running_loop().create_task(conn.handle_messages(asgi_receive))  # type: ignore[arg-type]
    try:
        for _ in range(200):
            await asyncio.sleep(0)
        assert conn.queue.maxsize == 3 and conn.queue.full()
        assert not reader.done()
        assert len(taken) == 4  # three queued, the fourth waits for room: the client is slowed down
        assert await ws.receive() == "m0"
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader


def test_hypercorn_config_attributes_we_set_exist() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config = hypercorn_config(Settings(), sock)
    ours = set(vars(config))
    assert ours, "hypercorn_config set nothing"
    # Each must be a field Config declares (``bind`` is a property keeping its value in ``_bind``); ``qg_*`` are
    # our own, read by qwen_gateway/hypercorn_fixes.py.
    unknown = {
        name
        for name in ours
        if not name.startswith("qg_") and not hasattr(Config, name.removeprefix("_"))
    }
    assert not unknown, f"Hypercorn Config has no {sorted(unknown)}: the setting would do nothing"


def test_hypercorn_and_wsproto_internals_that_hypercorn_fixes_relies_on() -> None:
    """``qwen_gateway/hypercorn_fixes.py`` subclasses Hypercorn's WebSocket stream and wsproto's deflate extension
    and wraps TCPServer methods: every private name it uses must still be there."""
    import inspect

    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol import h2 as hypercorn_h2
    from hypercorn.protocol import h11 as hypercorn_h11
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
    from wsproto.connection import Connection, ConnectionType
    from wsproto.extensions import PerMessageDeflate

    for name in ("handle", "app_send", "_accept", "_handle_events", "_send_wsproto_event"):
        assert inspect.iscoroutinefunction(getattr(WSStream, name)), name
    assert hypercorn_h11.WSStream is not None and hypercorn_h2.WSStream is not None
    assert {"HANDSHAKE", "CONNECTED", "CLOSED"} <= set(ASGIWebsocketState.__members__)
    assert issubclass(FrameTooLargeError, Exception)
    for name in ("run", "_read_data", "_close", "protocol_send"):
        assert inspect.iscoroutinefunction(getattr(TCPServer, name)), name
    # the run() fix reads the stream reader's stored error (self.reader.exception())
    assert "reader" in inspect.signature(TCPServer.__init__).parameters
    deflate = PerMessageDeflate()
    for attr in ("_decompressor", "_inbound_compressed", "_inbound_is_compressible"):
        assert hasattr(deflate, attr), attr
    connection = Connection(ConnectionType.SERVER, extensions=[deflate])
    assert isinstance(connection._proto.extensions, list)
