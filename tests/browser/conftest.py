"""Browser tests: the gateway as a subprocess (simulated upstream, one gateway key) and headless Chromium.

Chromium is Debian's (``QG_CHROMIUM``, default ``/usr/bin/chromium``), driven by Playwright for Python without
any browser download. Its fake media devices feed ``assets/question.wav`` (a spoken question) to the pages'
microphone. Screenshots go to ``test-artifacts/browser/`` (``QG_TEST_ARTIFACTS`` to move it). Under CI a
missing browser fails the tests; elsewhere it skips them with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from .support import GATEWAY_KEY, QUESTION_WAV, REPO, Gateway, new_context

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

START_TIMEOUT = 60.0

#: Flags every run of Chromium gets (the brief's, plus fake media and autoplay for unattended runs).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    f"--use-file-for-fake-audio-capture={QUESTION_WAV}",
    "--autoplay-policy=no-user-gesture-required",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing browser is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and the gateway's log go."""
    out = Path(os.environ.get("QG_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """The environment without any gateway or upstream setting (the command line says everything)."""
    from dataclasses import fields

    from qwen_gateway.config import Settings

    names = {f.metadata.get("env") for f in fields(Settings)} | {"FFMPEG_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("QG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["QG_SIMULATOR_TTS_RTF"] = (
        "0.2"  # simulated speech 5x faster than real time: a quicker suite
    )
    return env


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Gateway]:
    """``qwen-gateway serve --simulate`` on a free loopback port with a temporary data dir and one key.

    With ``QG_BROWSER_GATEWAY=<base URL>`` (and ``QG_BROWSER_KEY``) the pages are tested against that running
    gateway instead.
    """
    external = os.environ.get("QG_BROWSER_GATEWAY")
    if external:
        gw = Gateway(
            base_url=external.rstrip("/"),
            key=os.environ.get("QG_BROWSER_KEY", ""),
            log_path=artifacts / "gateway.log",
            proc=None,
        )
        _wait_healthy(gw)
        yield gw
        return
    data_dir = tmp_path_factory.mktemp("gateway-data")
    port = _free_port()
    log_path = artifacts / "gateway.log"
    cmd = [
        sys.executable,
        "-m",
        "qwen_gateway",
        "serve",
        "--simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--api-key",
        GATEWAY_KEY,
        "--env-file",
        "",
        "--log-level",
        "WARNING",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
    gw = Gateway(base_url=f"http://127.0.0.1:{port}", key=GATEWAY_KEY, log_path=log_path, proc=proc)
    try:
        _wait_healthy(gw)
        yield gw
    finally:
        _stop(proc)


def _wait_healthy(gw: Gateway) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if gw.proc is not None and gw.proc.poll() is not None:
            pytest.fail(
                f"the gateway exited with {gw.proc.poll()} at start:\n{gw.log_tail()}",
                pytrace=False,
            )
        try:
            resp = httpx.get(f"{gw.base_url}/health", timeout=2.0)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    pytest.fail(f"the gateway did not become healthy ({last}):\n{gw.log_tail()}", pytrace=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("QG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        _unavailable(f"no Chromium at {path} (scripts/browser.sh installs it; or set QG_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    """One headless Chromium per test module (each test gets its own context: a fresh profile).

    Module scope, not session: Playwright's sync API keeps an event loop running in this thread while it
    is started, and pytest-asyncio cannot run async tests then; it must be stopped before other modules run.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (scripts/browser.sh installs it)")
        raise
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser, gateway: Gateway) -> Iterator[BrowserContext]:
    """A fresh profile that knows the right gateway key."""
    ctx = new_context(browser, gateway, gateway.key)
    try:
        yield ctx
    finally:
        with contextlib.suppress(Exception):
            ctx.close()
