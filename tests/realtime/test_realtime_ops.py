"""``/v1/realtime`` in operation: the key's session lease and daily quotas, metrics with the ``realtime`` label, and
the server's drain."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from qwen_gateway.lifecycle import Lifecycle
from qwen_gateway.simulator import SimulatorConfig
from tests.realtime.harness import VALIDATOR, realtime, silence, speech
from tests.voice_ws.conftest import AUTH, UPSTREAM_KEY, gateway

ANSWER = "今天是晴天。"


def value(text: str, name: str, **labels: str) -> float:
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert found, f"no sample {name} {labels}"
    return sum(found)


async def test_sessions_over_the_key_limit_are_refused_and_closed(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_sessions=1) as gw, realtime(gw):
        url = gw.ws_url("/v1/realtime", model="qwen-plus")
        async with connect(url, additional_headers=AUTH) as second:
            event = json.loads(await second.recv())
            VALIDATOR.validate(event)
            assert event["type"] == "error" and event["error"]["code"] == "rate_limit_exceeded"
            with pytest.raises(ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_a_response_over_the_daily_token_quota_is_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_tokens_per_day=5) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("rate_limits.updated")
        assert s.of("response.done", events)[0]["response"]["usage"]["total_tokens"] > 5
        (limits,) = s.of("rate_limits.updated", events)
        assert limits["rate_limits"][0]["name"] == "tokens"
        assert limits["rate_limits"][0]["limit"] == 5
        await gw.services.quotas.flush()
        await s.conn.response.create(event_id="evt_over")
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "insufficient_quota"
        assert error["error"]["type"] == "insufficient_quota"
        assert "response.created" not in s.types(s.events[len(events) :])


async def test_metrics_count_realtime_sessions_and_turns(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw) as s:
            await s.send_audio(speech() + silence(1.2))
            await s.until("response.done")
            async with httpx.AsyncClient(base_url=gw.base_url) as http:
                text = (await http.get("/metrics", headers=AUTH)).text
        assert value(text, "qg_ws_connections_total", endpoint="realtime") == 1
        assert value(text, "qg_ws_connections_active", endpoint="realtime") == 1
        assert value(text, "qg_voice_turns_total", endpoint="realtime", outcome="completed") == 1
        for stage in ("recognition", "first_token", "first_tts_audio", "first_audio_sent", "total"):
            assert (
                value(text, "qg_voice_turn_stage_seconds_count", endpoint="realtime", stage=stage)
                == 1
            ), stage
        assert value(text, "qg_voice_turn_gateway_seconds_count", endpoint="realtime") == 1


async def test_an_idle_session_is_closed_when_the_server_drains(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        life: Lifecycle = gw.app.config["QG_LIFECYCLE"]
        life.begin_drain()
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "shutting_down"
        with pytest.raises(ConnectionClosed) as closed:
            await s.conn.recv_bytes()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_a_busy_session_finishes_its_response_before_the_drain_closes_it(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=1.0)
    async with gateway(tmp_path, config) as gw, realtime(gw) as s:
        gw.sim.set_reply("今天是晴天。适合出门。")
        life: Lifecycle = gw.app.config["QG_LIFECYCLE"]
        life.drain_seconds = 3600
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await s.conn.response.create()
        await s.until("response.output_audio.delta")
        life.begin_drain()
        events = await s.until("error")
        assert s.of("response.done", events)[0]["response"]["status"] == "completed"
        assert s.types(events).index("response.done") < s.types(events).index("error")
        assert s.of("error", events)[0]["error"]["code"] == "shutting_down"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await s.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_a_response_create_right_after_response_done_starts_the_next_response(
    tmp_path: Path,
) -> None:
    """``response.done`` goes out before the response's bookkeeping (history row, rate limits) is over; a client
    that answers it at once gets its next response, not ``conversation_already_has_active_response``."""
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        for n in range(4):
            await s.conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": f"question {n}"}],
                }
            )
            await s.conn.response.create()
            events = await s.until("response.done")
            assert not s.of("error", events), s.of("error", events)
            assert s.of("response.done", events)[0]["response"]["status"] == "completed"
        assert len(s.of("response.created")) == 4


async def test_responses_beyond_the_turn_limit_close_the_connection(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_turns_per_connection=1) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await s.conn.response.create()
        await s.until("response.done")
        await s.conn.response.create()
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "too_many_turns"
        assert len(s.of("response.created")) == 1
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await s.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
