"""HTTP speech synthesis (qwen3-tts-flash, qwen-tts): native SSE events with base64 PCM, or one JSON answer with
a downloadable WAV; the model table, the native error bodies, stream faults."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from qwen_gateway.simulator import Fault, Simulator
from qwen_gateway.simulator.audio import synthesize

from .conftest import AUTH

PATH = "/api/v1/services/aigc/multimodal-generation/generation"
SSE = {**AUTH, "X-DashScope-SSE": "enable"}
TEXT = "你好你好。"


def body(model: str = "qwen3-tts-flash", **source: Any) -> dict[str, Any]:
    return {"model": model, "input": {"text": TEXT, "voice": "Cherry", **source}}


def events(raw: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(fields, data) of each native SSE event: ``id``, ``event``, the ``:HTTP_STATUS/`` comment."""
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        data: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":HTTP_STATUS/"):
                fields["status"] = line.split("/", 1)[1]
            elif line.startswith("data:"):
                data = json.loads(line[5:])
            else:
                key, _, value = line.partition(":")
                fields[key] = value
        out.append((fields, data))
    return out


@pytest.mark.parametrize("model", ["qwen3-tts-flash", "qwen-tts", "qwen3-tts-flash-2025-09-18"])
async def test_stream_of_base64_pcm(sim: Simulator, http: httpx.AsyncClient, model: str) -> None:
    response = await http.post(sim.base_url + PATH, json=body(model), headers=SSE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    parsed = events(response.text)
    assert [f["id"] for f, _ in parsed] == [str(i) for i in range(1, len(parsed) + 1)]
    assert all(f["event"] == "result" and f["status"] == "200" for f, _ in parsed)
    *audio, last = [d for _, d in parsed]
    assert all(d["output"]["finish_reason"] == "null" for d in audio)
    pcm = b"".join(base64.b64decode(d["output"]["audio"]["data"]) for d in audio)
    assert pcm == synthesize(TEXT, 24000)
    assert last["output"]["finish_reason"] == "stop" and last["output"]["audio"]["data"] == ""
    request_id = response.headers["x-request-id"]
    assert {d["request_id"] for _, d in parsed} == {request_id}
    if model == "qwen-tts":
        assert last["usage"]["output_tokens"] == 62  # 1.25 s of audio at 50 tokens a second
    else:
        assert last["usage"] == {"characters": len(TEXT)}
    wav = await http.get(last["output"]["audio"]["url"])
    assert wav.content[:4] == b"RIFF" and wav.content[44:] == pcm
    record = sim.log.http_tts_requests[-1]
    assert record.stream and record.completed and record.audio_bytes == len(pcm)


async def test_without_sse_one_json_answer_with_a_url(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    response = await http.post(sim.base_url + PATH, json=body(), headers=AUTH)
    assert response.status_code == 200
    answer = response.json()
    assert answer["output"]["finish_reason"] == "stop"
    audio = answer["output"]["audio"]
    assert audio["data"] == "" and audio["id"].startswith("audio_") and audio["expires_at"] > 0
    wav = await http.get(audio["url"])
    assert wav.status_code == 200 and wav.content[44:] == synthesize(TEXT, 24000)
    assert int.from_bytes(wav.content[24:28], "little") == 24000


@pytest.mark.parametrize(
    ("payload", "headers", "status", "code"),
    [
        (body(), {}, 401, "InvalidApiKey"),
        (body("cosyvoice-v2"), AUTH, 404, "ModelNotFound"),
        (body("qwen-tts-realtime"), AUTH, 404, "ModelNotFound"),
        (body(text=""), AUTH, 400, "InvalidParameter"),
        (body(sample_rate=16000), AUTH, 400, "InvalidParameter"),
        (body(format="mp3"), AUTH, 400, "InvalidParameter"),
        (body(language_type="Klingon"), AUTH, 400, "InvalidParameter"),
        ({"model": "qwen-tts"}, AUTH, 400, "InvalidParameter"),
    ],
)
async def test_refusals_are_native_error_bodies(
    sim: Simulator,
    http: httpx.AsyncClient,
    payload: dict[str, Any],
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = await http.post(sim.base_url + PATH, json=payload, headers=headers)
    assert response.status_code == status
    answer = response.json()
    assert answer["code"] == code and answer["message"] and answer["request_id"]


async def test_a_stream_error_is_an_error_event(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.stream_error(1, "InternalError", "boom", endpoint="http_tts"))
    response = await http.post(sim.base_url + PATH, json=body(), headers=SSE)
    parsed = events(response.text)
    fields, data = parsed[-1]
    assert (fields["event"], fields["status"]) == ("error", "500")
    assert (data["code"], data["message"]) == ("InternalError", "boom")
    assert len(parsed) == 2  # one audio event went out first
    assert sim.log.http_tts_requests[-1].connection.close_reason == "failed"


async def test_an_injected_http_error(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.faults.add(Fault.http_error(429, code="Throttling.RateQuota", endpoint="http_tts"))
    response = await http.post(sim.base_url + PATH, json=body(), headers=SSE)
    assert response.status_code == 429 and response.json()["code"] == "Throttling.RateQuota"
    response = await http.post(sim.base_url + PATH, json=body(), headers=SSE)
    assert response.status_code == 200
