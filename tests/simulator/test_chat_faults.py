"""Faults on the chat endpoint, and auth."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import AUTH, chat_body, sse_events


async def test_missing_and_bad_keys_get_401(sim: Simulator, http: httpx.AsyncClient) -> None:
    url = sim.env["QWEN_API_CHAT_URL"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic sk-abc"}):
        response = await http.post(url, json=chat_body(), headers=headers)
        assert response.status_code == 401
        error = response.json()
        assert error["error"] == {
            "message": "Incorrect API key provided. For details, see: "
            "https://help.aliyun.com/zh/model-studio/error-code#apikey-error",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        assert error["id"] == f"chatcmpl-{error['request_id']}"
    response = await http.post(url, json=chat_body(), headers={"Authorization": "bearer sk-lower"})
    assert response.status_code == 200


async def test_configured_key_only() -> None:
    async with (
        Simulator(SimulatorConfig(api_key="sk-only")) as sim,
        httpx.AsyncClient(timeout=5) as http,
    ):
        url = sim.env["QWEN_API_CHAT_URL"]
        bad = await http.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-other"})
        good = await http.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-only"})
        assert (bad.status_code, good.status_code) == (401, 200)


async def test_429_k_times_then_success(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.http_error(429, code="limit_requests", times=2, endpoint="chat"))
    url = sim.env["QWEN_API_CHAT_URL"]
    statuses = []
    for _ in range(3):
        response = await http.post(url, json=chat_body(), headers=AUTH)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "limit_requests"
            assert response.json()["error"]["type"] == "limit_requests"
            assert "retry-after" not in response.headers
    assert statuses == [429, 429, 200]
    assert [f.fault.kind for f in sim.faults.fired] == ["http_error", "http_error"]
    assert sim.faults.pending == []


@pytest.mark.parametrize(
    ("status", "code", "message_start"),
    [
        (400, "data_inspection_failed", "Input data may contain inappropriate content."),
        (400, "Arrearage", "Access denied, please make sure your account is in good standing."),
        (401, "invalid_api_key", "Incorrect API key provided."),
        (403, "access_denied", "Access denied."),
        (404, "model_not_found", "The model does not exist"),
        (429, "limit_burst_rate", "Request rate increased too quickly"),
        (429, "insufficient_quota", "You exceeded your current quota"),
        (429, "Throttling.RateQuota", "You have exceeded your current request limit."),
        (500, "internal_error", "An internal error has occured"),
        (503, "ModelUnavailable", "Model is unavailable, please try again later."),
    ],
)
async def test_error_families(
    sim: Simulator, http: httpx.AsyncClient, status: int, code: str, message_start: str
) -> None:
    sim.faults.add(Fault.http_error(status, code=code, retry_after=1.5))
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"].startswith(message_start)
    assert error["code"] in {code, code.lower(), "limit_requests", "model_unavailable"}
    assert error["code"] == error["code"].strip() and set(error) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert response.headers["retry-after"] == "1.5"


async def test_delay_before_first_byte(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.delay(60.0))
    request = asyncio.create_task(
        http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)
    )
    await sim.log.wait_for(lambda: sim.log.chat_requests and sim.faults.fired, timeout=5)
    assert sim.log.chat_requests[0].status == 0  # nothing answered yet
    request.cancel()
    await asyncio.wait([request])
    await sim.wait_closed("chat", timeout=5)
    assert sim.log.chat_requests[0].connection.close_reason == "client"


async def test_stall_forever_until_client_leaves(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.stall(after_chunks=3, seconds=None))
    received: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async with http.stream(
            "POST", sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line)
                    if len(received) == 3:
                        three.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await three.wait()
    assert sim.log.chat_requests[0].events_sent == 3
    assert sim.log.open_connections("chat")
    task.cancel()
    await asyncio.wait([task])
    await sim.wait_closed("chat", timeout=5)
    assert len(received) == 3
    assert sim.log.chat_requests[0].connection.close_reason == "client"


async def test_finite_stall_then_complete(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.stall(after_chunks=2, seconds=0.05))
    response = await http.post(
        sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
    )
    assert sse_events(response.text)[-1] == "[DONE]"


async def test_drop_mid_stream(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.drop(after_chunks=3))
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream(
            "POST", sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
        ) as response:
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
    assert len(lines) == 3
    await sim.wait_closed("chat", timeout=5)
    assert sim.log.chat_requests[0].connection.close_reason == "dropped"


async def test_mid_stream_error_event(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.stream_error(after_chunks=2))
    response = await http.post(
        sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert len(events) == 3 and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "data_inspection_failed"
    assert error["message"] == "Output data may contain inappropriate content."


async def test_malformed_event(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.malformed(after=1))
    response = await http.post(
        sim.env["QWEN_API_CHAT_URL"], json=chat_body(stream=True), headers=AUTH
    )
    events = sse_events(response.text)
    json.loads(events[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(events[1])
    assert events[-1] == "[DONE]"


async def test_non_streaming_drop(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)


async def test_faults_only_hit_their_endpoint(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.http_error(500, endpoint="file_asr"))
    response = await http.post(sim.env["QWEN_API_CHAT_URL"], json=chat_body(), headers=AUTH)
    assert response.status_code == 200
    assert len(sim.faults.pending) == 1
