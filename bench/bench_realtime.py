"""``/v1/realtime`` figures: time to first audio after the end of speech, the gateway's share of it, and
sessions per core.

1. **Time to first audio after the end of speech** (server VAD), one session, turn after turn, for the cascade
   (``model=qwen-plus``: recognition -> chat -> TTS) and for the Omni pass-through
   (``model=qwen3-omni-flash-realtime``). The client streams speech-shaped PCM (24 kHz, 20 ms chunks) at real
   time, then silence at real time until the answer is done. Measured at the client from the moment the last
   speech chunk left to the first ``response.output_audio.delta``. Split into the VAD's decision (end of speech ->
   ``input_audio_buffer.speech_stopped``: ``silence_duration_ms`` plus the detector's own delay) and what follows
   (``speech_stopped`` -> first audio). The **gateway's share** is what follows minus the simulator's configured
   latencies (chat time to first token, TTS first audio): it still holds the loopback hops and the simulator's
   own work, so it is an upper bound; the same upstream steps made back to back by a bare client (recognition
   finish -> final, chat -> first token, TTS text -> first PCM) give a tighter one. The gateway also measures its
   share itself
   (``qg_voice_turn_gateway_seconds{endpoint="realtime"}``: transcript -> chat request, first sentence -> TTS,
   first PCM -> first audio frame written, where no upstream is waited for), read from its ``/metrics``.
2. **Sessions per core**: ``N`` sessions talking at once (speech, silence, answer, a pause, again), each
   streaming 100 ms chunks in real time, the simulator paced at real time. Reports the gateway's CPU use, its
   event lag (an audio delta queued by the pipeline -> handed to the socket, measured inside the gateway) and
   event-loop lag, and sessions per core = N / (gateway CPU seconds per second) for each N whose p99 event lag
   stays within 50 ms.

Simulator, gateway and this load generator are separate processes on loopback (the roles of bench_voice.py).
Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import percentile  # noqa: E402
from bench_voice import Baseline, cpu_seconds, fmt, print_stalls, stack, wav_bytes  # noqa: E402

from qwen_gateway.simulator.audio import synthesize  # noqa: E402

RATE = 24000
CHUNK_MS = 20
LOAD_CHUNK_MS = 100
SILENCE_MS = 500
REPLY = "好的，今天天气很好。适合出门散步。"
QUESTION = "今天天气怎么样"
#: Simulator latencies of the time-to-first-audio runs (seconds).
TTFT = 0.050
TTS_FIRST_AUDIO = 0.020
OMNI_MODEL = "qwen3-omni-flash-realtime"


def speech_pcm(text: str) -> bytes:
    return synthesize(text, RATE)


def session_update(silence_ms: int) -> str:
    fmt_pcm = {"type": "audio/pcm", "rate": RATE}
    return json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": fmt_pcm,
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": silence_ms,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    },
                    "output": {"format": fmt_pcm},
                },
            },
        }
    )


def append(chunk: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
    )


class Session:
    """One realtime connection: a reader task records every server event's arrival time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[tuple[float, str]] = []
        self.arrived = asyncio.Condition()
        self.errors: list[dict[str, Any]] = []

    async def read(self) -> None:
        async for raw in self.ws:
            now = time.perf_counter()
            # the type is the first field of every event
            start = raw.index('"type":"') + 8
            kind = raw[start : raw.index('"', start)]
            if kind == "error":
                self.errors.append(json.loads(raw))
            async with self.arrived:
                self.events.append((now, kind))
                self.arrived.notify_all()

    def first(self, kind: str, since: int) -> float | None:
        return next((t for t, k in self.events[since:] if k == kind), None)

    async def wait_for(self, kind: str, since: int) -> float:
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.first(kind, since) is not None)
        found = self.first(kind, since)
        assert found is not None
        return found


async def talk(
    session: Session, speech: bytes, chunk_ms: int, *, pause_ms: int = 0
) -> dict[str, float]:
    """Stream ``speech`` then silence at real time until ``response.done``; return the client-side times."""
    ws = session.ws
    step = RATE * 2 * chunk_ms // 1000
    since = len(session.events)
    due = time.perf_counter()
    for i in range(0, len(speech), step):
        await ws.send(append(speech[i : i + step]))
        due += chunk_ms / 1000
        await asyncio.sleep(max(due - time.perf_counter(), 0.0))
    speech_end = time.perf_counter()
    silence = bytes(step)
    done = asyncio.ensure_future(session.wait_for("response.done", since))
    try:
        while not done.done():
            await ws.send(append(silence))
            due += chunk_ms / 1000
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))
        # the pause between turns is silence too (an open microphone)
        end = time.perf_counter() + pause_ms / 1000
        while time.perf_counter() < end:
            await ws.send(append(silence))
            due += chunk_ms / 1000
            await asyncio.sleep(max(due - time.perf_counter(), 0.0))
    finally:
        done.cancel()
    stopped = session.first("input_audio_buffer.speech_stopped", since)
    audio = session.first("response.output_audio.delta", since)
    return {
        "speech_end": speech_end,
        "stopped": stopped if stopped is not None else float("nan"),
        "audio": audio if audio is not None else float("nan"),
    }


async def open_session(url: str, silence_ms: int) -> tuple[Session, Any, asyncio.Task[None]]:
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=None, ping_interval=None, compression=None)
    session = Session(ws)
    reader = asyncio.ensure_future(session.read())
    await session.wait_for("session.created", 0)
    mark = len(session.events)
    await ws.send(session_update(silence_ms))
    await session.wait_for("session.updated", mark)
    return session, ws, reader


# ------------------------------------------------------------------------------------------ 1. TTFA


async def ttfa_run(
    url: str,
    turns: int,
    label: str,
    configured: float | None,
    base: str | None = None,
    env_file: Path | None = None,
) -> None:
    speech = speech_pcm(QUESTION)
    session, ws, reader = await open_session(url, SILENCE_MS)
    after_speech: list[float] = []
    vad: list[float] = []
    after_vad: list[float] = []
    try:
        for i in range(turns + 3):
            times = await talk(session, speech, CHUNK_MS, pause_ms=200)
            if i < 3:
                continue  # warm-up
            after_speech.append(times["audio"] - times["speech_end"])
            vad.append(times["stopped"] - times["speech_end"])
            after_vad.append(times["audio"] - times["stopped"])
    finally:
        await ws.close()
        reader.cancel()
    print(f"time to first audio after the end of speech, {label} ({turns} turns, one session)")
    print(f"  end of speech -> first audio    {fmt(after_speech)}")
    print(
        f"  VAD decision (speech_stopped)   {fmt(vad)}   (silence_duration_ms {SILENCE_MS} + detector)"
    )
    print(f"  speech_stopped -> first audio   {fmt(after_vad)}")
    if configured is not None:
        share = [t - configured for t in after_vad]
        print(
            f"  simulator latencies configured  {configured * 1000:.0f} ms "
            f"(chat TTFT {TTFT * 1000:.0f} ms + TTS first audio {TTS_FIRST_AUDIO * 1000:.0f} ms)"
        )
        print(f"  gateway share over configured   {fmt(share)}")
    if env_file is not None:
        # The same upstream steps (recognition finish -> final, chat -> first token, TTS text -> first PCM) made
        # back to back by a bare client: what is above them is the gateway's pipeline and its hops.
        bare = Baseline(env_file, wav_bytes(0.5))
        try:
            await bare.rounds(max(turns // 2, 10), [{"role": "user", "content": QUESTION}])
        finally:
            await bare.aclose()
        direct = percentile([sum(p) for p in bare.parts], 50)
        print(f"  upstream path, bare client      {fmt([sum(p) for p in bare.parts])}")
        print(f"  gateway share over bare client  {fmt([t - direct for t in after_vad])}")
    if base is not None:
        print(f"  gateway share, its own clock    {share_from_metrics(base)}")
        print(f"  stages from the commit (means)  {stage_means(base)}")
    if session.errors:
        print(f"  error events                    {len(session.errors)}: {session.errors[0]}")


# ------------------------------------------------------------------------------------------ 2. load


async def load_run(url: str, sessions: int, seconds: float) -> dict[str, Any]:
    speech = speech_pcm(QUESTION)
    opened = await asyncio.gather(*(open_session(url, SILENCE_MS) for _ in range(sessions)))
    stop_at = time.perf_counter() + seconds
    turns: list[dict[str, float]] = []

    async def loop(session: Session, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.perf_counter() < stop_at:
            turns.append(await talk(session, speech, LOAD_CHUNK_MS, pause_ms=1000))

    try:
        # staggered starts, so that the sessions' turns do not begin in the same instant
        await asyncio.gather(*(loop(s, i * 3.0 / sessions) for i, (s, _, _) in enumerate(opened)))
    finally:
        for _session, ws, reader in opened:
            await ws.close()
            reader.cancel()
    errors = sum(len(s.errors) for s, _, _ in opened)
    return {"turns": turns, "errors": errors}


def load_part(tmp: Path, sessions_list: list[int], seconds: float) -> None:
    config = {
        "ttft": 0.3,
        "tokens_per_second": 30.0,
        "chat_chunk_tokens": 2,
        "tts_realtime_factor": 1.0,
    }
    print(
        f"sessions talking at once, {seconds:.0f} s each (speech, silence, answer, 1 s pause, again)"
    )
    for n in sessions_list:
        with stack(tmp, f"load{n}", config, REPLY) as info:
            url = realtime_url(info, "qwen-plus")
            pid = info["gateway_pid"]
            before, started = cpu_seconds(pid), time.perf_counter()
            os.kill(pid, signal.SIGUSR1)  # start of the measured window
            result = asyncio.run(load_run(url, n, seconds))
            cpu = (cpu_seconds(pid) - before) / (time.perf_counter() - started)
        lags = info["event_lag"]
        p99 = percentile(lags, 99) if lags else float("nan")
        ttfa = [t["audio"] - t["speech_end"] for t in result["turns"]]
        print(
            f"  {n:4d} sessions: gateway CPU {cpu * 100:5.1f}% of a core, "
            f"{len(result['turns'])} turns, {result['errors']} errors; "
            f"sessions per core {n / cpu if cpu else float('nan'):6.0f} "
            f"({'p99 event lag within 50 ms' if p99 <= 0.050 else 'p99 event lag OVER 50 ms'})"
        )
        print(f"        event lag                 {fmt(lags)}")
        print(f"        end of speech -> audio    {fmt(ttfa)}")
        print_stalls(info)


def share_from_metrics(base: str) -> str:
    """Mean and bucket bounds of the gateway's measured share, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = count = 0.0
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("endpoint") != "realtime":
                continue
            if s.name == "qg_voice_turn_gateway_seconds_sum":
                total = s.value
            elif s.name == "qg_voice_turn_gateway_seconds_count":
                count = s.value
            elif s.name == "qg_voice_turn_gateway_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    if not count:
        return "n/a"

    def bound(q: float) -> str:
        for le, n in sorted(buckets):
            if n >= q * count:
                return f"<= {le * 1000:g} ms"
        return "> largest bucket"

    return f"mean {total / count * 1000:.2f} ms   p50 {bound(0.5)}   p99 {bound(0.99)}   (n={count:.0f})"


def stage_means(base: str) -> str:
    """The mean of each turn stage the gateway measured (from the end of speech), from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("endpoint") != "realtime" or "stage" not in s.labels:
                continue
            if s.name == "qg_voice_turn_stage_seconds_sum":
                sums[s.labels["stage"]] = s.value
            elif s.name == "qg_voice_turn_stage_seconds_count":
                counts[s.labels["stage"]] = s.value
    return ", ".join(
        f"{stage} {sums[stage] / counts[stage] * 1000:.1f} ms"
        for stage in sums
        if counts.get(stage)
    )


def realtime_url(info: dict[str, Any], model: str) -> str:
    return info["url"].replace("/v1/chat/audio", f"/v1/realtime?model={model}")


def http_base(info: dict[str, Any]) -> str:
    return info["url"].replace("ws://", "http://").removesuffix("/v1/chat/audio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--turns", type=int, default=int(os.environ.get("QG_BENCH_REALTIME_TURNS", "30"))
    )
    parser.add_argument(
        "--sessions",
        default=os.environ.get("QG_BENCH_REALTIME_SESSIONS", "10,25,50"),
        help="comma-separated session counts of the load part",
    )
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("QG_BENCH_REALTIME_SECONDS", "20"))
    )
    parser.add_argument(
        "--parts",
        default=os.environ.get("QG_BENCH_REALTIME_PARTS", "cascade,omni,load"),
        help="which runs, comma-separated: cascade, omni, load",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    keep = os.environ.get("QG_BENCH_DIR")
    with (
        contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="bench-rt-")
    ) as tmp_dir:
        tmp = Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        config = {
            "ttft": TTFT,
            "tts_first_audio_delay": TTS_FIRST_AUDIO,
            "tokens_per_second": 0.0,
            "tts_realtime_factor": 0.0,
        }
        if "cascade" in parts:
            with stack(tmp, "cascade", config, REPLY) as info:
                asyncio.run(
                    ttfa_run(
                        realtime_url(info, "qwen-plus"),
                        args.turns,
                        "cascade (qwen-plus)",
                        TTFT + TTS_FIRST_AUDIO,
                        base=http_base(info),
                        env_file=info["env_file"],
                    )
                )
            print()
        if "omni" in parts:
            with stack(tmp, "omni", config, REPLY) as info:
                asyncio.run(
                    ttfa_run(
                        realtime_url(info, OMNI_MODEL), args.turns, f"omni ({OMNI_MODEL})", None
                    )
                )
            print()
        if "load" in parts:
            load_part(tmp, [int(n) for n in args.sessions.split(",")], args.duration)


if __name__ == "__main__":
    main()
