"""``WsConnection.after_sent``: the callback runs once the frames queued before it were handed to the socket."""

from __future__ import annotations

import asyncio

from qwen_gateway.ws import EndReason, WsConnection, WsLimits


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[str | bytes] = []

    async def receive(self) -> str | bytes:
        await asyncio.Event().wait()  # the client says nothing
        raise AssertionError

    async def send(self, data: str | bytes) -> None:
        await asyncio.sleep(0)
        self.sent.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        pass


async def test_after_sent_runs_after_the_frames_queued_before_it() -> None:
    sock = FakeSocket()
    conn = WsConnection(sock, WsLimits(send_timeout=5, idle_timeout=5), error_frame=lambda c, m: m)
    seen: list[list[str | bytes]] = []

    async def on_open() -> None:
        await conn.send("a")
        await conn.send("b")
        await conn.after_sent(lambda: seen.append(list(sock.sent)))
        await conn.send("c")
        conn.close()

    async def on_frame(frame: str | bytes) -> None:
        raise AssertionError

    info = await conn.run(on_frame, on_open=on_open)
    assert info.reason is EndReason.CLOSED
    assert seen == [["a", "b"]]
    assert sock.sent == ["a", "b", "c"]
    assert info.frames_sent == 3  # the callback is not a frame
