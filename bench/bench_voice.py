"""Voice pipeline figures (``/v1/chat/audio``): time to first audio, and many sessions under load.

1. **Time to first audio after the last packet**, one session, turn after turn: from the moment the client has
   sent the last packet of its utterance to the first ``audio_stream`` data event. The simulator is configured
   with fixed latencies (recognition finalises at once, chat time to first token, TTS first-audio delay); the
   gateway's share is the measured time minus (a) those configured latencies, an upper bound that still holds
   the simulator's own work and the loopback hops, and (b) the same upstream calls made back to back by a bare
   client (recognition finish -> final, chat request -> first token, TTS text -> first PCM), which leaves only
   the gateway's pipeline: queues, events, MP3, Quart/Hypercorn.
2. **Time to first audio at a model's pace**: the same, with the chat streaming one token per chunk at 30 tokens/s;
   the floor is the chat TTFT, the generation of the rest of the answer's first sentence (the segment the
   gateway's segmenter cuts first, counted in the simulator's tokens) and the TTS first-audio delay. What is above
   it is the gateway's, including any wait of the segmenter for tokens after the sentence's end.
3. **Load**: ``--sessions`` connected sessions of which ``--active`` are in a turn at any moment, the simulator
   paced at real time (TTS audio at 1x, chat at a fixed token rate). The active sessions' first turns start at
   random points of one turn's span, as real callers' do, and the window opens once they all run;
   ``--lockstep`` (``QG_BENCH_LOCKSTEP=1``) starts them together, and they stay in phase: the worst case.
   Reports the lateness of every ``audio_stream`` event against real-time playback, the gateway's event-loop
   lag, time to first audio under load, and the gateway's RSS per idle connection. "Gateway event lag" is
   measured inside the gateway process (instrumented by this script): from the moment the pipeline queues an
   ``audio_stream`` event to the moment its bytes are handed to the client's socket. The gateway runs the garbage
   collector's policy of ``qwen-gateway serve`` (``qwen_gateway.collector``); the report lists every GC pass and,
   after the run, what a whole-heap sweep still found. ``QG_BENCH_GC_POLICY=0``: without the policy (start-up
   freeze and thresholds only); ``QG_BENCH_GC_THRESHOLDS=a,b,c``: other thresholds; ``QG_BENCH_FULL_PASS=S``: a full
   pass S seconds into the window, timed.

Uploads are sent as a live client records them, a packet per quarter second of audio (so the recogniser
is already streaming when the last packet leaves). Simulator, gateway and this load generator are three
processes on loopback. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import child, free_port, percentile, rss_kib, wait_http  # noqa: E402

KEY = "sk-bench-voice"
TTFA_REPLY = "好的，今天天气很好。适合出门散步。"
LOAD_REPLY = "今天天气很好，阳光明媚。适合出门散步，记得多喝水。"
#: Simulator latencies of the time-to-first-audio run (seconds).
TTFT = 0.050
TTS_FIRST_AUDIO = 0.020
MP3_BYTES_PER_SECOND = 64000 / 8  # the gateway's default 64 kbps CBR


# ------------------------------------------------------------------------------------------ helpers


def wav_bytes(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    frames = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * (200 + seed) * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def packets(data: bytes, size: int = 8192) -> list[str]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return [
        json.dumps({"seq": i + 1, "total": len(pieces), "data": base64.b64encode(p).decode()})
        for i, p in enumerate(pieces)
    ]


def wait_tcp(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt(values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * scale:7.2f} {unit}   p90 {percentile(values, 90) * scale:7.2f} "
        f"{unit}   p99 {percentile(values, 99) * scale:7.2f} {unit}   max {max(values) * scale:7.2f} {unit}"
        f"   (n={len(values)})"
    )


def _run(coro: Any) -> None:
    """Run a child role on uvloop like ``qwen-gateway serve`` (``QG_BENCH_UVLOOP=0``: the stdlib loop)."""
    if os.environ.get("QG_BENCH_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


# ------------------------------------------------------------------------------------------ child roles


async def sim_role(port: int, config: dict[str, Any], reply: str, env_file: Path) -> None:
    from qwen_gateway.simulator import Simulator, SimulatorConfig

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Simulator(SimulatorConfig(api_key=KEY, **config), port=port) as sim:
        sim.set_reply(reply)
        env_file.write_text(json.dumps(sim.env))  # noqa: ASYNC240 (once, a few bytes)
        await stop.wait()


#: How every ``audio_stream`` data event starts on the wire (and ``/v1/realtime``'s audio deltas, for
#: bench_realtime.py, which runs this gateway role).
AUDIO_PREFIX = ('{"audio_stream":{"event":"data"', '{"type":"response.output_audio.delta"')


def instrument_event_lag(
    loop: asyncio.AbstractEventLoop, lags: list[float], opened: list[float]
) -> None:
    """Time every ``audio_stream`` data frame from the moment the pipeline queues it for the client
    (``WsConnection.send``) to the moment its bytes were handed to the socket (the writer's ``send``
    returned): the gateway's own event lag, backpressure and event-loop congestion included. Frames queued
    before the window opened (``opened[0]``, a ``perf_counter`` time) are left out."""
    from qwen_gateway import ws as ws_module

    queued: dict[int, float] = {}

    class TimedSocket:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def receive(self) -> str | bytes:
            return await self._inner.receive()  # type: ignore[no-any-return]

        async def send(self, data: str | bytes) -> None:
            await self._inner.send(data)
            started = queued.pop(id(data), None)
            if started is not None and started >= opened[0]:
                lags.append(time.perf_counter() - started)

        async def close(self, code: int, reason: str = "") -> None:
            await self._inner.close(code, reason)

    connection = ws_module.WsConnection
    original_init, original_send = connection.__init__, connection.send

    def init(self: Any, websocket: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, TimedSocket(websocket), *args, **kwargs)

    async def send(self: Any, frame: str | bytes) -> None:
        if isinstance(frame, str) and frame.startswith(AUDIO_PREFIX):
            queued[id(frame)] = time.perf_counter()
        await original_send(self, frame)

    connection.__init__ = init  # type: ignore[method-assign]
    connection.send = send  # type: ignore[method-assign]


#: A loop-lag sample at least this long is a stall, explained by the loop thread's CPU and run-queue times.
STALL = 0.020


class ThreadClock:
    """The calling thread's CPU time and run-queue wait (``/proc/thread-self/schedstat``: time on a CPU, time
    runnable but waiting for one), in seconds. A loop-lag sample is then split into time the loop thread ran
    (our own code: a long callback, a GC pass), time it waited for a CPU (contention with other processes on a
    shared machine: not the gateway's doing) and the rest, time it was blocked (a blocking call, the GIL)."""

    def __init__(self) -> None:
        self._path = Path("/proc/thread-self/schedstat")

    def read(self) -> tuple[float, float]:
        try:
            on_cpu, waiting, _ = self._path.read_text().split()
        except (OSError, ValueError):
            return time.thread_time(), 0.0
        return int(on_cpu) / 1e9, int(waiting) / 1e9


def watch_gc(pauses: list[tuple[int, float, float, bool, int]]) -> None:
    """Record every garbage collection: generation, wall time, the pass's own CPU time (the rest is the
    collecting thread waiting for a CPU), whether it ran on the loop's thread (a pass started by a worker
    thread stalls the loop as well: it holds the GIL) and the unreachable objects the pass found."""
    import gc
    import threading

    loop_thread = threading.get_ident()
    started = [0.0, 0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
        else:
            pauses.append(
                (
                    info["generation"],
                    time.perf_counter() - started[0],
                    time.thread_time() - started[1],
                    threading.get_ident() == loop_thread,
                    info["collected"],
                )
            )

    gc.callbacks.append(callback)


def print_stalls(info: dict[str, Any]) -> None:
    """The loop-lag figures split into the gateway's own and the machine's (see ``ThreadClock``)."""
    stalls = info.get("stalls", [])
    lags = info["loop_lag"]
    if not lags:
        return
    print(f"  max gateway event-loop lag      {max(lags) * 1000:7.1f} ms")
    own = [min(lag, cpu + max(lag - cpu - waited, 0.0)) for lag, cpu, waited in stalls]
    print(
        f"  stalls >= {STALL * 1000:.0f} ms                  {len(stalls)}; the loop thread's own share "
        f"(lag minus run-queue wait) max {max(own, default=0.0) * 1000:.1f} ms"
    )
    for lag, cpu, waited in sorted(stalls, reverse=True)[:3]:
        print(
            f"    {lag * 1000:7.1f} ms = on CPU {cpu * 1000:6.1f} + waiting for a CPU {waited * 1000:6.1f} "
            f"+ blocked {max(lag - cpu - waited, 0.0) * 1000:6.1f}"
        )
    gc_pauses = info.get("gc", [])
    full = [p[1] for p in gc_pauses if p[0] == 2]
    print(
        f"  GC passes                       {len(gc_pauses)} ({len(full)} full, "
        f"{sum(1 for p in gc_pauses if not p[3])} in worker threads), "
        f"longest {max((p[1] for p in gc_pauses), default=0.0) * 1000:.1f} ms, "
        f"longest full {max(full, default=0.0) * 1000:.1f} ms; "
        f"{info['tracked'][0] if info.get('tracked') else '?'} objects tracked by the GC with the sessions idle, "
        f"{info['tracked'][1] if info.get('tracked') else '?'} frozen; "
        f"{sum(p[4] for p in gc_pauses)} unreachable objects found"
    )
    if info.get("sweep"):
        found, took, frozen_before, frozen_after = info["sweep"]
        print(
            f"  sweep after the run             {int(found)} unreachable objects in {took:.0f} ms "
            f"(frozen {int(frozen_before)} -> {int(frozen_after)}): what cycles the whole run left"
        )
    for generation in (0, 1, 2):
        took = sorted((p[1] * 1000, p[2] * 1000) for p in gc_pauses if p[0] == generation)
        if took:
            print(
                f"    generation {generation}                  {len(took)} passes, "
                f"median {took[len(took) // 2][0]:.1f} ms, longest {took[-1][0]:.1f} ms "
                f"({took[-1][1]:.1f} ms of it on a CPU)"
            )


async def gateway_role(port: int, env_file: Path, data_dir: Path, stats_file: Path) -> None:
    import gc

    from qwen_gateway.app import create_app
    from qwen_gateway.collector import THRESHOLDS, Collector
    from qwen_gateway.config import load_settings
    from qwen_gateway.lifecycle import Lifecycle
    from qwen_gateway.server import release_free_memory, serving
    from qwen_gateway.services import open_services

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    lags: list[float] = []
    event_lags: list[float] = []
    stalls: list[tuple[float, float, float]] = []
    gc_pauses: list[tuple[int, float, float, bool, int]] = []
    tracked: list[int] = []
    sweep: list[float] = []
    opened = [0.0]  # when the window opened: samples that began earlier are left out
    watch_gc(gc_pauses)

    def start_window() -> None:
        # Counting walks every object (tens of ms): before the window opens, so no sample holds it.
        tracked[:] = [len(gc.get_objects()), gc.get_freeze_count()]
        if os.environ.get("QG_BENCH_GC_TYPES"):
            from collections import Counter

            kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
            Path(os.environ["QG_BENCH_GC_TYPES"]).write_text(json.dumps(kinds.most_common(60)))
        opened[0] = time.perf_counter()
        lags.clear()
        event_lags.clear()
        stalls.clear()
        gc_pauses.clear()
        if os.environ.get("QG_BENCH_FULL_PASS"):  # a full pass this many seconds in, timed
            loop.call_later(float(os.environ["QG_BENCH_FULL_PASS"]), gc.collect)

    loop.add_signal_handler(signal.SIGUSR1, start_window)  # start of the measured window

    def collect() -> None:
        from qwen_gateway.server import release_free_memory

        started = time.perf_counter()
        found = gc.collect()
        release_free_memory()
        print(
            f"gc.collect(): {found} unreachable objects, {time.perf_counter() - started:.3f} s",
            flush=True,
        )

    loop.add_signal_handler(signal.SIGUSR2, collect)  # a full collection on demand (bench_memory)
    instrument_event_lag(loop, event_lags, opened)
    env = json.loads(env_file.read_text())  # noqa: ASYNC240 (once, at start)
    settings = load_settings(
        env, dotenv=None, data_dir=data_dir, port=port, qwen_api_key=KEY, api_keys=()
    )

    async def probe() -> None:
        clock = ThreadClock()
        while True:
            started = time.perf_counter()
            before = clock.read()
            await asyncio.sleep(0.01)
            lag = max(time.perf_counter() - started - 0.01, 0.0)
            if started < opened[0]:
                continue
            lags.append(lag)
            if lag >= STALL:
                cpu, waited = (a - b for a, b in zip(clock.read(), before, strict=True))
                stalls.append((lag, cpu, waited))

    async with open_services(settings) as svc:
        lifecycle = Lifecycle.from_settings(svc.settings)
        app = create_app(svc.settings, svc, lifecycle)
        async with serving(app, svc.settings, port=port), asyncio.TaskGroup() as group:
            background = [group.create_task(probe())]
            collector: Collector | None = None
            thresholds = THRESHOLDS
            if os.environ.get("QG_BENCH_GC_THRESHOLDS"):  # e.g. "10000,3,33": try other thresholds
                thresholds = tuple(int(x) for x in os.environ["QG_BENCH_GC_THRESHOLDS"].split(","))  # type: ignore[assignment]
            if os.environ.get("QG_BENCH_GC_POLICY", "1") != "0":  # as `qwen-gateway serve` does
                collector = Collector(
                    quiet=lambda: lifecycle.idle,
                    thresholds=thresholds,
                    observer=svc.metrics,
                    after_sweep=release_free_memory,
                )
                collector.install()
                background.append(group.create_task(collector.sweep_when_quiet()))
            else:  # the collector without the policy: freeze at start, then only thresholds
                gc.collect()
                gc.freeze()
                gc.set_threshold(*thresholds)
            await stop.wait()
            for task in background:
                task.cancel()
            window_passes = list(gc_pauses)  # the sweep below is not the load's
            # What cycles the whole run left, frozen ones included (the sessions are gone by now).
            if collector is not None:
                frozen = gc.get_freeze_count()
                started = time.perf_counter()
                found = collector.sweep()
                sweep[:] = [
                    found,
                    (time.perf_counter() - started) * 1000,
                    frozen,
                    gc.get_freeze_count(),
                ]
    stats = {
        "loop_lag": lags,
        "event_lag": event_lags,
        "stalls": stalls,
        "gc": window_passes,
        "tracked": tracked,
        "sweep": sweep,
    }
    stats_file.write_text(json.dumps(stats))  # noqa: ASYNC240


# ------------------------------------------------------------------------------------------ the stack


#: The variable that points the gateway at the chat service; the others point at the speech services.
CHAT_URL_VAR = "QWEN_API_CHAT_URL"


@contextlib.contextmanager
def simulator(
    tmp: Path, name: str, sim_config: dict[str, Any], reply: str
) -> Iterator[tuple[int, dict[str, str]]]:
    """One simulator process; yields its pid and the variables that point a gateway at it."""
    port = free_port()
    env_file = tmp / f"{name}-env.json"
    me = [sys.executable, str(Path(__file__).resolve())]
    with child(
        [
            *me,
            *("--role", "sim", "--port", str(port), "--config", json.dumps(sim_config)),
            *("--reply", reply, "--env-file", str(env_file)),
        ],
        log=tmp / f"{name}.log",
    ) as proc:
        wait_tcp(port)
        env: dict[str, str] = {}
        for _ in range(300):
            try:
                env = json.loads(
                    env_file.read_text()
                )  # written by the child: may be partial at first
                break
            except (OSError, ValueError):
                time.sleep(0.05)
        yield proc.pid, env


@contextlib.contextmanager
def stack(tmp: Path, name: str, sim_config: dict[str, Any], reply: str) -> Iterator[dict[str, Any]]:
    """Simulator and gateway processes; yields their ports, pids and the gateway's stats file.

    Chat and the speech services (recognition, TTS) are two simulator processes, as DashScope's are separate
    services: one process serving both answered the chat request late by the TTS handshake it was handling at
    the same moment (1-2 ms, which is the simulator's, not the gateway's).
    """
    gw_port = free_port()
    env_file, stats = tmp / f"{name}-sim.json", tmp / f"{name}-stats.json"
    me = [sys.executable, str(Path(__file__).resolve())]
    with (
        simulator(tmp, f"{name}-sim-chat", sim_config, reply) as (chat_pid, chat_env),
        simulator(tmp, f"{name}-sim-speech", sim_config, reply) as (speech_pid, speech_env),
    ):
        env = {**speech_env, CHAT_URL_VAR: chat_env[CHAT_URL_VAR]}
        env_file.write_text(json.dumps(env))
        gw_cmd = me
        if os.environ.get("QG_BENCH_GATEWAY_WRAPPER"):
            gw_cmd = [sys.executable, os.environ["QG_BENCH_GATEWAY_WRAPPER"], me[1]]
        with child(
            [
                *gw_cmd,
                *("--role", "gateway", "--port", str(gw_port), "--env-file", str(env_file)),
                *("--data", str(tmp / f"{name}-data"), "--stats", str(stats)),
            ],
            log=tmp / f"{name}-gateway.log",
        ) as gw:
            wait_http(f"http://127.0.0.1:{gw_port}/health")
            info: dict[str, Any] = {
                "url": f"ws://127.0.0.1:{gw_port}/v1/chat/audio",
                "gateway_pid": gw.pid,
                "sim_pids": [chat_pid, speech_pid],
                "env_file": env_file,
                "stats": stats,
            }
            yield info
    measured = json.loads(stats.read_text()) if stats.exists() else {}
    info["loop_lag"] = measured.get("loop_lag", [])
    info["event_lag"] = measured.get("event_lag", [])
    info["stalls"] = measured.get("stalls", [])
    info["gc"] = measured.get("gc", [])
    info["tracked"] = measured.get("tracked", [])
    info["sweep"] = measured.get("sweep", [])


# ------------------------------------------------------------------------------------------ one turn


#: Audio seconds per packet of the uploads (16 kHz 16-bit mono WAV, 8 KiB packets).
PACKET_SECONDS = 8192 / 32000


async def turn(ws: Any, frames: list[str]) -> dict[str, Any]:
    """Send one utterance as a live recording would (a packet per ``PACKET_SECONDS``); receive until
    ``audio_complete``. Returns timings and audio arrival times."""
    for frame in frames[:-1]:
        await ws.send(frame)
        await asyncio.sleep(PACKET_SECONDS)
    await ws.send(frames[-1])
    last_sent = time.perf_counter()
    audio: list[tuple[float, int]] = []
    errors = 0
    timings: dict[str, Any] = {}
    transcript = answer = ""
    while True:
        raw = await ws.recv()
        now = time.perf_counter()
        event = json.loads(raw)
        name, body = next(iter(event.items()))
        if name == "audio_stream" and body["event"] == "data":
            audio.append((now, len(body["data"]) * 3 // 4))
        elif name == "error":
            errors += 1
        elif name == "chat_started":
            transcript = body.get("user_message") or ""
        elif name == "chat_tts_complete":
            timings = body.get("timings", {})
            answer = body.get("assistant_response", "")
        elif name == "audio_complete":
            break
    return {
        "last_sent": last_sent,
        "audio": audio,
        "errors": errors,
        "timings": timings,
        "transcript": transcript,
        "answer": answer,
    }


def lateness(audio: list[tuple[float, int]]) -> list[float]:
    """How much later than its turn's usual pace each audio event arrived (0 when on or ahead of it).

    Event ``i`` carries the answer's audio after ``played_i`` seconds; its offset ``arrival_i - played_i`` is
    constant while the stream keeps pace with 1x playback. The turn's usual offset is the median (the first
    event is left out: the encoder's delay makes it short); lateness is how far above it an event came.
    """
    if len(audio) < 2:
        return []
    offsets, played = [], 0.0
    for at, size in audio:
        offsets.append(at - played)
        played += size / MP3_BYTES_PER_SECOND
    usual = sorted(offsets[1:])[len(offsets[1:]) // 2]
    return [max(offset - usual, 0.0) for offset in offsets[1:]]


# ------------------------------------------------------------------------------------------ 1. TTFA


class Baseline:
    """The upstream path of a turn done back to back by a bare client (the gateway's own upstream clients),
    with the same conversation as the gateway's chat request carries."""

    def __init__(self, env_file: Path, audio: bytes) -> None:
        from qwen_gateway.config import load_settings
        from qwen_gateway.providers.dashscope import build_providers

        self.settings = load_settings(
            json.loads(env_file.read_text()),
            dotenv=None,
            qwen_api_key=KEY,
            data_dir=Path("/tmp"),
        )
        self.providers = build_providers(self.settings)
        self.audio = audio
        self.parts: list[tuple[float, float, float]] = []

    async def rounds(self, count: int, messages: list[dict[str, str]]) -> None:
        providers = self.providers
        for _ in range(count):
            async with (
                providers.recognizer.session(format="wav", sample_rate=16000) as rec,
                providers.synthesizer.session() as tts,
            ):
                await rec.feed(self.audio)
                started = time.perf_counter()
                await rec.finish()
                async for _result in rec.results():
                    pass
                asr = time.perf_counter() - started
                started = time.perf_counter()
                body = {"model": self.settings.chat_model, "messages": messages}
                stream = providers.chat.stream(body)
                async for delta in stream:
                    if delta.content:
                        break
                await stream.aclose()  # type: ignore[attr-defined]
                chat = time.perf_counter() - started
                started = time.perf_counter()
                await tts.send_text("好的，今天天气很好。")
                await tts.finish()
                async for _chunk in tts.audio():
                    break
                self.parts.append((asr, chat, time.perf_counter() - started))

    async def aclose(self) -> None:
        await self.providers.aclose()


#: Gateway turns per block of the time-to-first-audio run; each block is followed by half as many bare rounds,
#: so that both are measured over the same stretch of time (the machine's state drifts over minutes).
TTFA_BLOCK = 20


async def ttfa_run(info: dict[str, Any], turns: int) -> None:
    from websockets.asyncio.client import connect

    audio = wav_bytes(0.5)
    frames = packets(audio)
    ttfa: list[float] = []
    internal: list[float] = []
    stages: list[tuple[float, float]] = []
    bare = Baseline(info["env_file"], audio)
    #: What the gateway's chat request carries by then: the conversation so far (bounded by its history budget).
    history: list[dict[str, str]] = []
    done = 0
    try:
        while done < turns:  # a connection takes at most QG_MAX_TURNS turns (200 by default)
            url = info["url"]
            async with connect(url, max_size=None, ping_interval=None, compression=None) as ws:
                await ws.recv()
                history.clear()
                for i in range(min(turns - done, 100) + 5):
                    result = await turn(ws, frames)
                    history[len(history) :] = [
                        {"role": "user", "content": result["transcript"]},
                        {"role": "assistant", "content": result["answer"]},
                    ]
                    if i < 5 or not result["audio"]:
                        continue  # warm-up
                    done += 1
                    ttfa.append(result["audio"][0][0] - result["last_sent"])
                    timings = result["timings"]
                    if "first_audio_ms" in timings:
                        internal.append(timings["first_audio_ms"] / 1000)
                        stages.append(
                            (timings["recognition_ms"] / 1000, timings["first_token_ms"] / 1000)
                        )
                    if done % TTFA_BLOCK == 0:
                        context = history[-2 * 10 - 2 : -2]  # the gateway's 10-turn budget
                        await bare.rounds(TTFA_BLOCK // 2, [*context, history[-2]])
    finally:
        await bare.aclose()
    parts = bare.parts
    direct = [sum(p) for p in parts]
    configured = TTFT + TTS_FIRST_AUDIO
    print(f"time to first audio after the last packet ({turns} turns, one session)")
    print(f"  measured at the client          {fmt(ttfa)}")
    print(f"  gateway's own clock             {fmt(internal)}")
    print(
        f"  simulator latencies configured  {configured * 1000:.0f} ms "
        f"(chat TTFT {TTFT * 1000:.0f} ms + TTS first audio {TTS_FIRST_AUDIO * 1000:.0f} ms)"
    )
    print(f"  upstream path, bare client      {fmt(direct)}")
    rec = percentile([s[0] for s in stages], 50) * 1000
    tok = percentile([s[1] for s in stages], 50) * 1000
    aud = percentile(internal, 50) * 1000
    b_asr, b_chat, b_tts = (percentile([p[i] for p in parts], 50) * 1000 for i in range(3))
    print(
        "  p50 by stage, gateway vs bare   "
        f"recognition {rec:.1f} vs {b_asr:.1f} ms, then first token {tok - rec:.1f} vs {b_chat:.1f} ms, "
        f"then first audio {aud - tok:.1f} vs {b_tts:.1f} ms"
    )
    share_configured = [t - configured for t in ttfa]
    base50 = percentile(direct, 50)
    share_direct = [t - base50 for t in ttfa]
    print(f"  gateway share over configured   {fmt(share_configured)}")
    print(f"  gateway share over bare client  {fmt(share_direct)}")


#: Generation speed of the paced run (tokens per second, one token per streamed chunk).
PACED_TPS = 30.0


def first_segment_tokens(reply: str) -> int:
    """How many of the simulator's tokens of ``reply`` it takes to complete the answer's first spoken segment."""
    from qwen_gateway.simulator.corpus import tokenize
    from qwen_gateway.voice.answer import AnswerTuning
    from qwen_gateway.voice.segmenter import SpeechSegmenter

    tuning = AnswerTuning()
    segmenter = SpeechSegmenter(
        tuning.min_chars, tuning.max_chars, first_min_chars=tuning.first_min_chars
    )
    first = (segmenter.feed(reply) + segmenter.flush())[0]
    text = ""
    for count, token in enumerate(tokenize(reply), start=1):
        text += token
        if first in text:
            return count
    raise ValueError("the first segment is not in the reply")


async def paced_run(info: dict[str, Any], turns: int) -> None:
    """Time to first audio while the chat streams at ``PACED_TPS``: what a real model's pace adds on top of
    the first sentence's own generation time (the segmenter's hold-back shows here)."""
    from websockets.asyncio.client import connect

    frames = packets(wav_bytes(0.5))
    ttfa: list[float] = []
    async with connect(info["url"], max_size=None, ping_interval=None, compression=None) as ws:
        await ws.recv()
        for i in range(turns + 3):
            result = await turn(ws, frames)
            if i >= 3 and result["audio"]:
                ttfa.append(result["audio"][0][0] - result["last_sent"])
    tokens = first_segment_tokens(TTFA_REPLY)
    floor = TTFT + (tokens - 1) / PACED_TPS + TTS_FIRST_AUDIO
    print(
        f"time to first audio, chat streaming at {PACED_TPS:g} tokens/s ({turns} turns, one session)"
    )
    print(f"  measured at the client          {fmt(ttfa)}")
    print(
        f"  first sentence complete + TTS   {floor * 1000:.0f} ms (TTFT {TTFT * 1000:.0f} ms + "
        f"{tokens - 1} more tokens of its first sentence + TTS first audio {TTS_FIRST_AUDIO * 1000:.0f} ms)"
    )
    print(f"  above that (upper bound)        {fmt([t - floor for t in ttfa])}")


# ------------------------------------------------------------------------------------------ 2. load


async def load_run(
    info: dict[str, Any], sessions: int, active: int, duration: float, lockstep: bool
) -> None:
    from websockets.asyncio.client import connect

    pid = info["gateway_pid"]
    audio = wav_bytes(0.5)
    frames = packets(audio)
    conns: list[Any] = []

    async def open_one() -> Any:
        ws = await connect(
            info["url"], max_size=None, ping_interval=None, compression=None, open_timeout=60
        )
        await ws.recv()
        return ws

    # Warm up the code paths (and time one turn: the span the workers' first turns are spread over), then measure
    # idle connections.
    warm = await open_one()
    started = time.perf_counter()
    await turn(warm, frames)
    turn_seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)
    rss_before = rss_kib(pid)
    for start in range(0, sessions, 100):
        conns.extend(await asyncio.gather(*(open_one() for _ in range(min(100, sessions - start)))))
    await asyncio.sleep(1.0)
    rss_idle = rss_kib(pid)
    per_conn = (rss_idle - rss_before) / sessions

    pool: asyncio.Queue[Any] = asyncio.Queue()
    for ws in conns:
        pool.put_nowait(ws)
    late: list[float] = []
    ttfa: list[float] = []
    errors = 0
    done = 0
    # Real callers do not start talking in the same millisecond: each worker's first turn starts at a random point
    # of one turn's span, so the turns run at random phases of each other (and stay so: the simulator's timings are
    # the same for every turn), and the measured window opens once they all run. QG_BENCH_LOCKSTEP=1 starts them
    # together instead: they then stay in phase for the whole run, every upstream event of the 100 turns arriving
    # in the same millisecond, the worst case rather than a load (docs/benchmarks.md).
    if lockstep:
        ramp = 0.0
        offsets = [random.random() * 0.01] * active
    else:
        ramp = turn_seconds
        offsets = [random.random() * turn_seconds for _ in range(active)]
    end = time.perf_counter() + ramp + duration
    rss_peak = rss_idle

    async def worker(offset: float) -> None:
        nonlocal errors, done
        await asyncio.sleep(offset)
        while time.perf_counter() < end:
            ws = await pool.get()
            result = await turn(ws, frames)
            pool.put_nowait(ws)
            errors += result["errors"]
            if result["audio"]:
                ttfa.append(result["audio"][0][0] - result["last_sent"])
                late.extend(lateness(result["audio"]))
            done += 1

    async def sampler() -> None:
        nonlocal rss_peak
        while time.perf_counter() < end:
            rss_peak = max(rss_peak, rss_kib(pid))
            await asyncio.sleep(0.5)

    sim_pids = info["sim_pids"]
    start: tuple[float, ...] = ()

    async def window() -> None:
        nonlocal start, errors, done
        await asyncio.sleep(ramp)
        os.kill(pid, signal.SIGUSR1)  # the gateway's measured window starts now
        late.clear()
        ttfa.clear()
        errors = done = 0
        start = (
            cpu_seconds(pid),
            sum(cpu_seconds(p) for p in sim_pids),
            time.process_time(),
            time.perf_counter(),
        )

    await asyncio.gather(window(), sampler(), *(worker(offset) for offset in offsets))
    cpu0, sim0, me0, t0 = start
    elapsed = time.perf_counter() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed
    sim_cpu = (sum(cpu_seconds(p) for p in sim_pids) - sim0) / elapsed
    client_cpu = (time.process_time() - me0) / elapsed
    for ws in [warm, *conns]:
        await ws.close()
    info["load"] = {
        "late": late,
        "ttfa": ttfa,
        "errors": errors,
        "turns": done,
        "rss_before": rss_before,
        "rss_idle": rss_idle,
        "rss_peak": rss_peak,
        "per_conn": per_conn,
        "cpu": cpu,
        "sim_cpu": sim_cpu,
        "client_cpu": client_cpu,
        "turn_seconds": turn_seconds,
        "lockstep": lockstep,
    }


def print_load(info: dict[str, Any], sessions: int, active: int, duration: float) -> None:
    load = info["load"]
    phases = (
        "started together and in phase (QG_BENCH_LOCKSTEP=1)"
        if load["lockstep"]
        else f"started at random points of one turn ({load['turn_seconds']:.1f} s)"
    )
    print(
        f"load: {sessions} sessions connected, {active} in a turn at any moment, {duration:.0f} s, "
        f"simulator at real time; turns {phases}"
    )
    print(f"  turns completed                 {load['turns']} ({load['errors']} error events)")
    print(f"  gateway event lag (audio)       {fmt(info['event_lag'])}")
    print(f"  gateway event-loop lag          {fmt(info['loop_lag'])}")
    print_stalls(info)
    print(f"  audio late vs its pace (client) {fmt(load['late'])}")
    print(f"  time to first audio under load  {fmt(load['ttfa'])}")
    print(
        f"  gateway RSS                     {load['rss_before'] / 1024:.1f} MiB before, "
        f"{load['rss_idle'] / 1024:.1f} MiB with {sessions} idle sessions, "
        f"{load['rss_peak'] / 1024:.1f} MiB peak under load"
    )
    print(f"  RSS per idle connection         {load['per_conn']:.1f} KiB")
    print(
        f"  CPU under load (of one core)    gateway {load['cpu'] * 100:.0f}%, simulators "
        f"{load['sim_cpu'] * 100:.0f}%, this load generator {load['client_cpu'] * 100:.0f}% "
        f"({os.cpu_count()} cores)"
    )


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["bench", "sim", "gateway"], default="bench")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--reply", default="")
    parser.add_argument("--env-file", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--stats", type=Path)
    parser.add_argument(
        "--turns", type=int, default=int(os.environ.get("QG_BENCH_TTFA_TURNS", "200"))
    )
    parser.add_argument(
        "--sessions", type=int, default=int(os.environ.get("QG_BENCH_SESSIONS", "1000"))
    )
    parser.add_argument("--active", type=int, default=int(os.environ.get("QG_BENCH_ACTIVE", "100")))
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("QG_BENCH_SECONDS", "30"))
    )
    parser.add_argument(
        "--lockstep",
        action="store_true",
        default=os.environ.get("QG_BENCH_LOCKSTEP", "0") == "1",
        help="start the load's turns together (they stay in phase): the worst case",
    )
    parser.add_argument(
        "--parts",
        default=os.environ.get("QG_BENCH_VOICE_PARTS", "ttfa,paced,load"),
        help="which runs, comma-separated: ttfa, paced, load",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    if args.role == "sim":
        _run(sim_role(args.port, json.loads(args.config), args.reply, args.env_file))
        return
    if args.role == "gateway":
        _run(gateway_role(args.port, args.env_file, args.data, args.stats))
        return

    keep = os.environ.get("QG_BENCH_DIR")  # keep the processes' logs there (for a failed run)
    with (
        contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="bench-voice-")
    ) as tmp_dir:
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        ttfa_config = {
            "ttft": TTFT,
            "tts_first_audio_delay": TTS_FIRST_AUDIO,
            "tokens_per_second": 0.0,
            "tts_realtime_factor": 0.0,
        }
        if "ttfa" in parts:
            with stack(tmp, "ttfa", ttfa_config, TTFA_REPLY) as info:
                asyncio.run(ttfa_run(info, args.turns))
            print()
        if "paced" in parts:
            paced_config = {**ttfa_config, "tokens_per_second": PACED_TPS, "chat_chunk_tokens": 1}
            with stack(tmp, "paced", paced_config, TTFA_REPLY) as info:
                asyncio.run(paced_run(info, max(args.turns // 2, 10)))
            print()
        if "load" not in parts:
            return
        load_config = {
            "ttft": 0.3,
            "tokens_per_second": 30.0,
            "chat_chunk_tokens": 2,
            "tts_realtime_factor": 1.0,
        }
        with stack(tmp, "load", load_config, LOAD_REPLY) as info:
            asyncio.run(load_run(info, args.sessions, args.active, args.duration, args.lockstep))
        print_load(info, args.sessions, args.active, args.duration)


if __name__ == "__main__":
    main()
