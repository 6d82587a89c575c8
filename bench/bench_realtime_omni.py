"""The Qwen-Omni backend of /v1/realtime (``OmniBridge``) against a simulator process: its own share of each turn.

Prints figures; asserts nothing. Run: ``.venv/bin/python bench/bench_realtime_omni.py [turns]``.

One bridge session, ``turns`` server-VAD turns in a row: 24 kHz client audio (speech, then silence) goes in, the
simulator's Omni socket (its own process; audio at real time after :data:`FIRST_AUDIO_DELAY`) answers, and the bridge converts its 24 kHz PCM to
the client's format. Per turn, from the bridge's :class:`~qwen_gateway.realtime.omni.OmniTimings`:

* end of speech -> first audio: from the upstream's ``speech_stopped`` reaching the bridge to the first
  ``response.output_audio.delta`` handed to ``send`` (the simulator's answer time included);
* the bridge's share: that first audio delta, from its arrival on the upstream socket to ``send`` (decode,
  resample / G.711, base64, GA event), queueing on the bridge's event loop included.

The endpoint's own hop to the client socket is not in these figures (``make bench`` measures the whole endpoint).
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import child, free_port, percentile

from qwen_gateway.config import load_settings
from qwen_gateway.providers.dashscope.policy import Backoff
from qwen_gateway.realtime.omni import OmniBridge, OmniTurn
from qwen_gateway.simulator.audio import synthesize

KEY = "sk-bench"
MODEL = "qwen3-omni-flash-realtime"
SPEECH = synthesize("今天天气怎么样？", 24000)
SILENCE = bytes(24000 * 2 * 7 // 10)  # 700 ms: past the 500 ms silence rule
CHUNK = 24000 * 2 * 20 // 1000  # 20 ms
REPLY = "好的。"
#: The simulator's delay before a response's first audio (seconds).
FIRST_AUDIO_DELAY = 0.2


def wait_tcp(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def run_turns(port: int, turns: int, output: str) -> list[OmniTurn]:
    ws = f"ws://127.0.0.1:{port}"
    settings = load_settings(
        {"REAL_TIME_AUDIO_URL": f"{ws}/api-ws/v1/realtime?model=qwen-tts-realtime"},
        dotenv=None,
        qwen_api_key=KEY,
    )
    inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    done: list[OmniTurn] = []
    answered = asyncio.Event()

    async def send(event: dict[str, Any]) -> None:
        return None

    async def on_turn(turn: OmniTurn) -> None:
        done.append(turn)
        answered.set()

    async def events() -> Any:
        while (event := await inbox.get()) is not None:
            yield event

    bridge = OmniBridge(
        settings=settings,
        model=MODEL,
        api_key=None,
        send=send,
        on_usage=lambda usage: None,
        on_turn=on_turn,
        backoff=Backoff(retries=0),
    )
    task = asyncio.create_task(bridge.run(events()))
    fmt = {"type": output} if output != "audio/pcm" else {"type": output, "rate": 24000}
    inbox.put_nowait(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}},
                    "output": {"format": fmt},
                },
            },
        }
    )
    audio = SPEECH + SILENCE
    for _ in range(turns):
        answered.clear()
        for i in range(0, len(audio), CHUNK):
            piece = base64.b64encode(audio[i : i + CHUNK]).decode()
            inbox.put_nowait({"type": "input_audio_buffer.append", "audio": piece})
        async with asyncio.timeout(30):
            await answered.wait()
    inbox.put_nowait(None)
    await task
    return done


def fmt_ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50):7.2f} ms   p99 {percentile(values, 99):7.2f} ms   "
        f"max {max(values):7.2f} ms   (n={len(values)})"
    )


async def sim_role(port: int) -> None:
    """The simulator process: short answers at real time, a configured first-audio delay."""
    import signal

    from qwen_gateway.simulator import Simulator, SimulatorConfig

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    config = SimulatorConfig(
        api_key=KEY, tts_realtime_factor=1.0, tts_first_audio_delay=FIRST_AUDIO_DELAY
    )
    async with Simulator(config, port=port) as sim:
        sim.set_reply(REPLY, times=None)
        await stop.wait()


def main() -> None:
    if sys.argv[1:2] == ["--sim"]:
        asyncio.run(sim_role(int(sys.argv[2])))
        return
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    port = free_port()
    with child([sys.executable, str(Path(__file__).resolve()), "--sim", str(port)]):
        wait_tcp(port)
        print(
            f"Qwen-Omni bridge, {turns} server-VAD turns; simulator in its own process, at real time, "
            f"first audio {FIRST_AUDIO_DELAY * 1000:.0f} ms after the response starts"
        )
        for output in ("audio/pcm", "audio/pcmu"):
            done = asyncio.run(run_turns(port, turns, output))
            first = [t.timings.first_audio_ms for t in done if t.timings.first_audio_ms is not None]
            share = [
                t.timings.gateway_first_audio_ms
                for t in done
                if t.timings.gateway_first_audio_ms is not None
            ]
            print(f"  output {output}")
            print(f"    end of speech -> first audio   {fmt_ms(first)}")
            print(f"    the bridge's share of it       {fmt_ms(share)}")


if __name__ == "__main__":
    main()
