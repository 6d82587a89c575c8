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

A second part compares HTTP clients for the chat upstream alone (our Http1Pool, aiohttp, httpx): in this
process, against the simulator, CPU per request from time.process_time, rounds interleaved, medians with their
spread; see the comment above TRANSPORT_ROUNDS. QG_BENCH_CHAT_PARTS=proxy,transports picks the parts.
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
from typing import Any

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


# ---------------------------------------------------------------------------------------------- transports
# The chat upstream's HTTP client measured alone: each candidate, in this process, sends the benchmark's chat
# request to the simulator (its own process) and reads the answer piece by piece as the chat provider does.
# CPU per request is this process's CPU time (time.process_time: user + system, all threads) over the measured
# requests; the simulator's CPU is not in it. Rounds interleave the candidates (A/B/C, B/C/A, ...) so that the
# neighbours' load falls on all of them alike; figures are medians over rounds with their spread (min-max).
TRANSPORT_ROUNDS = int(os.environ.get("QG_BENCH_TRANSPORT_ROUNDS", "5"))
TRANSPORT_N_SEQ = int(os.environ.get("QG_BENCH_TRANSPORT_N_SEQ", "400"))
TRANSPORT_N_CONC = int(os.environ.get("QG_BENCH_TRANSPORT_N_CONC", "1600"))
#: a git revision whose http1.py to measure too, as "http1@REV" (e.g. before a change to the pool)
TRANSPORT_BASELINE = os.environ.get("QG_BENCH_TRANSPORT_BASELINE", "")
HTTP1_PATH = "qwen_gateway/providers/dashscope/http1.py"


class Candidate:
    """One HTTP client: ``open`` before a run, ``one(stream)`` per request (the whole body read), ``close``."""

    name = ""

    async def open(self, url: str, headers: dict[str, str], body: dict[str, bytes]) -> None:
        raise NotImplementedError

    async def one(self, stream: bool) -> int:
        """One request; the number of body bytes read."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class AiohttpCandidate(Candidate):
    """aiohttp's client (C parser), tuned: one session and connector, no cookie jar, headers prepared once."""

    name = "aiohttp"

    async def open(self, url: str, headers: dict[str, str], body: dict[str, bytes]) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._url = aiohttp.client.URL(url)
        self._headers = headers
        self._body = body
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            timeout=self._timeout,
        )

    async def one(self, stream: bool) -> int:
        n = 0
        async with self._session.post(
            self._url, data=self._body[str(stream)], headers=self._headers
        ) as resp:
            if resp.status != 200:
                raise BadAnswer(f"HTTP {resp.status}")
            while data := await resp.content.readany():
                n += len(data)
        return n

    async def close(self) -> None:
        await self._session.close()


class HttpxCandidate(Candidate):
    """httpx tuned: one client, no environment lookups, prepared headers, a request built per call."""

    name = "httpx"

    async def open(self, url: str, headers: dict[str, str], body: dict[str, bytes]) -> None:
        self._client = httpx.AsyncClient(
            http1=True,
            http2=False,
            trust_env=False,
            timeout=httpx.Timeout(connect=10, read=60, write=30, pool=10),
            limits=httpx.Limits(
                max_connections=512, max_keepalive_connections=64, keepalive_expiry=30
            ),
        )
        self._url = httpx.URL(url)
        self._headers = list(headers.items())
        self._body = body

    async def one(self, stream: bool) -> int:
        request = self._client.build_request(
            "POST", self._url, content=self._body[str(stream)], headers=self._headers
        )
        response = await self._client.send(request, stream=True)
        n = 0
        try:
            if response.status_code != 200:
                raise BadAnswer(f"HTTP {response.status_code}")
            async for data in response.aiter_raw():
                n += len(data)
        finally:
            await response.aclose()
        return n

    async def close(self) -> None:
        await self._client.aclose()


class Http1Candidate(Candidate):
    """The gateway's own keep-alive pool (``Http1Pool`` of ``providers/dashscope/http1.py``)."""

    def __init__(self, module: Any, name: str = "http1 (ours)") -> None:
        self._m = module
        self.name = name

    async def open(self, url: str, headers: dict[str, str], body: dict[str, bytes]) -> None:
        from qwen_gateway.providers.dashscope.policy import Timeouts

        self._pool = self._m.Http1Pool()
        self._endpoint = self._m.Endpoint.parse(url)
        self._headers = self._m.RequestHeaders(headers)
        self._timeouts = Timeouts(connect=10, read=60, write=30)
        self._body = body

    async def one(self, stream: bool) -> int:
        response = await self._pool.request(
            self._endpoint, "POST", self._headers, self._body[str(stream)], self._timeouts
        )
        n = 0
        try:
            if response.status != 200:
                raise BadAnswer(f"HTTP {response.status}")
            while data := await response.receive():
                n += len(data)
        finally:
            await response.aclose()
        return n

    async def close(self) -> None:
        await self._pool.aclose()


def http1_at(rev: str) -> Any | None:
    """The pool's module as it was at git revision ``rev`` (None without git or that revision)."""
    import importlib.util

    path = HTTP1_PATH
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    source = source.replace(
        "from .policy import Timeouts",
        "from qwen_gateway.providers.dashscope.policy import Timeouts",
    )
    source = source.replace(
        "from . import errors", "from qwen_gateway.providers.dashscope import errors"
    )
    name = f"http1_at_{rev}"
    file = Path(tempfile.mkdtemp(prefix="qg-bench-http1-")) / f"{name}.py"
    file.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class TransportRun:
    p50: float  # ms
    p99: float  # ms
    cpu_us: float  # CPU time of this process per request, microseconds


async def transport_run(
    cand: Candidate,
    url: str,
    headers: dict[str, str],
    body: dict[str, bytes],
    stream: bool,
    conc: int,
    n: int,
) -> TransportRun:
    await cand.open(url, headers, body)
    try:
        for _ in range(WARMUP):
            await cand.one(stream)
        # the connections of c workers exist before timing starts
        await asyncio.gather(*(cand.one(stream) for _ in range(conc)))
        lat: list[float] = []
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                size = await cand.one(stream)
                lat.append(time.perf_counter() - t0)
                if size < 100:
                    raise BadAnswer(f"short answer ({size} bytes)")

        cpu0 = time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(conc):
                tg.create_task(worker())
        cpu = time.process_time() - cpu0
    finally:
        await cand.close()
    return TransportRun(percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, cpu / n * 1e6)


def transports_main() -> None:
    """Compare the candidate clients of the chat upstream (see the comment above ``TRANSPORT_ROUNDS``)."""
    import statistics

    from qwen_gateway.providers.dashscope import http1

    candidates: list[Candidate] = [Http1Candidate(http1)]
    if TRANSPORT_BASELINE:
        module = http1_at(TRANSPORT_BASELINE)
        if module is not None:
            candidates.append(Http1Candidate(module, f"http1@{TRANSPORT_BASELINE}"))
        else:
            print(f"(no {HTTP1_PATH} at {TRANSPORT_BASELINE} in this checkout: skipped)")
    try:
        import aiohttp  # noqa: F401  (a benchmark-only comparison: not a dependency of the gateway)

        candidates.append(AiohttpCandidate())
    except ImportError:
        print("(aiohttp is not installed: `.venv/bin/pip install aiohttp` to compare it)")
    candidates.append(HttpxCandidate())
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-transport-"))
    sim_port = free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    exe = str(VENV_BIN / "qwen-gateway")
    sim_cmd = [exe, "simulate", "--host", "127.0.0.1", "--port", str(sim_port)]
    url = f"{sim}/compatible-mode/v1/chat/completions"
    headers = {
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
        "Authorization": f"Bearer {UPSTREAM_KEY}",
    }
    body = {
        str(s): json.dumps({"model": "qwen-plus", "messages": PROMPT, "stream": s}).encode()
        for s in (False, True)
    }
    runs: dict[tuple[str, bool, int], list[TransportRun]] = {}
    cases = [
        (False, 1, TRANSPORT_N_SEQ),
        (True, 1, TRANSPORT_N_SEQ),
        (False, 16, TRANSPORT_N_CONC),
        (True, 16, TRANSPORT_N_CONC),
    ]
    with child([*sim_cmd, "--api-key", UPSTREAM_KEY], log=tmp / "sim.log"):
        wait_http(f"{sim}/health", ok=(200, 404))
        for r in range(TRANSPORT_ROUNDS):
            order = candidates[r % len(candidates) :] + candidates[: r % len(candidates)]
            for stream, conc, n in cases:
                for cand in order:
                    result = run_sync(transport_run(cand, url, headers, body, stream, conc, n))  # type: ignore[arg-type]
                    runs.setdefault((cand.name, stream, conc), []).append(result)
            print(f"(round {r + 1}/{TRANSPORT_ROUNDS} done)", flush=True)

    def fmt(values: list[float], digits: int) -> str:
        med = statistics.median(values)
        return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    print(
        f"\nchat upstream client alone ({machine()}; {TRANSPORT_ROUNDS} interleaved rounds; per round"
        f" {TRANSPORT_N_SEQ} requests at c=1, {TRANSPORT_N_CONC} at c=16; median (min-max) over rounds)"
    )
    print(f"{'client':<18} {'mode':<7} {'c':>3} {'p50 ms':>20} {'p99 ms':>20} {'cpu/req us':>20}")
    out: dict[str, Any] = {}
    for stream, conc, _ in cases:
        for cand in candidates:
            rs = runs[(cand.name, stream, conc)]
            mode = "stream" if stream else "json"
            print(
                f"{cand.name:<18} {mode:<7} {conc:>3} {fmt([x.p50 for x in rs], 3):>20}"
                f" {fmt([x.p99 for x in rs], 3):>20} {fmt([x.cpu_us for x in rs], 0):>20}"
            )
            out[f"{cand.name}|{mode}|c{conc}"] = [vars(x) for x in rs]
    (tmp / "transports.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"(raw figures: {tmp / 'transports.json'})")


def proxy_main() -> None:
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


def main() -> None:
    parts = os.environ.get("QG_BENCH_CHAT_PARTS", "proxy,transports").split(",")
    if "proxy" in parts:
        proxy_main()
    if "transports" in parts:
        transports_main()


if __name__ == "__main__":
    main()
