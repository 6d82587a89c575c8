"""A finished turn (audio, VLM, realtime cascade or Omni) and a closed connection are freed by reference counting,
not left to the garbage collector.

Under load a collector pass stops the event loop for as long as it takes to walk the objects it looks at and free
the reference cycles it finds; a turn whose objects form a cycle (a closure that keeps the turn, an exception that
keeps its frames) hands its whole graph, LAME's state and audio buffers included, to those passes. That made the
young passes of the 1000/100 load 10-50 ms each, the longest event-loop stalls left (docs/benchmarks.md). These
tests run turns with the collector saving what it finds (``gc.DEBUG_SAVEALL``) and require that none of it is the
gateway's: the simulator and the client library share the process and are left out.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import types
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .conftest import Gateway, client, gateway, packets, png_bytes, voice_tasks, wav_bytes

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天，气温二十五度。适合出门散步！记得带上水。"

#: Code and types of these packages count as the gateway's (the simulator is a test double in this process).
OWN = ("qwen_gateway", "quart", "hypercorn", "wsproto", "h11")
NOT_OWN = ("qwen_gateway.simulator",)


def _owner(obj: Any) -> str | None:
    """The module an object found by the collector belongs to, when it is code or state of the gateway."""
    kind = type(obj)  # not isinstance: a dead weak proxy raises on any attribute
    if kind is types.FrameType:
        module = obj.f_globals.get("__name__", "")
    elif kind is types.CoroutineType:
        module = obj.cr_frame.f_globals.get("__name__", "") if obj.cr_frame else ""
    elif kind is types.FunctionType:
        module = obj.__module__ or ""
    else:
        module = type(obj).__module__
    if module.startswith(OWN) and not module.startswith(NOT_OWN):
        return module
    if module.startswith("websockets.") and _upstream_socket(obj):
        return module
    return None


def _upstream_socket(obj: Any) -> bool:
    """A ``websockets`` protocol or connection of the gateway's own upstream sockets (they log through the
    gateway's wire logger; the test clients' and the simulator's do not)."""
    logger = getattr(obj, "logger", None)
    inner = getattr(logger, "logger", logger)  # the wire logger is an adapter
    return str(getattr(inner, "name", "")).startswith("qwen_gateway")


def _describe(obj: Any) -> str:
    kind = type(obj)
    if kind is types.FrameType:
        return f"frame {obj.f_code.co_qualname}"
    if kind is types.CoroutineType:
        return f"coroutine {obj.cr_code.co_qualname}"
    if kind is types.FunctionType:
        return f"function {obj.__qualname__}"
    return f"{kind.__module__}.{kind.__qualname__}"


@contextmanager
def saved_garbage() -> Iterator[list[Any]]:
    """Everything the collector finds unreachable inside the block (collected at its end), kept for inspection."""
    flags = gc.get_debug()
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    found: list[Any] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


def _served_app(obj: Any) -> str:
    """The module of the ASGI app a Hypercorn connection or stream object serves ("" for other objects)."""
    if not type(obj).__module__.startswith(("hypercorn", "qwen_gateway.hypercorn_fixes")):
        return ""
    app = getattr(obj, "app", None)
    return type(getattr(app, "app", app)).__module__ if app is not None else ""


def _simulator_side(found: list[Any]) -> set[int]:
    """The ids of the objects among ``found`` that the simulator's own server connections reach (the simulator
    runs on Hypercorn too, whose connections end in reference cycles: its upstream sockets, not the gateway's)."""
    among = {id(o) for o in found}
    roots = [o for o in found if _served_app(o).startswith(NOT_OWN)]
    seen = {id(o) for o in roots}
    stack = list(roots)
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if id(ref) in among and id(ref) not in seen:
                seen.add(id(ref))
                stack.append(ref)
    return seen


def own_garbage(found: list[Any]) -> collections.Counter[str]:
    simulator = _simulator_side(found)
    return collections.Counter(
        _describe(o) for o in found if id(o) not in simulator and _owner(o) is not None
    )


def one_cycle(found: list[Any], kind: str) -> list[str]:
    """A reference cycle through the first object of type ``kind`` among ``found`` (for the failure message)."""
    start = next((o for o in found if type(o).__qualname__ == kind), None)
    if start is None:
        return []
    among = {id(o) for o in found}
    paths: dict[int, list[Any]] = {id(start): [start]}
    queue = collections.deque([start])
    while queue:
        obj = queue.popleft()
        for ref in gc.get_referents(obj):
            if ref is start:
                return [_describe(o) for o in [*paths[id(obj)], start]]
            if id(ref) in among and id(ref) not in paths:
                paths[id(ref)] = [*paths[id(obj)], ref]
                queue.append(ref)
    return []


async def assert_no_cycles(
    gw: Gateway, step: Callable[[int], Awaitable[None]], *, what: str, kind: str
) -> None:
    """Run ``step(0)`` (it warms caches up), then ``step(1..3)`` with the collector saving what it finds; fail with
    what the gateway left, and one cycle through an object of type ``kind``, if anything."""
    await step(0)
    with saved_garbage() as found:
        for n in range(1, 4):
            await step(n)
        await gw.services.storage.outbox.drained()
        await asyncio.sleep(0.2)  # the server's side of a close
    left = own_garbage(found)
    assert not left, (
        f"a finished {what} left reference cycles: {sorted(left.items())}; "
        f"one of them: {' -> '.join(one_cycle(found, kind))}"
    )


def _spoken(gw: Gateway) -> bytes:
    audio = wav_bytes(1.0)
    gw.sim.register_transcript(audio, QUESTION)
    gw.sim.set_reply(ANSWER)
    return audio


@pytest.mark.parametrize("upstream_drops", [False, True], ids=["completed", "upstream-dropped"])
async def test_audio_turns_leave_no_cycles(tmp_path: Path, upstream_drops: bool) -> None:
    """``upstream-dropped``: an error path, the recognition or the TTS upstream drops its socket (no close frame)
    mid-turn, turn by turn."""
    from qwen_gateway.simulator import Fault

    async with gateway(tmp_path) as gw:
        upload = packets(_spoken(gw))
        async with client(gw) as c:
            await c.recv()

            async def turn(n: int) -> None:
                if upstream_drops:
                    gw.sim.faults.clear()
                    endpoint = ("asr", "tts")[n % 2]
                    gw.sim.faults.add(Fault.drop(after_chunks=1, endpoint=endpoint, times=1))
                await c.send_all(upload)
                await c.until("audio_complete")

            await assert_no_cycles(gw, turn, what="turn", kind="AudioTurn")


async def test_vlm_turns_leave_no_cycles(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = _spoken(gw)
        end = json.dumps({"type": "end"})
        upload = [*packets(png_bytes(), type="image"), *packets(audio, type="audio"), end]
        async with client(gw, "vlm") as c:
            await c.recv()

            async def turn(_: int) -> None:
                await c.send_all(upload)
                await c.until("vlm_complete")

            await assert_no_cycles(gw, turn, what="turn", kind="VlmTurn")


async def test_realtime_responses_leave_no_cycles(tmp_path: Path) -> None:
    from tests.realtime.harness import realtime, silence, speech

    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await s.until("session.updated")

        async def turn(_: int) -> None:
            await s.send_audio(speech() + silence(0.3))
            await s.conn.input_audio_buffer.commit()
            await s.conn.response.create()
            await s.until("response.done")

        await assert_no_cycles(gw, turn, what="response", kind="ResponseRun")


async def test_closed_connections_leave_no_cycles(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        upload = packets(_spoken(gw))

        async def session(n: int) -> None:
            async with client(gw) as c:
                await c.recv()
                if n % 2 == 0:  # connections with a turn and without
                    await c.send_all(upload)
                    await c.until("audio_complete")

        await assert_no_cycles(gw, session, what="connection", kind="TCPServer")


async def test_connections_dropped_mid_turn_leave_no_cycles(tmp_path: Path) -> None:
    """The error paths: a client that vanishes (TCP reset, no close frame) during the upload, the recognition,
    the answer's text or its audio, on both voice endpoints. What a dropped turn leaves must be freed as an
    ordinary one is: the collector freezes long-lived objects (``qwen_gateway.collector``), and a cycle through
    a frozen session would stay until the next quiet sweep."""
    from tests.reliability.conftest import DROP_POINTS, settle, voice_turn

    async with gateway(tmp_path) as gw:
        audio = _spoken(gw)
        image = png_bytes()

        async def dropped(n: int) -> None:
            for endpoint in ("audio", "vlm"):
                for drop in (d for d in DROP_POINTS if d is not None):
                    await voice_turn(
                        gw, endpoint, f"drop-{n}-{endpoint}-{drop}", drop, audio=audio, image=image
                    )
            assert await settle(lambda: not voice_tasks() and not gw.sim.log.open_connections())

        await assert_no_cycles(gw, dropped, what="dropped connection", kind="WsConnection")


async def test_omni_responses_leave_no_cycles(tmp_path: Path) -> None:
    from tests.realtime.harness import realtime, silence, speech

    async with gateway(tmp_path) as gw, realtime(gw, "qwen3-omni-flash-realtime") as s:
        gw.sim.set_reply(ANSWER)

        async def turn(_: int) -> None:
            await s.send_audio(silence(0.5) + speech() + silence(1.2))
            await s.until("response.done")

        await assert_no_cycles(gw, turn, what="Omni response", kind="OmniTurn")
