"""Chat proxy figures: requests/s and added latency of the gateway over the simulator called directly, at
concurrency 1 and 16, streaming and not; and LiteLLM's proxy doing the same pass-through, side by side.

Every server runs in its own process on loopback (simulator, gateway, LiteLLM); this process is the load
generator. "Added latency" is the gateway's latency minus the direct call's, percentile by percentile.
LiteLLM is installed into its own virtualenv (.bench/litellm-venv, created on first use); set
QG_BENCH_LITELLM=0 to skip it. Figures only, no assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _harness import ROOT, VENV_BIN, child, free_port, percentile, wait_http

LITELLM_VERSION = "1.108.7"
UPSTREAM_KEY = "sk-bench-upstream"
GATEWAY_KEY = "gk-bench"
PROMPT = [{"role": "user", "content": "用一句话介绍你自己。"}]
N_SEQ = int(os.environ.get("QG_BENCH_N_SEQ", "400"))
N_CONC = int(os.environ.get("QG_BENCH_N_CONC", "2000"))


@dataclass
class Result:
    rps: float
    p50: float
    p99: float
    ttfb50: float


async def one(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], stream: bool, model: str
) -> tuple[float, float]:
    body = {"model": model, "messages": PROMPT, "stream": stream}
    start = time.perf_counter()
    if not stream:
        resp = await http.post(url, json=body, headers=headers)
        resp.raise_for_status()
        resp.json()
        t = time.perf_counter() - start
        return t, t
    first = 0.0
    async with http.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for chunk in resp.aiter_raw():
            if not first:
                first = time.perf_counter() - start
            if chunk.endswith(b"data: [DONE]\n\n"):
                break
    return time.perf_counter() - start, first


async def run(
    url: str, headers: dict[str, str], *, stream: bool, concurrency: int, n: int, model: str
) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        for _ in range(min(50, n)):  # warm-up: connections, caches, JITs of the servers
            await one(http, url, headers, stream, model)
        lat: list[float] = []
        ttfb: list[float] = []
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                t, f = await one(http, url, headers, stream, model)
                lat.append(t)
                ttfb.append(f)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        elapsed = time.perf_counter() - start
    return Result(
        n / elapsed,
        percentile(lat, 50) * 1e3,
        percentile(lat, 99) * 1e3,
        percentile(ttfb, 50) * 1e3,
    )


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


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-chat-"))
    sim_port, gw_port, ll_port = free_port(), free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    exe = str(VENV_BIN / "qwen-gateway")
    with child(
        [
            exe,
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            str(sim_port),
            "--api-key",
            UPSTREAM_KEY,
        ],
        log=tmp / "sim.log",
    ):
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
        with child(gw_cmd, env=env, log=tmp / "gateway.log"):
            wait_http(f"http://127.0.0.1:{gw_port}/health")
            targets = {
                "simulator direct": (
                    f"{sim}/compatible-mode/v1/chat/completions",
                    {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                ),
                "qwen-gateway": (
                    f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                    {"Authorization": f"Bearer {GATEWAY_KEY}"},
                ),
            }
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
                ll_env = {
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
                ll_ctx.__enter__()
                try:
                    wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", timeout=180)
                    targets["LiteLLM proxy"] = (
                        f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                        {},
                    )
                except RuntimeError as exc:
                    print(f"(LiteLLM did not start: {exc}; see {tmp / 'litellm.log'})")
            try:
                results: dict[tuple[str, bool, int], Result] = {}
                for stream in (False, True):
                    for conc, n in ((1, N_SEQ), (16, N_CONC)):
                        for name, (url, headers) in targets.items():
                            results[(name, stream, conc)] = asyncio.run(
                                run(
                                    url,
                                    headers,
                                    stream=stream,
                                    concurrency=conc,
                                    n=n,
                                    model="qwen-plus",
                                )
                            )
            finally:
                if ll_ctx is not None:
                    ll_ctx.__exit__(None, None, None)
    print(
        f"\nchat proxy ({os.cpu_count()} cores; {N_SEQ} requests at c=1, {N_CONC} at c=16; latency in ms)"
    )
    print(
        f"{'target':<18} {'mode':<10} {'c':>3} {'req/s':>9} {'p50':>8} {'p99':>8} {'ttfb p50':>9} {'added p50':>10} {'added p99':>10}"
    )
    for stream in (False, True):
        for conc in (1, 16):
            base = results[("simulator direct", stream, conc)]
            for name in targets:
                r = results[(name, stream, conc)]
                added = (
                    ""
                    if name == "simulator direct"
                    else f"{r.p50 - base.p50:10.2f} {r.p99 - base.p99:10.2f}"
                )
                print(
                    f"{name:<18} {'stream' if stream else 'json':<10} {conc:>3} {r.rps:9.0f} {r.p50:8.2f} {r.p99:8.2f} {r.ttfb50:9.2f} {added}"
                )
    for stream in (False, True):
        if ("LiteLLM proxy", stream, 16) in results:
            g = results[("qwen-gateway", stream, 16)].rps
            litellm = results[("LiteLLM proxy", stream, 16)].rps
            print(
                f"gateway / LiteLLM requests/s at c=16 ({'stream' if stream else 'json'}): {g / litellm:.1f}x"
            )
    out = {f"{k[0]}|{'stream' if k[1] else 'json'}|c{k[2]}": vars(v) for k, v in results.items()}
    (tmp / "results.json").write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main()
