"""How much CPU /v1/realtime's audio path costs per session: VAD, resampling and G.711.

Prints figures; asserts nothing. Run: ``.venv/bin/python bench/bench_realtime_audio.py [seconds-of-audio]``.

Audio is fed in 20 ms chunks, the size browsers and telephony send. "x real time" = seconds of audio processed per
second of process CPU time on one core; "us/chunk" = CPU microseconds per 20 ms chunk. A session costs
(its chunks per second) x (us/chunk): 50 chunks a second, so 20 us/chunk is 0.1% of a core.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from qwen_gateway.simulator.audio import synthesize
from qwen_gateway.voice.convert import (
    WIRE_FORMATS,
    G711Encoder,
    InputConverter,
    OutputConverter,
    Resampler,
)
from qwen_gateway.voice.vad import SpeechDetector, VadSettings

CHUNK_MS = 20


def speech_with_pauses(seconds: float, rate: int, seed: int = 7) -> bytes:
    """The simulator's synthetic voice, sentences and pauses, over a -50 dBFS noise floor."""
    voice = synthesize("你好，今天天气怎么样？我们去公园散步吧。", rate) + bytes(rate)
    n = round(seconds * rate)
    x = np.resize(np.frombuffer(voice, "<i2"), n).astype(np.int64)
    x += np.random.default_rng(seed).normal(0, 100, n).round().astype(np.int64)
    return x.clip(-32768, 32767).astype("<i2").tobytes()


def chunks(data: bytes, rate: int, width: int) -> list[bytes]:
    step = rate * CHUNK_MS // 1000 * width
    return [data[i : i + step] for i in range(0, len(data), step)]


def measure(
    pieces: list[bytes], work: Callable[[bytes], object], seconds: float
) -> tuple[float, float]:
    """(x real time, us per chunk) on process CPU time, best of 3."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for p in pieces:
            work(p)
        best = min(best, time.process_time() - t0)
    return seconds / best, best / len(pieces) * 1e6


def row(name: str, x_rt: float, us: float) -> None:
    print(f"{name:<34} {x_rt:>10.0f}x {us:>10.1f}")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    print(
        f"/v1/realtime audio path, {seconds:.0f} s of audio per case in {CHUNK_MS} ms chunks, best of 3"
    )
    print(f"{'case':<34} {'x RT (cpu)':>11} {'us/chunk':>10}")

    for rate in (16000, 24000):
        pcm = speech_with_pauses(seconds, rate)
        pieces = chunks(pcm, rate, 2)
        detector = SpeechDetector(VadSettings(), sample_rate=rate)
        row(f"VAD (webrtcvad) at {rate // 1000} kHz", *measure(pieces, detector.feed, seconds))

    for in_rate, out_rate in ((24000, 16000), (16000, 24000), (22050, 24000), (48000, 24000)):
        pcm = speech_with_pauses(seconds, in_rate)
        r = Resampler(in_rate, out_rate)
        row(
            f"resample {in_rate / 1000:g}k -> {out_rate / 1000:g}k",
            *measure(chunks(pcm, in_rate, 2), r.process, seconds),
        )

    pcm24 = speech_with_pauses(seconds, 24000)
    pcm8 = speech_with_pauses(seconds, 8000)
    for name in ("audio/pcmu", "audio/pcma"):
        fmt = WIRE_FORMATS[name]
        encoder = G711Encoder(fmt)
        row(f"G.711 encode {name}", *measure(chunks(pcm8, 8000, 2), encoder.encode, seconds))
        wire = encoder.encode(pcm8)
        decoder = InputConverter(fmt, 8000)
        row(f"G.711 decode {name}", *measure(chunks(wire, 8000, 1), decoder.feed, seconds))
        to_asr = InputConverter(fmt, 16000)
        row(f"client {name} -> 16 kHz (ASR)", *measure(chunks(wire, 8000, 1), to_asr.feed, seconds))
        out = OutputConverter(fmt)
        row(
            f"TTS 24 kHz -> client {name}",
            *measure(chunks(pcm24, 24000, 2), lambda p, out=out: out.feed(p, 24000), seconds),
        )


if __name__ == "__main__":
    main()
