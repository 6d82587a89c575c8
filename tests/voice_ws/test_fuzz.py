"""Fuzzing both voice WebSockets through one running gateway (the simulator behind it).

Batches of generated frames (``fuzz.py``: messages built from the protocol types, then broken in every way)
go to ``/v1/chat/audio`` and ``/v1/chat/vlm`` over one connection, reconnecting only when the protocol closes
it. After each batch a probe frame (``{"type": "probe-N"}``, refused with an ``error`` naming it) shows that the
connection still answers and that every reply to the batch has arrived. Required:

* every event the server sends validates against the published schema; every ``error`` carries a code;
* each certainly-bad frame is answered by an ``error`` event or a close, and a close uses a documented code
  (never 1011 ``internal_error`` nor a dropped connection);
* no log record at ERROR and none with a traceback, anywhere in the process.

1,000 frames per endpoint in ``make test``; ``QG_TEST_LONG=1`` sends 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from qwen_gateway.simulator import SimulatorConfig
from tests.long import scaled

from .conftest import AUTH, UPSTREAM_KEY, VALIDATORS, Gateway, gateway, png_bytes, wav_bytes
from .fuzz import Frame, audio_batches, vlm_batches

FRAMES = scaled(1_000, 10_000)

#: Close codes the gateway may end a voice connection with (README, "WebSocket limits and close codes").
DOCUMENTED_CLOSES = {1000, 1002, 1007, 1008, 1009, 4000, 4008}


class _Recorder(logging.Handler):
    """Keeps every record at ERROR or above, and every record carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(record)


@dataclass
class Live:
    gw: Gateway
    wav: bytes
    image: bytes
    log: _Recorder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One gateway for the whole module, served by its own event loop in a thread."""
    tmp = tmp_path_factory.mktemp("fuzz")
    wav, image = wav_bytes(0.3), png_bytes()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=0.0)
        async with gateway(Path(tmp), config) as gw:
            gw.sim.register_transcript(wav, "你好")
            gw.sim.set_reply("好的。")
            state.update(gw=gw, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="fuzz-gateway", daemon=True)
    recorder = _Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    thread.start()
    try:
        assert ready.wait(60), "the gateway did not start"
        yield Live(state["gw"], wav, image, recorder)
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)
        root.removeHandler(recorder)


@dataclass
class Session:
    """One endpoint's connection, reopened whenever the server closes it."""

    live: Live
    endpoint: str
    ws: ClientConnection | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    probes: int = 0
    frames: int = 0
    closes: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)

    def open(self) -> ClientConnection:
        if self.ws is None:
            url = self.live.gw.ws_url(f"/v1/chat/{self.endpoint}")
            self.stack = contextlib.ExitStack()
            self.ws = self.stack.enter_context(
                # max_queue=None: the client's reader never stops, so pauses between batches (hypothesis
                # generating) never make the server evict us as a client that reads nothing (4008).
                connect(
                    url, additional_headers=AUTH, max_size=None, max_queue=None, close_timeout=10
                )
            )
            assert "connected" in self._event(self.ws.recv(timeout=10))
        return self.ws

    def _event(self, frame: str | bytes) -> dict[str, Any]:
        assert isinstance(frame, str), "events are text frames"
        event = json.loads(frame)
        VALIDATORS[self.endpoint].validate(event)
        ((name, _),) = event.items()
        self.events[name] = self.events.get(name, 0) + 1
        if "error" in event:
            code = event["error"].get("code")
            assert code, f"an error event without a code: {event}"
            self.errors[code] = self.errors.get(code, 0) + 1
        return dict(event)

    def _closed(self, ws: ClientConnection, batch: list[Frame]) -> None:
        code = ws.close_code
        assert code in DOCUMENTED_CLOSES, f"closed with {code} ({ws.close_reason!r}): {batch}"
        self.closes[code] = self.closes.get(code, 0) + 1
        self.close()

    def run(self, batch: list[Frame]) -> None:
        ws = self.open()
        bad = 0
        answered = 0
        try:
            for frame in batch:
                self.frames += 1
                bad += frame.bad
                if frame.kind == "raw_text":
                    ws.send(frame.data, text=True)  # bytes as a text frame, unchecked
                else:
                    ws.send(frame.data)
            self.probes += 1
            probe = f"probe-{self.probes}"
            ws.send(f'{{"type": "{probe}"}}')
            while True:
                event = self._event(ws.recv(timeout=30))
                error = event.get("error")
                if error is not None and probe in error["message"]:
                    assert error["code"] == "unexpected_message", error
                    break
                answered += error is not None
        except ConnectionClosed:
            self._closed(ws, batch)
            return
        assert answered >= bad, f"{bad} bad frames, {answered} error events: {batch}"

    def close(self) -> None:
        self.ws = None
        self.stack.close()


def _fuzz(live: Live, endpoint: str, batches: Any) -> Session:
    session = Session(live, endpoint)
    average = 3  # frames per batch, about
    settings_ = settings(
        max_examples=max(1, FRAMES // average),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )

    @settings_
    @given(batch=batches)
    def one_batch(batch: list[Frame]) -> None:
        session.run(batch)

    try:
        one_batch()
    finally:
        session.close()
    return session


def _report(session: Session, live: Live) -> None:
    print(
        f"{session.endpoint}: {session.frames} frames, closes {session.closes}, "
        f"errors {session.errors}, events {session.events}"
    )
    bad = [f"{r.name} {r.levelname} {r.getMessage()}" for r in live.log.bad]
    assert not bad, bad


@pytest.mark.timeout(scaled(120, 1800))
def test_fuzz_audio(live: Live) -> None:
    session = _fuzz(live, "audio", audio_batches(live.wav))
    _report(session, live)
    assert session.frames >= FRAMES
    # The mutations reached the typed paths (not only closes).
    assert {"invalid_json", "invalid_message", "binary_frame"} <= session.errors.keys()


@pytest.mark.timeout(scaled(120, 1800))
def test_fuzz_vlm(live: Live) -> None:
    session = _fuzz(live, "vlm", vlm_batches(live.wav, live.image))
    _report(session, live)
    assert session.frames >= FRAMES
    assert {"invalid_json", "invalid_message", "binary_frame"} <= session.errors.keys()
