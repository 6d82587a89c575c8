"""How fast Mp3Encoder turns TTS PCM into MP3: real-time factor per core and per-chunk cost.

Prints figures; asserts nothing. Run: ``.venv/bin/python bench/bench_mp3.py [seconds-of-audio]``.

The input is speech-like (a gliding harmonic voice with syllable envelopes and noise), fed in TTS-sized
chunks. "x real time" = seconds of audio encoded per second of CPU time on one core (process CPU time,
so it does not depend on what else the machine runs). Target: >= 400x at 24 kHz mono 64 kbps.
"""

from __future__ import annotations

import array
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen_gateway.voice.mp3 import Mp3Encoder


def speech_like(seconds: float, rate: int, seed: int = 7) -> bytes:
    """Mono s16le PCM that keeps an MP3 encoder about as busy as speech does."""
    rng = random.Random(seed)
    n = int(seconds * rate)
    out = array.array("h", bytes(2 * n))
    phase = 0.0
    for i in range(n):
        t = i / rate
        f0 = 140 + 40 * math.sin(2 * math.pi * 0.7 * t)  # pitch glide
        phase += 2 * math.pi * f0 / rate
        envelope = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * t) ** 2  # ~4 syllables a second
        voiced = sum(math.sin(k * phase) / k for k in (1, 2, 3, 5))
        out[i] = int(6000 * envelope * voiced + rng.gauss(0, 300))
    return out.tobytes()


def run(
    pcm: bytes, rate: int, chunk_ms: int, bitrate: int, quality: int
) -> tuple[float, float, list[float]]:
    """(x real time on CPU time, x real time on wall time, per-chunk encode times in ms)."""
    enc = Mp3Encoder(rate, bitrate_kbps=bitrate, quality=quality)
    step = rate * chunk_ms // 1000 * 2
    per_chunk: list[float] = []
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    for i in range(0, len(pcm), step):
        t0 = time.perf_counter()
        enc.encode(pcm[i : i + step])
        per_chunk.append((time.perf_counter() - t0) * 1000)
    enc.flush()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return enc.duration / cpu, enc.duration / wall, per_chunk


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    print(f"Mp3Encoder (lameenc), {seconds:.0f} s of speech-like audio per run, best of 3")
    print(
        f"{'rate':>6} {'kbps':>4} {'q':>2} {'chunk':>6} {'x RT (cpu)':>10} {'x RT (wall)':>11} "
        f"{'chunk p50 ms':>12} {'chunk max ms':>12}"
    )
    cases = [
        (24000, 64, 5, 100),  # the default: qwen-tts-realtime's 24 kHz, 100 ms chunks
        (24000, 64, 5, 20),
        (24000, 64, 5, 1000),
        (24000, 64, 2, 100),
        (24000, 64, 7, 100),
        (24000, 32, 5, 100),
        (16000, 48, 5, 100),
        (48000, 128, 5, 100),
    ]
    pcms: dict[int, bytes] = {}
    for rate, bitrate, quality, chunk_ms in cases:
        pcm = pcms.setdefault(rate, speech_like(seconds, rate))
        results = [run(pcm, rate, chunk_ms, bitrate, quality) for _ in range(3)]
        cpu_x, wall_x, per_chunk = max(results, key=lambda r: r[0])
        print(
            f"{rate:>6} {bitrate:>4} {quality:>2} {chunk_ms:>4}ms {cpu_x:>9.0f}x {wall_x:>10.0f}x "
            f"{statistics.median(per_chunk):>12.3f} {max(per_chunk):>12.3f}"
        )


if __name__ == "__main__":
    main()
