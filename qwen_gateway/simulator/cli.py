"""``qwen-gateway simulate``: run the DashScope simulator until interrupted.

On start it prints the four variables (``NAME=value`` lines) that point a gateway at it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any, TextIO

from .config import SimulatorConfig
from .faults import Fault, parse_fault
from .server import Simulator

__all__ = ["build_parser", "run_cli"]


def build_parser(prog: str = "qwen-gateway simulate") -> argparse.ArgumentParser:
    """The argument parser of the ``simulate`` command."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a DashScope simulator (chat, realtime TTS, ASR, CosyVoice, file ASR).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8001, help="port to bind; 0 = any (default 8001)"
    )
    parser.add_argument(
        "--api-key", default=None, help="the only accepted key (default: any sk- key)"
    )
    parser.add_argument("--ttft", type=float, default=0.0, help="chat time to first token, seconds")
    parser.add_argument(
        "--tps", type=float, default=0.0, help="chat tokens per second (0 = no pacing)"
    )
    parser.add_argument(
        "--tts-rtf",
        type=float,
        default=0.0,
        help="TTS seconds of wall time per second of audio (0 = as fast as possible, 1 = real time)",
    )
    parser.add_argument(
        "--asr-idle-timeout",
        type=float,
        default=23.0,
        help="task idle rule, seconds (DashScope: 23)",
    )
    parser.add_argument("--asr-text", default=None, help="transcript of unregistered audio")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="arm a fault, e.g. http_error:status=429,code=limit_requests,times=2 (repeatable)",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def run_cli(argv: list[str], *, out: TextIO | None = None) -> int:
    """Run ``qwen-gateway simulate`` with ``argv`` (without the command name). Returns the exit status."""
    stream = out if out is not None else sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        faults = [parse_fault(spec) for spec in args.fault]
        options: dict[str, Any] = {
            "api_key": args.api_key,
            "ttft": args.ttft,
            "tokens_per_second": args.tps,
            "tts_realtime_factor": args.tts_rtf,
            "asr_idle_timeout": args.asr_idle_timeout,
        }
        if args.asr_text is not None:
            options["asr_default_text"] = args.asr_text
        config = SimulatorConfig(**options)
    except ValueError as err:
        print(f"qwen-gateway simulate: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(config, args.host, args.port, faults, stream))
    except OSError as err:
        print(
            f"qwen-gateway simulate: cannot listen on {args.host}:{args.port}: {err}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _serve(
    config: SimulatorConfig, host: str, port: int, faults: list[Fault], stream: TextIO
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config, host=host, port=port) as sim:
            sim.faults.add(*faults)
            for name, value in sim.env.items():
                print(f"{name}={value}", file=stream)
            stream.flush()
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
