"""Gateway memory over many voice turns (``/v1/chat/audio``): RSS per 1,000 turns, per connection pattern.

Simulator (no pacing: answers as fast as it can) and gateway are separate processes on loopback, as in
``bench_voice.py``. ``--concurrency`` clients run turns back to back; each turn on a new connection
(``--per-connection 1``, the default: connect, turn, disconnect) or ``--per-connection N`` turns per connection.
``--abrupt`` drops every connection without a close handshake halfway through the answer's audio instead of
finishing the turn. ``--compression`` lets the client offer permessage-deflate (off by default). At the end the gateway runs a full GC
pass and ``malloc_trim(0)``: what RSS falls by then was collectable garbage or free memory, not a leak. After a
warm-up of ``--warmup`` turns, the gateway's RSS is sampled every ``--every`` turns; the figure
is the slope (least squares) in KiB per 1,000 turns. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import rss_kib
from bench_voice import LOAD_REPLY, packets, stack, wav_bytes


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else float("nan")


def smaps(pid: int) -> dict[str, int]:
    """Resident KiB by kind of mapping: the brk heap, anonymous mappings, files."""
    out = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif line.startswith("Rss:"):
            out[kind] += int(head[1])
    return out


def malloc_trim(pid: int) -> int | None:
    """Ask the gateway's glibc to give free memory back (through gdb); its RSS afterwards (KiB)."""
    import shutil
    import subprocess

    if not shutil.which("gdb"):
        return None
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return rss_kib(pid)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def one_turn(ws: Any, frames: list[str], abrupt: bool) -> None:
    for frame in frames:
        await ws.send(frame)
    audio = 0
    while True:
        event = json.loads(await ws.recv())
        name, body = next(iter(event.items()))
        if name == "audio_stream" and body.get("event") == "data":
            audio += 1
            if abrupt and audio == 2:
                ws.transport.abort()
                return
        if name == "audio_complete":
            return


def report(pid: int, counter: int, samples: list[tuple[int, int, int]]) -> None:
    parts = smaps(pid)
    print(
        f"  {counter:6d} turns  RSS {samples[-1][1] / 1024:7.1f} MiB "
        f"(heap {parts['heap'] / 1024:.1f}, anon {parts['anon'] / 1024:.1f}, files {parts['file'] / 1024:.1f})"
        f"  fds {samples[-1][2]}",
        flush=True,
    )


async def run(info: dict[str, Any], args: argparse.Namespace) -> list[tuple[int, int, int]]:
    from websockets.asyncio.client import connect

    pid = info["gateway_pid"]
    frames = packets(wav_bytes(0.5))
    compression = "deflate" if args.compression else None
    total = args.warmup + args.turns
    counter = 0
    samples: list[tuple[int, int, int]] = []
    next_sample = args.warmup

    async def worker() -> None:
        nonlocal counter, next_sample
        while counter < total:
            ws = await connect(
                info["url"],
                max_size=None,
                ping_interval=None,
                compression=compression,
                open_timeout=60,
            )
            try:
                await ws.recv()
                for _ in range(args.per_connection):
                    if counter >= total:
                        break
                    counter += 1
                    await one_turn(ws, frames, args.abrupt)
                    if args.abrupt:
                        break
                    if counter >= next_sample:
                        next_sample += args.every
                        samples.append((counter, rss_kib(pid), open_fds(pid)))
                        report(pid, counter, samples)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
            if args.abrupt and counter >= next_sample:
                next_sample += args.every
                await asyncio.sleep(0.2)
                samples.append((counter, rss_kib(pid), open_fds(pid)))
                report(pid, counter, samples)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--turns", type=int, default=int(os.environ.get("QG_BENCH_MEMORY_TURNS", "2000"))
    )
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--abrupt", action="store_true")
    parser.add_argument("--compression", action="store_true")
    parser.add_argument(
        "--no-collect",
        dest="collect",
        action="store_false",
        help="skip the full GC pass (and malloc_trim) in the gateway at the end",
    )
    parser.add_argument(
        "--trim", action="store_true", help="call malloc_trim(0) in the gateway at the end"
    )
    args = parser.parse_args()
    config = {"ttft": 0.0, "tokens_per_second": 0.0, "tts_realtime_factor": 0.0}
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_dir,
        stack(Path(tmp_dir), "memory", config, LOAD_REPLY) as info,
    ):
        pattern = (
            f"{args.per_connection} turn(s) per connection, {args.concurrency} clients, "
            f"{'abrupt drops mid-audio' if args.abrupt else 'completed turns'}, "
            f"client compression {'offered' if args.compression else 'off'}"
        )
        print(f"memory: {args.turns} turns after {args.warmup} warm-up turns ({pattern})")
        started = time.perf_counter()
        samples = asyncio.run(run(info, args))
        if args.collect:
            import signal

            before = rss_kib(info["gateway_pid"])
            os.kill(info["gateway_pid"], signal.SIGUSR2)
            time.sleep(3)
            after = rss_kib(info["gateway_pid"])
            print(
                f"  gc.collect() + malloc_trim(0)   {before / 1024:.1f} -> {after / 1024:.1f} MiB"
            )
        if args.trim:
            before = rss_kib(info["gateway_pid"])
            after = malloc_trim(info["gateway_pid"])
            if after is not None:
                print(
                    f"  malloc_trim(0)                  {before / 1024:.1f} -> {after / 1024:.1f} MiB"
                )
        elapsed = time.perf_counter() - started
    rss = slope([(t, r) for t, r, _ in samples]) * 1000
    fds = slope([(t, f) for t, _, f in samples]) * 1000
    print(f"  RSS slope                       {rss:8.1f} KiB per 1,000 turns")
    print(f"  open fds slope                  {fds:8.2f} per 1,000 turns")
    print(f"  turns per second                {(args.warmup + args.turns) / elapsed:8.1f}")


if __name__ == "__main__":
    main()
