"""The app's WebSocket wrapper (``app.DirectWebsocket``): frames reach the server without an extra yield."""

from __future__ import annotations

import asyncio
from typing import Any

from werkzeug.datastructures import Headers

from qwen_gateway.app import DirectWebsocket


def _websocket(sent: list[Any], accepted: list[Any]) -> DirectWebsocket:
    async def send(data: str | bytes) -> None:
        sent.append(data)

    async def accept(headers: Headers, subprotocol: str | None) -> None:
        accepted.append((headers, subprotocol))

    async def receive() -> str:
        return ""

    async def close(code: int, reason: str) -> None:
        pass

    scope: Any = {"type": "websocket", "path": "/ws", "query_string": b"", "headers": []}
    return DirectWebsocket(
        "/ws", b"", "ws", Headers(), "", "1.1", [], receive, send, accept, close, scope=scope
    )


async def test_send_hands_the_frame_over_before_any_other_task_runs() -> None:
    sent: list[Any] = []
    accepted: list[Any] = []
    ws = _websocket(sent, accepted)
    await ws.accept()
    others: list[str] = []

    async def other() -> None:
        others.append(f"ran after {len(sent)} frames")

    task = asyncio.get_running_loop().create_task(other())
    await ws.send("one")
    await ws.send(b"two")
    assert sent == ["one", b"two"]
    assert others == []  # Quart's own send yields first: the other task would have run before "one"
    await task
    assert others == ["ran after 2 frames"]
    assert len(accepted) == 1


async def test_send_accepts_first_when_the_handler_did_not() -> None:
    sent: list[Any] = []
    accepted: list[Any] = []
    ws = _websocket(sent, accepted)
    await ws.send("hello")
    await ws.send("again")
    assert sent == ["hello", "again"]
    assert len(accepted) == 1
