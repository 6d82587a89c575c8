"""``GET /metrics``: every metric moves after a chat call and voice turns; who may read it; the
``X-Gateway-Overhead-Ms`` header."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from qwen_gateway.metrics import TURN_STAGES
from qwen_gateway.simulator import Fault, SimulatorConfig

from .conftest import AUTH, UPSTREAM_KEY, client, gateway, packets, wav_bytes

LONG_ANSWER = "".join(f"这是第{i}句比较长的回答内容，用来测试打断。" for i in range(1, 30))


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (fails when there is none)."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert found, f"no sample {name} {labels}"
    return sum(found)


async def scrape(http: httpx.AsyncClient, **headers: str) -> str:
    r = await http.get("/metrics", headers=headers or AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_every_metric_moves_after_chat_and_voice_turns(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=80, tts_realtime_factor=0.3)
    async with (
        gateway(tmp_path, config) as gw,
        httpx.AsyncClient(base_url=gw.base_url, headers=AUTH, timeout=20) as http,
    ):
        # Chat: one non-streamed call retried once after a 503, one streamed call, one refused request.
        gw.sim.set_reply("好的。")
        gw.sim.faults.add(Fault.http_error(503, times=1))
        body = {"messages": [{"role": "user", "content": "你好"}]}
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert float(r.headers["X-Gateway-Overhead-Ms"]) >= 0
        r = await http.post("/v1/chat/completions", json={**body, "stream": True})
        assert r.status_code == 200 and "[DONE]" in r.text
        assert float(r.headers["X-Gateway-Overhead-Ms"]) >= 0
        r = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "x"})
        assert r.status_code == 401

        # Voice: a turn cut short by a new utterance, the new turn to its end, then an unreadable upload.
        first, second = wav_bytes(0.4, seed=1), wav_bytes(0.4, seed=2)
        gw.sim.register_transcript(first, "讲个很长的故事")
        gw.sim.register_transcript(second, "停")
        gw.sim.set_reply(
            lambda b: LONG_ANSWER if "故事" in b["messages"][-1]["content"] else "好的。"
        )
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(first))
            await c.until("audio_stream:data")
            await c.send_all(packets(second))
            await c.until("audio_complete")
            await c.send_all(packets(b"\x1aE\xdf\xa3" + bytes(5000)))  # WebM: a typed error
            await c.until("audio_complete")
            assert [e["error"]["code"] for e in c.events if "error" in e] == [
                "unsupported_audio_format"
            ]
        with pytest.raises(InvalidStatus):  # a handshake without a key: 401 instead of the upgrade
            async with client(gw, headers={}):
                pass
        gw.services.metrics.quota_refused("rpm")  # what the quota code calls
        await gw.services.storage.outbox.drained()
        await asyncio.sleep(0.25)  # the sampler's next wake-ups (loop lag, backlog gauge)

        text = await scrape(http)
        chat = "/v1/chat/completions"
        assert value(text, "qg_http_requests_total", route=chat, status="200") == 2
        assert value(text, "qg_http_requests_total", route=chat, status="401") == 1
        assert value(text, "qg_http_request_duration_seconds_count", route=chat) == 3
        assert value(text, "qg_http_gateway_overhead_seconds_count", route=chat) == 3
        assert value(text, "qg_errors_total", source="http", code="invalid_api_key") == 2
        assert value(text, "qg_errors_total", source="ws", code="unsupported_audio_format") == 1
        assert value(text, "qg_ws_connections_total", endpoint="audio") == 1
        assert value(text, "qg_ws_connections_active", endpoint="audio") == 0
        assert value(text, "qg_voice_turns_active", endpoint="audio") == 0
        assert value(text, "qg_voice_turns_total", endpoint="audio", outcome="cancelled") == 1
        assert value(text, "qg_voice_turns_total", endpoint="audio", outcome="completed") == 2
        assert value(text, "qg_voice_barge_ins_total", endpoint="audio") == 1
        for stage in TURN_STAGES:
            count = value(text, "qg_voice_turn_stage_seconds_count", endpoint="audio", stage=stage)
            assert count >= 1, stage
        assert value(text, "qg_voice_turn_gateway_seconds_count", endpoint="audio") >= 1
        ok = {"provider": "dashscope", "outcome": "ok"}
        assert value(text, "qg_upstream_calls_total", service="chat", protocol="http", **ok) == 1
        assert value(text, "qg_upstream_calls_total", service="chat", protocol="sse", **ok) >= 2
        assert value(text, "qg_upstream_calls_total", service="recognition", **ok) >= 2
        assert value(text, "qg_upstream_calls_total", service="synthesis", **ok) >= 1
        assert (
            value(text, "qg_upstream_calls_total", outcome="cancelled") >= 1
        )  # the barged-in turn
        assert value(text, "qg_upstream_retries_total", operation="chat completion") == 1
        assert value(text, "qg_quota_refusals_total", limit="rpm") == 1
        assert value(text, "qg_outbox_drain_lag_seconds_count") >= 4  # 2 chats, 2 turns
        assert value(text, "qg_outbox_backlog") == 0
        assert value(text, "qg_event_loop_lag_seconds_count") >= 1


async def test_who_may_read_the_metrics(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, metrics_token="mt-secret-token") as gw,
        httpx.AsyncClient(base_url=gw.base_url) as http,
    ):
        assert (await http.get("/metrics")).status_code == 401
        assert (
            await http.get("/metrics", headers={"Authorization": "Bearer no"})
        ).status_code == 401
        await scrape(http, Authorization="Bearer mt-secret-token")
        await scrape(http, **AUTH)  # a gateway key


async def test_open_keyless_mode_serves_metrics_on_loopback_only(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, api_keys=()) as gw,
        httpx.AsyncClient(base_url=gw.base_url) as http,
    ):
        await scrape(http, Accept="text/plain")
        # The Host check of open mode applies (DNS rebinding).
        r = await http.get("/metrics", headers={"Host": "evil.example"})
        assert r.status_code == 403


async def test_pass_through_mode_needs_the_metrics_token(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, api_keys=(), key_passthrough=True, metrics_token="mt-2") as gw,
        httpx.AsyncClient(base_url=gw.base_url) as http,
    ):
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
        assert r.status_code == 401
        assert json.loads(r.text)["error"]["code"] == "invalid_api_key"
        await scrape(http, Authorization="Bearer mt-2")


async def test_metrics_off_measures_nothing(tmp_path: Path) -> None:
    async with (
        gateway(tmp_path, metrics=False) as gw,
        httpx.AsyncClient(base_url=gw.base_url, headers=AUTH) as http,
    ):
        assert (await http.get("/metrics")).status_code == 404
        r = await http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "你好"}]}
        )
        assert r.status_code == 200 and "X-Gateway-Overhead-Ms" not in r.headers
