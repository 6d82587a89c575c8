"""Fixtures of the simulator tests: a running simulator, an HTTP client, WebSocket helpers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from qwen_gateway.simulator import Simulator, SimulatorConfig

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


def chat_body(content: Any = "你好", **extra: Any) -> dict[str, Any]:
    return {"model": "qwen-plus", "messages": [{"role": "user", "content": content}], **extra}


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            events.append(block[len("data: ") :])
    return events


async def connect(url: str, key: str | None = KEY, **kwargs: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await websockets.connect(url, additional_headers=headers, open_timeout=5, **kwargs)


async def recv_json(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        message = await ws.recv()
    assert isinstance(message, str), f"expected a text frame, got {len(message)} bytes"
    result: dict[str, Any] = json.loads(message)
    return result


async def recv_any(ws: ClientConnection, within: float = 5.0) -> str | bytes:
    async with asyncio.timeout(within):
        return await ws.recv()


def run_task(
    task_id: str,
    *,
    task: str = "asr",
    model: str = "paraformer-realtime-v2",
    parameters: dict[str, Any] | None = None,
    **payload: Any,
) -> str:
    if parameters is None:
        parameters = (
            {"format": "pcm", "sample_rate": 16000}
            if task == "asr"
            else {"voice": "longxiaochun_v2", "format": "pcm", "sample_rate": 16000}
        )
    body = {
        "task_group": "audio",
        "task": task,
        "function": "recognition" if task == "asr" else "SpeechSynthesizer",
        "model": model,
        "parameters": parameters,
        "input": {},
    }
    body.update(payload)
    return json.dumps(
        {
            "header": {"action": "run-task", "task_id": task_id, "streaming": "duplex"},
            "payload": body,
        }
    )


def continue_task(task_id: str, text: str) -> str:
    return json.dumps(
        {
            "header": {"action": "continue-task", "task_id": task_id, "streaming": "duplex"},
            "payload": {"input": {"text": text}},
        }
    )


def finish_task(task_id: str) -> str:
    return json.dumps(
        {
            "header": {"action": "finish-task", "task_id": task_id, "streaming": "duplex"},
            "payload": {"input": {}},
        }
    )


def pcm_tone(seconds: float, rate: int = 16000, seed: int = 1) -> bytes:
    """Distinct, deterministic 16-bit PCM (not silence) of ``seconds``."""
    n = int(seconds * rate)
    return bytes(((i * seed * 7919) >> 3) & 0xFF for i in range(2 * n))
