"""Several processes, one ``PROMETHEUS_MULTIPROC_DIR``: whichever answers ``GET /metrics`` reports them all.

Two ``qwen-gateway serve`` processes (keyless, each with its in-process simulator), run as a user runs them, share
one metrics directory; requests to each are counted in the scrape of either.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qwen_gateway.config import ConfigError
from qwen_gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway_process(tmp_path: Path, name: str, metrics_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "QG_DATA_DIR": str(tmp_path / name),
        "QG_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwen_gateway", "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                httpx.get(f"{base}/not-a-route", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_two_processes_one_metrics_directory(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with (
        gateway_process(tmp_path, "a", metrics_dir) as a,
        gateway_process(tmp_path, "b", metrics_dir) as b,
    ):
        assert httpx.get(f"{a}/health", timeout=10).status_code == 200
        for _ in range(2):
            assert httpx.get(f"{b}/health", timeout=10).status_code == 200
        scrapes = [httpx.get(f"{base}/metrics", timeout=10) for base in (a, b)]
        for r in scrapes:
            assert r.status_code == 200  # open keyless mode on loopback
            assert count(r.text, "qg_http_requests_total", route="/health", status="200") == 3
            assert count(r.text, "qg_http_requests_total", route="unmatched", status="404") == 2
        # one file per process and kind of value: both processes wrote into the directory
        assert len({p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")}) == 2


def test_a_directory_set_too_late_is_refused() -> None:
    """This test process imported prometheus_client without the variable: values would stay per process."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir="/tmp/anywhere")
