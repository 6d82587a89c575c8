"""What the metrics cost per chat request: the gateway with ``QG_METRICS=on`` and ``off``, side by side.

One simulator and a gateway process started anew for every round and mode, on loopback; this process is the load
generator (bench_chat's raw keep-alive client). Each round runs both modes, in an order flipped every round, each
sending QG_BENCH_METRICS_N requests at concurrency 1, non-streamed and streamed (after bench_chat's warm-up). Reported per mode: the median over rounds of
p50 latency and of CPU per request of the gateway process (user + system, all threads), and the difference on - off.
On a machine shared with other work the difference is within the noise of these end-to-end figures; so a second
part times, in this process, exactly the code metrics add to a chat request (the ASGI wrapper with its header and
observations, the route's upstream-wait stamp, the counting wrapper of the chat model) against the same request
without it: CPU microseconds per request, median of rounds. QG_BENCH_METRICS_ON=off makes an A/A control of the
first part (both modes alike: what remains is noise), QG_BENCH_METRICS_ROUNDS_SHOWN=1 prints every round's p50,
QG_BENCH_METRICS_PARTS=servers,inprocess picks the parts. Figures only, no assertions.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import VENV_BIN, child, free_port, wait_http
from bench_chat import GATEWAY_KEY, UPSTREAM_KEY, Result, machine, run, run_sync

from qwen_gateway.metrics import ROUTE, UPSTREAM_WAIT, InstrumentedChat, Metrics, measure_http

N = int(os.environ.get("QG_BENCH_METRICS_N", "500"))
ROUNDS = int(os.environ.get("QG_BENCH_METRICS_ROUNDS", "10"))
#: QG_METRICS of the "on" gateway: QG_BENCH_METRICS_ON=off runs an A/A control (both alike: the noise floor)
ON_VALUE = os.environ.get("QG_BENCH_METRICS_ON", "on")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-metrics-"))
    sim_port = free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    exe = str(VENV_BIN / "qwen-gateway")
    sim_cmd = [exe, "simulate", "--host", "127.0.0.1", "--port", str(sim_port)]
    base_env = {
        "QWEN_API_KEY": UPSTREAM_KEY,
        "QWEN_API_CHAT_URL": f"{sim}/compatible-mode/v1/chat/completions",
        "DASHSCOPE_HTTP_BASE_URL": f"{sim}/api/v1",
        "DASHSCOPE_WEBSOCKET_BASE_URL": f"ws://127.0.0.1:{sim_port}/api-ws/v1/inference",
        "REAL_TIME_AUDIO_URL": f"ws://127.0.0.1:{sim_port}/api-ws/v1/realtime?model=qwen-tts-realtime",
        "QG_API_KEYS": GATEWAY_KEY,
        "QG_LOG_LEVEL": "WARNING",
        "DEFAULT_SYSTEM_PROMPT": "",
    }
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with child([*sim_cmd, "--api-key", UPSTREAM_KEY], log=tmp / "sim.log"):
        wait_http(f"{sim}/health", ok=(200, 404))
        port = free_port()
        gateway = [
            exe,
            "serve",
            "--no-simulate",
            "--port",
            str(port),
            "--data-dir",
            str(tmp / "data"),
            "--env-file",
            "",
        ]
        values = {"on": ON_VALUE, "off": "off"}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results: dict[tuple[str, bool], list[Result]] = {}
        for i in range(ROUNDS):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                # A new process per round and mode, on the same port: no process is favoured by where the
                # machine put it (an A/A run of two long-lived processes differed by 0.3-0.6 ms at p50).
                env = {**base_env, "QG_METRICS": values[mode]}
                with child(gateway, env=env, log=tmp / f"{mode}.log") as proc:
                    wait_http(f"http://127.0.0.1:{port}/health")
                    for stream in (False, True):
                        result = run_sync(
                            run(
                                url,
                                headers,
                                stream=stream,
                                concurrency=1,
                                n=N,
                                model="qwen-plus",
                                pid=proc.pid,
                            )
                        )
                        results.setdefault((mode, stream), []).append(result)
    print(f"machine: {machine()}")
    print(f"{ROUNDS} rounds x {N} requests at c=1 per mode, medians over rounds")
    print(f"{'':14}{'p50 on':>9}{'p50 off':>9}{'added':>9}{'cpu on':>9}{'cpu off':>9}{'added':>9}")
    for stream in (False, True):
        p50 = {m: statistics.median(r.p50 for r in results[(m, stream)]) for m in ("on", "off")}
        cpu = {
            m: statistics.median(r.cpu_ms or 0.0 for r in results[(m, stream)])
            for m in ("on", "off")
        }
        name = "streamed" if stream else "non-streamed"
        print(
            f"{name:14}{p50['on']:8.3f}m{p50['off']:8.3f}m{(p50['on'] - p50['off']) * 1e3:7.0f}us"
            f"{cpu['on']:8.3f}m{cpu['off']:8.3f}m{(cpu['on'] - cpu['off']) * 1e3:7.0f}us"
        )
    print("(m = milliseconds; cpu = the gateway process's CPU time per request)")
    if os.environ.get("QG_BENCH_METRICS_ROUNDS_SHOWN"):
        for (mode, stream), rs in sorted(results.items()):
            print(
                f"  {mode:3} stream={stream!s:5} p50 per round: {' '.join(f'{r.p50:.2f}' for r in rs)}"
            )


# ---------------------------------------------------------------------------------------------- in process
class _Chat:
    async def complete(self, body: Any, *, api_key: str | None = None) -> dict[str, Any]:
        return {"object": "chat.completion"}


async def _requests(n: int, metrics: Metrics | None) -> float:
    """CPU seconds per request of ``n`` ASGI requests through an app shaped like the chat route."""
    chat: Any = _Chat() if metrics is None else InstrumentedChat(_Chat(), metrics, "chat", "sse")
    body = b'{"object": "chat.completion"}'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if metrics is not None:
            scope[ROUTE] = "/v1/chat/completions"
        waited = time.perf_counter()
        await chat.complete({})
        scope[UPSTREAM_WAIT] = time.perf_counter() - waited
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": body})

    asgi = app if metrics is None else measure_http(app, metrics)

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    start = time.process_time()
    for _ in range(n):
        await asgi(dict(scope), None, send)
    return (time.process_time() - start) / n


def in_process() -> None:
    n, rounds = 20000, 9
    on: list[float] = []
    off: list[float] = []
    metrics = Metrics()
    for _ in range(rounds):
        off.append(asyncio.run(_requests(n, None)))
        on.append(asyncio.run(_requests(n, metrics)))
    added = statistics.median(a - b for a, b in zip(on, off, strict=True))
    print(
        f"in process, {rounds} rounds x {n} requests: metrics add {added * 1e6:.1f} us CPU per chat request "
        f"(bare {statistics.median(off) * 1e6:.1f} us, measured {statistics.median(on) * 1e6:.1f} us)"
    )


if __name__ == "__main__":
    parts = os.environ.get("QG_BENCH_METRICS_PARTS", "servers,inprocess").split(",")
    if "servers" in parts:
        main()
    if "inprocess" in parts:
        in_process()
