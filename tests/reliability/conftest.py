"""The reliability suite: the whole gateway (Hypercorn, voice routes, storage) in front of the DashScope simulator,
driven by many ``websockets`` clients that leave at random points, loop for a while, or meet failing upstreams.

``QG_TEST_LONG=1`` (``make test-long``) runs the long variants: more clients, a longer soak. The default sizes keep
this suite's share of ``make test`` modest.

Resource probes read ``/proc/self`` (the gateway runs in the test's process): RSS, open descriptors, and the
asyncio tasks alive in the loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.voice_ws.conftest import AUTH, Gateway, packets, png_bytes, wav_bytes

__all__ = [
    "LONG",
    "Drop",
    "Gateway",
    "Outcome",
    "open_fds",
    "packets",
    "png_bytes",
    "rss_kib",
    "settle",
    "slope",
    "tasks_alive",
    "voice_turn",
    "wav_bytes",
]

#: The long variants (``make test-long``).
LONG = os.environ.get("QG_TEST_LONG", "") == "1"


def rss_kib() -> int:
    """This process's resident set size (KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    """Descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


def tasks_alive() -> int:
    """Tasks alive in the running loop, this one left out."""
    me = asyncio.current_task()
    return sum(1 for t in asyncio.all_tasks() if t is not me and not t.done())


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def settle(predicate: Any, timeout: float = 20.0) -> bool:  # noqa: ASYNC109
    """Wait (polling) until ``predicate()`` holds; False when it still does not after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def collect() -> None:
    """A full garbage collection, then what glibc keeps free is given back (so RSS shows what is in use)."""
    gc.collect()
    from qwen_gateway.server import release_free_memory

    release_free_memory()


#: Where a client leaves a turn: before the upload is complete, once it is complete (recognition), once the
#: answer's text has begun, once its audio has begun; ``None``: it stays to the end of the turn (then leaves).
Drop = str | None
DROP_POINTS: tuple[Drop, ...] = ("upload", "recognition", "answer", "audio", None)


@dataclass
class Outcome:
    """What one client saw of its turn before it left."""

    endpoint: str
    conversation: str
    drop: Drop
    events: list[str] = field(default_factory=list)
    completed: bool = False  # the turn's completion event came (``chat_tts_complete`` / ``vlm_chat_tts_complete``)
    db_saved: bool | None = None
    oss_uploaded: bool | None = None
    answer: str = ""


def _abort(ws: ClientConnection) -> None:
    """Leave without a closing handshake: the TCP connection is reset."""
    ws.transport.abort()


async def voice_turn(
    gw: Gateway,
    endpoint: str,
    conversation: str,
    drop: Drop,
    *,
    audio: bytes,
    image: bytes | None = None,
    rng: random.Random | None = None,
    wait: float = 60.0,
) -> Outcome:
    """Connect, run one turn on ``endpoint`` (``audio`` or ``vlm``), leave abruptly at ``drop``.

    A client that stays to the end reads up to the final event, then leaves abruptly too (as a closed browser tab).
    """
    rng = rng or random.Random(0)
    out = Outcome(endpoint, conversation, drop)
    url = gw.ws_url(f"/v1/chat/{endpoint}", conversation_id=conversation)
    ws = await connect(
        url, additional_headers=AUTH, ping_interval=None, max_size=None, compression=None
    )
    try:
        async with asyncio.timeout(wait):
            await ws.recv()  # connected
            if endpoint == "audio":
                frames = packets(audio, 4096)
            else:
                assert image is not None
                frames = [
                    *packets(image, 50 * 1024, type="image"),
                    *packets(audio, 20 * 1024, type="audio"),
                    json.dumps({"type": "end"}),
                ]
            if drop == "upload":
                cut = rng.randrange(1, len(frames))
                for frame in frames[:cut]:
                    await ws.send(frame)
                _abort(ws)
                return out
            for frame in frames:
                await ws.send(frame)
            if drop == "recognition":
                _abort(ws)
                return out
            final = "audio_complete" if endpoint == "audio" else "vlm_complete"
            while True:
                event = json.loads(await ws.recv())
                name, body = next(iter(event.items()))
                if name == "audio_stream":
                    name = f"audio_stream:{body['event']}"
                out.events.append(name)
                if name in ("chat_tts_complete", "vlm_chat_tts_complete"):
                    out.completed = True
                    out.db_saved = body.get("db_saved")
                    out.answer = body.get("assistant_response", "")
                if name == "audio_complete":
                    out.oss_uploaded = body.get("oss_uploaded")
                if drop == "answer" and name in ("chat_chunk", "vlm_chat_chunk"):
                    break
                if drop == "audio" and name == "audio_stream:data":
                    break
                if name == final:
                    break
            _abort(ws)
            return out
    finally:
        _abort(ws)
