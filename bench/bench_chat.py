"""Chat proxy figures: requests/s and added latency of the gateway over the simulator called directly, at
concurrency 1 and 16, streaming and not; and LiteLLM's proxy doing the same pass-through, side by side.

Every server runs in its own process on loopback (simulator, gateway, LiteLLM); this process is the load
generator. "Added latency" is the gateway's latency minus the direct call's, percentile by percentile. "cpu/req"
is the CPU time (all threads) the measured server process spent per request: the simulator's for the direct
rows, the proxy's own for the others. LiteLLM is installed into its own virtualenv (.bench/litellm-venv,
created on first use; QG_BENCH_LITELLM_VENV names another) and started with a master key; set
QG_BENCH_LITELLM=0 to skip it.

The load generator is a small keep-alive HTTP/1.1 client of its own (uvloop when installed), so that it takes
little of the machine's CPU from the servers it measures; QG_BENCH_CLIENT=httpx uses httpx instead. Every
answer is checked (status 200, a chat completion, or an SSE stream ending with ``[DONE]``). Sizes:
QG_BENCH_N_SEQ requests at c=1, QG_BENCH_N_CONC at c=16. Figures only, no assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from _harness import ROOT, VENV_BIN, child, free_port, percentile, wait_http

LITELLM_VERSION = "1.108.7"
UPSTREAM_KEY = "sk-bench-upstream"
GATEWAY_KEY = "gk-bench"
PROMPT = [{"role": "user", "content": "用一句话介绍你自己。"}]
N_SEQ = int(os.environ.get("QG_BENCH_N_SEQ", "1000"))
N_CONC = int(os.environ.get("QG_BENCH_N_CONC", "2000"))
#: also measure ``serve --workers N`` for these N > 1 (comma-separated; "" for none)
WORKERS = [int(w) for w in os.environ.get("QG_BENCH_WORKERS", "2").split(",") if w.strip()]
CLIENT = os.environ.get("QG_BENCH_CLIENT", "raw")
WARMUP = 50
_DONE = b"data: [DONE]\n\n"


@dataclass
class Result:
    rps: float
    p50: float
    p99: float
    ttfb50: float
    cpu_ms: float | None


# ---------------------------------------------------------------------------------------------- raw client
class BadAnswer(Exception):
    """The server answered something other than a successful chat completion."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection: sends a prepared request, reads the whole answer.

    Bodies framed by Content-Length or chunked; anything else (or ``Connection: close``) reconnects next time.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def exchange(self, request: bytes) -> tuple[int, bytes, float]:
        """(status, decoded body, seconds to the first body byte) of one request."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        first = 0.0
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
            first = time.perf_counter() - start
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            buf = b""
            while True:  # chunk by chunk; a chunk's data may arrive in pieces
                while b"\r\n" not in buf:
                    buf += await _read(reader)
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    buf += await _read(reader)
                if size == 0:
                    break  # no trailers in these answers: "0\r\n\r\n"
                if not first:
                    first = time.perf_counter() - start
                parts.append(buf[:size])
                buf = buf[size + 2 :]
            body = b"".join(parts)
        else:
            body = await reader.read()
            first = time.perf_counter() - start
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body, first


async def _read(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(65536)
    if not data:
        raise BadAnswer("connection closed mid-answer")
    return data


def raw_request(url: str, headers: dict[str, str], stream: bool, model: str) -> bytes:
    """The bytes of one POST of the benchmark's chat request."""
    parsed = httpx.URL(url)
    body = json.dumps({"model": model, "messages": PROMPT, "stream": stream}).encode()
    lines = [
        f"POST {parsed.raw_path.decode()} HTTP/1.1",
        f"Host: {parsed.host}:{parsed.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def check(status: int, body: bytes, stream: bool) -> None:
    if status != 200:
        raise BadAnswer(f"HTTP {status}: {body[:200]!r}")
    if stream:
        if not body.endswith(_DONE) or b'"error"' in body:
            raise BadAnswer(f"bad stream: ...{body[-200:]!r}")
    elif b'"chat.completion"' not in body:
        raise BadAnswer(f"not a completion: {body[:200]!r}")


# ---------------------------------------------------------------------------------------------- load
def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, all threads) of process ``pid`` and its live children (the workers of
    ``serve --workers N``) so far; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


async def run(
    url: str,
    headers: dict[str, str],
    *,
    stream: bool,
    concurrency: int,
    n: int,
    model: str,
    pid: int | None = None,
) -> Result:
    """``n`` requests by ``concurrency`` workers (after a warm-up), timed one by one."""
    if CLIENT == "httpx":
        return await _run_httpx(url, headers, stream, concurrency, n, model, pid)
    parsed = httpx.URL(url)
    request = raw_request(url, headers, stream, model)
    conns = [RawConnection(parsed.host, parsed.port or 80) for _ in range(concurrency)]

    async def one(conn: RawConnection) -> tuple[float, float]:
        start = time.perf_counter()
        status, body, first = await conn.exchange(request)
        elapsed = time.perf_counter() - start
        check(status, body, stream)
        return elapsed, first

    try:
        return await _measure(conns, one, n, pid)
    finally:
        for conn in conns:
            await conn.close()


async def _run_httpx(
    url: str,
    headers: dict[str, str],
    stream: bool,
    concurrency: int,
    n: int,
    model: str,
    pid: int | None,
) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = {"model": model, "messages": PROMPT, "stream": stream}
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:

        async def one(_: object) -> tuple[float, float]:
            start = time.perf_counter()
            first = 0.0
            async with http.stream("POST", url, json=body, headers=headers) as resp:
                parts = []
                async for chunk in resp.aiter_bytes():
                    if not first:
                        first = time.perf_counter() - start
                    parts.append(chunk)
            elapsed = time.perf_counter() - start
            check(resp.status_code, b"".join(parts), stream)
            return elapsed, first

        return await _measure([None] * concurrency, one, n, pid)


async def _measure(
    workers: list[object],
    one: Callable[[object], Awaitable[tuple[float, float]]],
    n: int,
    pid: int | None,
) -> Result:
    for _ in range(min(WARMUP, n)):  # connections, caches, JITs of the servers
        await one(workers[0])
    lat: list[float] = []
    ttfb: list[float] = []
    todo = iter(range(n))

    async def worker(conn: object) -> None:
        for _ in todo:
            t, f = await one(conn)
            lat.append(t)
            ttfb.append(f)

    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for conn in workers:
            tg.create_task(worker(conn))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    return Result(
        n / elapsed,
        percentile(lat, 50) * 1e3,
        percentile(lat, 99) * 1e3,
        percentile(ttfb, 50) * 1e3,
        cpu / n * 1e3 if pid is not None else None,
    )


def run_sync(coro: Awaitable[Result]) -> Result:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- servers
def litellm_bin() -> Path | None:
    if os.environ.get("QG_BENCH_LITELLM", "1") == "0":
        return None
    venv = Path(os.environ.get("QG_BENCH_LITELLM_VENV", ROOT / ".bench" / "litellm-venv"))
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(
            f"(installing LiteLLM {LITELLM_VERSION} into {venv} for the side-by-side figures)",
            flush=True,
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )
    return exe


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model or platform.processor()}, {cores} cores, Python {platform.python_version()}"


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-chat-"))
    sim_port, gw_port, ll_port = free_port(), free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    exe = str(VENV_BIN / "qwen-gateway")
    sim_cmd = [exe, "simulate", "--host", "127.0.0.1", "--port", str(sim_port)]
    with child([*sim_cmd, "--api-key", UPSTREAM_KEY], log=tmp / "sim.log") as sim_proc:
        wait_http(f"{sim}/health", ok=(200, 404))
        env = {
            "QWEN_API_KEY": UPSTREAM_KEY,
            "QWEN_API_CHAT_URL": f"{sim}/compatible-mode/v1/chat/completions",
            "DASHSCOPE_HTTP_BASE_URL": f"{sim}/api/v1",
            "DASHSCOPE_WEBSOCKET_BASE_URL": f"ws://127.0.0.1:{sim_port}/api-ws/v1/inference",
            "REAL_TIME_AUDIO_URL": f"ws://127.0.0.1:{sim_port}/api-ws/v1/realtime?model=qwen-tts-realtime",
            "QG_API_KEYS": GATEWAY_KEY,
            "QG_LOG_LEVEL": "WARNING",
            "DEFAULT_SYSTEM_PROMPT": "",
        }
        gw_cmd = [
            exe,
            "serve",
            "--no-simulate",
            "--port",
            str(gw_port),
            "--data-dir",
            str(tmp / "data"),
            "--env-file",
            "",
        ]
        with contextlib.ExitStack() as stack:
            gw_proc = stack.enter_context(child(gw_cmd, env=env, log=tmp / "gateway.log"))
            wait_http(f"http://127.0.0.1:{gw_port}/health")
            targets: dict[str, tuple[str, dict[str, str], int]] = {
                "simulator direct": (
                    f"{sim}/compatible-mode/v1/chat/completions",
                    {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                    sim_proc.pid,
                ),
                "qwen-gateway": (
                    f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                    {"Authorization": f"Bearer {GATEWAY_KEY}"},
                    gw_proc.pid,
                ),
            }
            for n in (
                WORKERS
            ):  # the same gateway as N processes on one port (the supervisor's pid: all CPU)
                port = free_port()
                cmd = [*gw_cmd, "--workers", str(n)]
                cmd[cmd.index("--port") + 1] = str(port)
                cmd[cmd.index("--data-dir") + 1] = str(tmp / f"data-w{n}")
                proc = stack.enter_context(child(cmd, env=env, log=tmp / f"gateway-w{n}.log"))
                wait_http(f"http://127.0.0.1:{port}/health")
                targets[f"qwen-gateway w={n}"] = (
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    {"Authorization": f"Bearer {GATEWAY_KEY}"},
                    proc.pid,
                )
            ll = litellm_bin()
            ll_ctx = None
            if ll is not None:
                cfg = tmp / "litellm.yaml"
                cfg.write_text(
                    "model_list:\n  - model_name: qwen-plus\n    litellm_params:\n      model: openai/qwen-plus\n"
                    f"      api_base: {sim}/compatible-mode/v1\n      api_key: {UPSTREAM_KEY}\n"
                    "litellm_settings:\n  telemetry: false\n  drop_params: true\n",
                    encoding="utf-8",
                )
                # LiteLLM refuses to start without a strong master key; callers then send it as their key.
                ll_key = f"sk-{secrets.token_hex(32)}"
                ll_env = {
                    "LITELLM_MASTER_KEY": ll_key,
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_TELEMETRY": "False",
                    "LITELLM_LOG": "ERROR",
                }
                ll_ctx = child(
                    [
                        str(ll),
                        "--config",
                        str(cfg),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ll_port),
                        "--num_workers",
                        "1",
                    ],
                    env=ll_env,
                    log=tmp / "litellm.log",
                )
                ll_proc = ll_ctx.__enter__()
                try:
                    wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", timeout=180)
                    targets["LiteLLM proxy"] = (
                        f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                        {"Authorization": f"Bearer {ll_key}"},
                        ll_proc.pid,
                    )
                except RuntimeError as exc:
                    print(f"(LiteLLM did not start: {exc}; see {tmp / 'litellm.log'})")
            try:
                results: dict[tuple[str, bool, int], Result] = {}
                for stream in (False, True):
                    for conc, n in ((1, N_SEQ), (16, N_CONC)):
                        for name, (url, headers, pid) in targets.items():
                            results[(name, stream, conc)] = run_sync(
                                run(
                                    url,
                                    headers,
                                    stream=stream,
                                    concurrency=conc,
                                    n=n,
                                    model="qwen-plus",
                                    pid=pid,
                                )
                            )
            finally:
                if ll_ctx is not None:
                    ll_ctx.__exit__(None, None, None)
    report(results, list(targets), tmp)


def report(results: dict[tuple[str, bool, int], Result], names: list[str], tmp: Path) -> None:
    print(
        f"\nchat proxy ({machine()}; {N_SEQ} requests at c=1, {N_CONC} at c=16; {CLIENT} client;"
        " latency in ms)"
    )
    print(
        f"{'target':<18} {'mode':<7} {'c':>3} {'req/s':>7} {'p50':>7} {'p99':>7} {'ttfb p50':>9}"
        f" {'added p50':>10} {'added p99':>10} {'cpu/req':>8}"
    )
    for stream in (False, True):
        for conc in (1, 16):
            base = results[("simulator direct", stream, conc)]
            for name in names:
                r = results[(name, stream, conc)]
                added = (
                    f"{'':>10} {'':>10}"
                    if name == "simulator direct"
                    else f"{r.p50 - base.p50:10.2f} {r.p99 - base.p99:10.2f}"
                )
                cpu = f"{r.cpu_ms:8.2f}" if r.cpu_ms is not None else f"{'':>8}"
                print(
                    f"{name:<18} {'stream' if stream else 'json':<7} {conc:>3} {r.rps:7.0f}"
                    f" {r.p50:7.2f} {r.p99:7.2f} {r.ttfb50:9.2f} {added} {cpu}"
                )
    for stream in (False, True):
        if ("LiteLLM proxy", stream, 16) in results:
            g = results[("qwen-gateway", stream, 16)].rps
            litellm = results[("LiteLLM proxy", stream, 16)].rps
            print(
                f"gateway / LiteLLM requests/s at c=16 ({'stream' if stream else 'json'}): {g / litellm:.1f}x"
            )
    out = {f"{k[0]}|{'stream' if k[1] else 'json'}|c{k[2]}": vars(v) for k, v in results.items()}
    (tmp / "results.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"(raw figures: {tmp / 'results.json'})")


if __name__ == "__main__":
    main()
