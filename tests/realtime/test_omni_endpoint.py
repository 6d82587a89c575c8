"""The Omni backend through ``/v1/realtime?model=qwen3-omni-flash-realtime``, driven by the official openai SDK
against the gateway and the simulator's Omni socket: a spoken turn found by Omni's own VAD with audio in G.711,
the history row and the usage it leaves, the connection's end closing the upstream socket; metrics, the daily
token quota, an upstream drop and the drain."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from qwen_gateway.lifecycle import Lifecycle
from qwen_gateway.realtime.server import backend_for
from qwen_gateway.simulator import Fault
from qwen_gateway.voice.convert import G711Decoder, wire_format
from tests.realtime.harness import VALIDATOR, realtime, silence, speech
from tests.realtime.test_realtime_ops import value
from tests.voice_ws.conftest import AUTH, GATEWAY_KEY, gateway

MODEL = "qwen3-omni-flash-realtime"
ANSWER = "今天是晴天，气温二十度。适合出门散步！"


def test_omni_models_pick_the_omni_backend() -> None:
    assert backend_for(MODEL) == "omni"
    assert backend_for("qwen-omni-turbo-realtime-2025-05-08") == "omni"
    assert backend_for("qwen-plus") == backend_for("qwen3-omni-flash") == "cascade"


async def test_a_spoken_omni_turn_through_the_endpoint(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, MODEL, extra_query={"conversation_id": "conv-omni"}) as s:
            created = s.events[0]["session"]
            assert created["model"] == MODEL and created["audio"]["output"]["voice"] == "Cherry"
            await s.conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Answer briefly.",
                    "tools": [{"type": "function", "name": "clock", "parameters": {}}],
                    "audio": {
                        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                        "output": {"format": {"type": "audio/pcmu"}},
                    },
                }
            )
            updated = (await s.until("session.updated"))[-1]["session"]
            assert updated["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            await s.send_audio(silence(0.5) + speech() + silence(1.2))
            events = await s.until("response.done")
        types = s.types(events)
        for kind in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
            "response.output_audio.delta",
            "response.output_audio_transcript.done",
        ):
            assert kind in types, kind
        transcript = "".join(d["delta"] for d in s.of("response.output_audio_transcript.delta"))
        assert transcript == ANSWER
        ulaw = s.audio(events)  # G.711 mu-law, 8 kHz: one byte a sample
        assert len(ulaw) / 8000 > 1.0
        assert any(G711Decoder(wire_format("audio/pcmu")).decode(ulaw))
        (done,) = s.of("response.done", events)
        assert done["response"]["status"] == "completed"
        # what reached DashScope: one Omni session with its own session fields, closed with the connection
        (record,) = gw.sim.log.omni_sessions
        assert record.session["instructions"] == "Answer briefly."
        assert record.session["input_audio_format"] == "pcm16"
        # the endpoint's decoder leaves defaults out (format type, tool type): put back for DashScope
        assert record.session["tools"] == [{"type": "function", "name": "clock", "parameters": {}}]
        await gw.sim.wait_closed("omni")
        # the history row and the usage, as for the cascade
        await gw.services.storage.outbox.drained()
        owner = gw.services.keys.owner(GATEWAY_KEY)
        (row,) = await gw.services.storage.history.conversation("conv-omni", owner=owner)
        assert row.channel == "realtime" and row.model == MODEL
        assert row.assistant_content == ANSWER and row.user_content
        assert (
            row.status == "completed"
            and row.total_tokens == done["response"]["usage"]["total_tokens"]
        )


async def test_omni_turns_are_counted_in_metrics(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, MODEL) as s:
            await s.send_audio(speech() + silence(1.2))
            await s.until("response.done")
            async with httpx.AsyncClient(base_url=gw.base_url) as http:
                text = (await http.get("/metrics", headers=AUTH)).text
        assert value(text, "qg_voice_turns_total", endpoint="realtime", outcome="completed") == 1
        assert value(text, "qg_voice_turns_active", endpoint="realtime") == 0
        for stage in ("first_audio_sent", "total"):
            count = "qg_voice_turn_stage_seconds_count"
            assert value(text, count, endpoint="realtime", stage=stage) == 1, stage
        assert value(text, "qg_voice_turn_gateway_seconds_count", endpoint="realtime") == 1


async def test_over_the_daily_token_quota_an_omni_connection_is_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, limit_tokens_per_day=5) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, MODEL) as s:
            await s.send_audio(speech() + silence(1.2))
            (done,) = s.of("response.done", await s.until("response.done"))
            assert done["response"]["usage"]["total_tokens"] > 5
        await gw.services.quotas.flush()
        url = gw.ws_url("/v1/realtime", model=MODEL)
        async with connect(url, additional_headers=AUTH) as ws:
            error = json.loads(await ws.recv())
            VALIDATOR.validate(error)
            assert error["error"]["code"] == "insufficient_quota"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert len(gw.sim.log.omni_sessions) == 1  # the refused one never reached DashScope


async def test_an_upstream_drop_ends_the_connection(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER * 3)
        gw.sim.faults.add(Fault.drop(2, endpoint="omni"))
        async with realtime(gw, MODEL) as s:
            await s.send_audio(speech() + silence(1.2))
            (error,) = s.of("error", await s.until("error"))
            assert error["error"]["code"] == "upstream_closed"
            with pytest.raises(ConnectionClosed) as closed:
                await s.conn.recv_bytes()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_an_idle_omni_session_is_closed_when_the_server_drains(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw, MODEL) as s:
        life: Lifecycle = gw.app.config["QG_LIFECYCLE"]
        life.begin_drain()
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "shutting_down"
        with pytest.raises(ConnectionClosed) as closed:
            await s.conn.recv_bytes()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await gw.sim.wait_closed("omni")


async def test_after_its_max_turns_an_omni_connection_ends(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_turns_per_connection=1) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, MODEL, extra_query={"conversation_id": "conv-max"}) as s:
            await s.send_audio(speech() + silence(1.2))
            (error,) = s.of("error", await s.until("error"))
            assert error["error"]["code"] == "too_many_turns"
            assert "response.done" in s.types()
            with pytest.raises(ConnectionClosed) as closed:
                await s.conn.recv_bytes()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        await gw.services.storage.outbox.drained()
        owner = gw.services.keys.owner(GATEWAY_KEY)
        assert len(await gw.services.storage.history.conversation("conv-max", owner=owner)) == 1
        await gw.sim.wait_closed("omni")
