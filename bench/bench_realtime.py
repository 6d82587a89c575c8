"""``/v1/realtime`` on the cascade: time to first audio after the end of speech, and the gateway's share of it.

Simulator (chat and speech, two processes) and gateway as separate processes on loopback, as in
``bench_voice.py`` (its process roles are reused). One session, turn after turn, driven by the official ``openai``
SDK: half a second of silence, a short utterance of the simulator's synthetic speech, a second of silence, sent
at once (the simulator's recogniser times its results by the audio received, not by the wall clock).

* **after speech_stopped**: from the client's receipt of ``input_audio_buffer.speech_stopped`` (server VAD found
  the end of speech) to its first ``response.output_audio.delta``. The simulator's configured latencies (chat time
  to first token, TTS first-audio delay) are a floor; recognition ends when its last audio is received.
* **minus configured latencies**: the same less that floor: an upper bound of the gateway's share that still holds
  the recogniser's and the simulator's own work and the loopback hops.
* **gateway share (measured inside)**: ``qg_voice_turn_gateway_seconds{endpoint="realtime"}``, the three
  stretches where no upstream is waited for (transcript -> chat request, first sentence -> TTS, first PCM ->
  first audio frame written), as a mean and bucket bounds from the gateway's ``/metrics``.

Figures only, no assertions. ``QG_BENCH_RT_TURNS`` turns (default 40; the first 5 are warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import percentile  # noqa: E402
from bench_voice import stack  # noqa: E402

#: Simulator latencies (seconds).
TTFT = 0.050
TTS_FIRST_AUDIO = 0.020
REPLY = "好的，今天天气很好。适合出门散步。"
WARM_UP = 5


def fmt(values: list[float]) -> str:
    if not values:
        return "n/a"
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):7.2f} ms   p90 {percentile(ms, 90):7.2f} ms   "
        f"p99 {percentile(ms, 99):7.2f} ms   max {max(ms):7.2f} ms   (n={len(ms)})"
    )


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


async def run(base_url: str, turns: int) -> None:
    from openai import AsyncOpenAI

    from qwen_gateway.simulator.audio import synthesize

    speech = synthesize("今天天气怎么样？", 24000)
    audio = bytes(24000) + speech + bytes(48000)
    chunks = [base64.b64encode(audio[i : i + 4800]).decode() for i in range(0, len(audio), 4800)]
    client = AsyncOpenAI(api_key="sk-bench", base_url=f"{base_url}/v1", max_retries=0)
    after_stop: list[float] = []
    async with client.realtime.connect(model="qwen-plus") as conn:
        await conn.recv()
        for i in range(turns):
            for chunk in chunks:
                await conn.input_audio_buffer.append(audio=chunk)
            stopped_at = first_audio_at = None
            async for event in conn:
                now = time.perf_counter()
                if event.type == "input_audio_buffer.speech_stopped":
                    stopped_at = now
                elif event.type == "response.output_audio.delta" and first_audio_at is None:
                    first_audio_at = now
                elif event.type == "response.done":
                    break
            if i >= WARM_UP and stopped_at is not None and first_audio_at is not None:
                after_stop.append(first_audio_at - stopped_at)
    floor = TTFT + TTS_FIRST_AUDIO
    print("Time to first audio after the end of speech (server VAD), cascade, one session:")
    print(f"  after speech_stopped          {fmt(after_stop)}")
    print(f"  minus configured latencies    {fmt([max(0.0, v - floor) for v in after_stop])}")
    print(f"  gateway share (measured)      {share_from_metrics(base_url)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=int(os.environ.get("QG_BENCH_RT_TURNS", "40")))
    args = parser.parse_args()
    sim_config = {"ttft": TTFT, "tts_first_audio_delay": TTS_FIRST_AUDIO, "tokens_per_second": 0}
    with (
        tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp,
        stack(Path(tmp), "rt", sim_config, REPLY) as info,
    ):
        base = info["url"].replace("ws://", "http://").removesuffix("/v1/chat/audio")
        asyncio.run(run(base, args.turns + WARM_UP))


if __name__ == "__main__":
    main()
