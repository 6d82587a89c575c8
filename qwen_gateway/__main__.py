"""``qwen-gateway serve | simulate | device-sim | schemas | check``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, Settings, ignored_variables, load_settings

__all__ = ["main"]


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="start the gateway",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_settings_epilog(),
        description=(
            "Start the gateway. Every option overrides its environment variable (also read from .env). "
            "Without QWEN_API_KEY the gateway starts the DashScope simulator in-process and says so."
        ),
    )
    p.add_argument("--host", help="address to listen on (QG_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (QG_PORT, default 5000)")
    p.add_argument(
        "--data-dir", help="SQLite history, local objects, journal (QG_DATA_DIR, default ./data)"
    )
    p.add_argument(
        "--env-file", default=".env", help="dotenv file to read (default .env; '' for none)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--simulate",
        action="store_true",
        default=None,
        help="use the built-in DashScope simulator even when QWEN_API_KEY is set (QG_SIMULATE)",
    )
    mode.add_argument(
        "--no-simulate",
        dest="simulate",
        action="store_false",
        help="never simulate: fail when QWEN_API_KEY is missing",
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="a gateway key (QG_API_KEYS); repeatable",
    )
    p.add_argument(
        "--auth", choices=["on", "off"], help="require gateway keys (QG_AUTH, default on)"
    )
    p.add_argument("--cors", help="comma-separated allowed origins (QG_CORS_ORIGINS), '*' for any")
    p.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="QG_LOG_LEVEL"
    )
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    p.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port, under a supervisor (QG_WORKERS, default 1)",
    )
    # Set by the supervisor for its workers: the inherited listening socket and the worker's number.
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)


def _settings_epilog() -> str:
    """Every setting, by its environment variable, with its default (from the Settings dataclass)."""
    lines = ["settings (environment or .env; see .env.example and README.md):"]
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        env = f.metadata.get("env")
        if not env:
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "on" if value else "off"
        shown = "" if f.metadata.get("secret") or value in ("", None) else f" (default {value})"
        lines.append(f"  {env}{shown}")
    return "\n".join(lines)


def build_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.api_keys:
        overrides["api_keys"] = tuple(args.api_keys)
    if args.auth:
        overrides["auth"] = args.auth == "on"
    if args.cors:
        overrides["cors_origins"] = tuple(o.strip() for o in args.cors.split(",") if o.strip())
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.workers is not None:
        overrides["workers"] = args.workers
    settings = load_settings(dotenv=args.env_file or None, **overrides)
    keyless = args.simulate is None and not settings.qwen_api_key
    if args.simulate is True or keyless:
        settings = dataclasses.replace(settings, simulate=True)
    if args.simulate is False and not settings.qwen_api_key:
        raise ConfigError("QWEN_API_KEY is not set and --no-simulate was given")
    return settings


def banner(settings: Settings, base_url: str) -> str:
    lines = [f"qwen-gateway {__version__} listening on {base_url}"]
    if settings.upstream_simulated:
        lines.append(
            "  upstream : SIMULATED - no QWEN_API_KEY, so answers, recognition and speech come from the"
        )
        lines.append(
            "             built-in DashScope simulator, not from Qwen. Put QWEN_API_KEY in .env for the real thing."
        )
    else:
        lines.append(f"  upstream : DashScope ({settings.chat_url})")
    if settings.workers > 1:
        lines.append(
            f"  workers  : {settings.workers} processes on this port, under a supervisor (pid {os.getppid()})"
        )
    lines.append(f"  pages    : {base_url}/web/")
    lines.append(f"  chat API : {base_url}/v1/chat/completions   health: {base_url}/health")
    lines.append(f"  contract : {base_url}/schemas/ (JSON Schema, AsyncAPI, OpenAPI)")
    db = (
        f"MySQL {settings.db_host}:{settings.db_port}/{settings.db_name}"
        if settings.uses_mysql
        else f"SQLite {settings.sqlite_path}"
    )
    obj = (
        f"OSS bucket {settings.oss_bucket}"
        if settings.uses_oss
        else f"local folder {settings.objects_dir}"
    )
    lines.append(f"  history  : {db}")
    lines.append(f"  objects  : {obj}")
    if not settings.auth:
        lines.append("  auth     : OFF (QG_AUTH=off)")
    elif not (settings.api_keys or settings.api_keys_file):
        lines.append(
            "  auth     : no gateway keys configured: open on loopback only (set QG_API_KEYS)"
        )
    from .auth import KeyChecker
    from .origins import OriginPolicy

    if OriginPolicy.from_settings(settings, KeyChecker.from_settings(settings)).check_host:
        public = settings.public_url or f"http://{settings.host}:{settings.port}"
        lines.append(f"  hosts    : open mode answers a loopback Host or {public} (QG_PUBLIC_URL)")
    else:
        lines.append(
            "  auth     : gateway keys required (Authorization: Bearer, or ?token= on WebSockets)"
        )
    for name, why in ignored_variables().items():
        lines.append(f"  note     : {name} is ignored: {why}")
    return "\n".join(lines)


async def _serve(
    settings: Settings, *, worker_fd: int | None = None, worker_id: int | None = None
) -> None:
    from hypercorn.asyncio import serve

    from . import tasks
    from .app import create_app
    from .auth import KeyChecker, check_bind
    from .collector import Collector
    from .lifecycle import Lifecycle
    from .server import hypercorn_config, listen, release_free_memory
    from .services import open_services

    tasks.install(asyncio.get_running_loop())  # cancelled tasks leave no reference cycle
    check_bind(settings, KeyChecker.from_settings(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # A worker of `serve --workers N` accepts on the supervisor's socket (see qwen_gateway.workers).
    sock = (
        listen(settings.host, settings.port)
        if worker_fd is None
        else socket.socket(fileno=worker_fd)
    )
    config = hypercorn_config(settings, sock)
    sock.detach()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    lifecycle = Lifecycle.from_settings(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_stop_signal, stop, lifecycle)
    async with open_services(settings) as services:
        services.worker_id = worker_id
        app = create_app(services.settings, services, lifecycle)
        collector = Collector(
            quiet=lambda: lifecycle.idle,
            observer=services.metrics,
            after_sweep=release_free_memory,
        )
        collector.install()
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        if not worker_id:  # one banner per deployment: the single process, or worker 0
            print(banner(services.settings, f"http://{host}:{settings.port}"), flush=True)
        else:
            print(f"qwen-gateway worker {worker_id} (pid {os.getpid()}) ready", flush=True)
        lifecycle.mark_started()
        trigger = _drain_trigger(stop, lifecycle, services)
        async with asyncio.TaskGroup() as group:
            sweeps = group.create_task(collector.sweep_when_quiet(), name="gc-sweeps")
            try:
                await serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
            finally:
                sweeps.cancel()


def _on_stop_signal(stop: asyncio.Event, lifecycle: Any) -> None:
    """First SIGTERM/SIGINT: drain (see qwen_gateway.lifecycle); a second one: end the grace period now."""
    if stop.is_set():
        lifecycle.hurry()
    lifecycle.begin_drain()  # readiness fails from this instant on
    stop.set()


def _drain_trigger(stop: asyncio.Event, lifecycle: Any, services: Any) -> Any:
    """Hypercorn's shutdown trigger: on the signal, drain (qwen_gateway.lifecycle), then let the server stop."""
    from .lifecycle import drain_on

    async def trigger() -> None:
        await drain_on(stop.wait, lifecycle, services.storage.outbox)

    return trigger


def _run(coro: Any, *, uvloop: bool = True) -> None:
    if uvloop:
        try:
            import uvloop as _uvloop

            _uvloop.run(coro)
            return
        except ImportError:
            pass
    asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qwen-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    sim = sub.add_parser("simulate", help="run the DashScope simulator", add_help=False)
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    dev = sub.add_parser(
        "device-sim",
        help="talk to a gateway as a small voice device (Opus, paced, open microphone)",
        add_help=False,
    )
    dev.add_argument("rest", nargs=argparse.REMAINDER)
    sch = sub.add_parser(
        "schemas", help="write the published contract (JSON Schema, AsyncAPI, OpenAPI)"
    )
    sch.add_argument("--out", default="schemas", help="output folder (default schemas/)")
    sch.add_argument(
        "--check", action="store_true", help="fail if the files differ instead of writing"
    )
    sub.add_parser("check", help="validate the configuration and exit")
    ref = sub.add_parser(
        "config-reference", help="write the environment reference (docs/configuration.md)"
    )
    ref.add_argument("--out", default="docs/configuration.md", help="file to write")
    ref.add_argument(
        "--check", action="store_true", help="fail if the file differs instead of writing"
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from .simulator.cli import run_cli

        return run_cli(argv[1:])
    if argv[:1] == ["device-sim"]:
        from .device_sim import main as device_sim

        return device_sim(argv[1:])
    args = parser.parse_args(argv)
    from .logs import configure, json_lines_for

    try:
        if args.command == "serve":
            settings = build_settings(args)
            configure(
                settings.log_level,
                json_lines=json_lines_for(settings.log_format),
                secrets=settings.secret_values(),
            )
            if args.worker_fd is None and settings.workers > 1:
                return _supervise(settings, argv)
            _run(
                _serve(settings, worker_fd=args.worker_fd, worker_id=args.worker_id),
                uvloop=not args.no_uvloop,
            )
            return 0
        if args.command == "schemas":
            return _schemas(Path(args.out), check=args.check)
        if args.command == "config-reference":
            return _config_reference(Path(args.out), check=args.check)
        if args.command == "check":
            settings = load_settings()
            configure(settings.log_level, json_lines=False, secrets=settings.secret_values())
            for k, v in settings.redacted().items():
                print(f"{k}={v}")
            return 0
    except ConfigError as exc:
        print(f"qwen-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _supervise(settings: Settings, argv: Sequence[str]) -> int:
    """``serve --workers N``: bind once, then run N workers on the socket (``qwen_gateway.workers``)."""
    from .auth import KeyChecker, check_bind
    from .server import listen
    from .workers import Supervisor

    check_bind(settings, KeyChecker.from_settings(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sock = listen(settings.host, settings.port)
    sock.set_inheritable(True)
    on_exit = _shared_metrics_dir(settings) if settings.metrics else None
    # Workers drain on SIGTERM (qwen_gateway.lifecycle): wait for their grace periods before killing any.
    stop_timeout = settings.drain_seconds + settings.drain_outbox_seconds + 10
    supervisor = Supervisor(
        sock, list(argv), settings.workers, stop_timeout=stop_timeout, on_worker_exit=on_exit
    )
    return supervisor.run()


def _shared_metrics_dir(settings: Settings) -> Callable[[int], None]:
    """Prometheus' multiprocess directory for the workers: ``PROMETHEUS_MULTIPROC_DIR``, else
    ``QG_DATA_DIR/metrics``, emptied now (files of an earlier run would be summed in) and set in the environment the
    workers inherit; returns what forgets an ended worker's live gauges."""
    import shutil

    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.data_dir / "metrics")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    from prometheus_client import multiprocess

    def forget(pid: int) -> None:
        multiprocess.mark_process_dead(pid, str(path))

    return forget


def _config_reference(out: Path, *, check: bool) -> int:
    from .config_reference import render

    text = render()
    current = out.read_text(encoding="utf-8") if out.is_file() else None
    if check:
        if current != text:
            print(f"out of date: {out} (run `qwen-gateway config-reference`)", file=sys.stderr)
            return 1
        return 0
    if current != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    return 0


def _schemas(out: Path, *, check: bool) -> int:
    from protocol.schema import generate

    files = generate()
    stale = []
    for name, text in sorted(files.items()):
        path = out / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
