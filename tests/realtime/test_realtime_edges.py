"""``/v1/realtime`` at its edges: bad events answered with OpenAI's error shape and the client's ``event_id`` (the
connection kept), the handshake's auth (header, browser subprotocol, refusal), models, the recogniser chosen by
``transcription.model``, and a client that leaves mid-answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qwen_gateway.simulator import Fault, SimulatorConfig
from tests.realtime.harness import VALIDATOR, realtime, silence, speech
from tests.voice_ws.conftest import GATEWAY_KEY, UPSTREAM_KEY, gateway

ANSWER = "好的。"


async def test_bad_events_get_errors_with_the_client_event_id_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        bad = [
            ("not json", "invalid_json", None),
            (json.dumps({"type": "nope", "event_id": "e1"}), "unknown_event", "e1"),
            (
                json.dumps({"type": "conversation.item.delete", "event_id": "e2"}),
                "invalid_message",
                "e2",
            ),
            (
                json.dumps(
                    {"type": "conversation.item.delete", "item_id": "item_x", "event_id": "e3"}
                ),
                "item_not_found",
                "e3",
            ),
            (
                json.dumps(
                    {
                        "type": "input_audio_buffer.append",
                        "audio": "!!not base64!!",
                        "event_id": "e4",
                    }
                ),
                "invalid_base64",
                "e4",
            ),
            (
                json.dumps(
                    {
                        "type": "session.update",
                        "event_id": "e5",
                        "session": {
                            "audio": {"output": {"format": {"type": "audio/pcma", "rate": 24000}}}
                        },
                    }
                ),
                "invalid_value",
                "e5",
            ),
            (
                json.dumps(
                    {"type": "input_image_buffer.append", "image": "aGk=", "event_id": "e6"}
                ),
                "unsupported_event",
                "e6",
            ),
            (
                json.dumps(
                    {"type": "session.update", "event_id": "e7", "session": {"x": [[[[[[1]]]]]]}}
                ).replace("[[[[[[1]]]]]]", "[" * 10000 + "]" * 10000),
                "invalid_message",
                None,
            ),
        ]
        for frame, code, event_id in bad:
            await s.conn.send_raw(frame)
            (error,) = s.of("error", await s.until("error"))
            assert error["error"]["code"] == code, (frame[:80], error)
            assert error["error"]["event_id"] == event_id
            assert error["error"]["type"] == "invalid_request_error"
            s.events.clear()
        # still connected, still answering
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        assert s.of("response.done", events)[0]["response"]["status"] == "completed"
        # a second response.create while one runs is refused
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "again"}],
            }
        )
        await s.conn.response.create()
        await s.conn.response.create(event_id="e8")
        events = await s.until("response.done")
        (error,) = s.of("error", events)
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "e8"


async def test_a_wrong_key_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        url = gw.ws_url("/v1/realtime", model="qwen-plus")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"Authorization": "Bearer wrong"}):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as no_key:
            async with connect(url):
                pass
        assert no_key.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as wrong_subprotocol:
            async with connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]):  # type: ignore[list-item]
                pass
        assert wrong_subprotocol.value.response.status_code == 401


async def test_the_browser_subprotocol_carries_the_key(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        url = gw.ws_url("/v1/realtime", model="qwen-plus")
        offered = ["realtime", f"openai-insecure-api-key.{GATEWAY_KEY}"]
        async with connect(url, subprotocols=offered) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            first = json.loads(await ws.recv())
            VALIDATOR.validate(first)
            assert first["type"] == "session.created"
            assert first["session"]["model"] == "qwen-plus"


async def test_models_that_cannot_be_a_realtime_session_get_400(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        for model in ("qwen3-asr-flash-realtime", "cosyvoice-v2", "bad model!"):
            url = gw.ws_url("/v1/realtime", model=model)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    url, additional_headers={"Authorization": f"Bearer {GATEWAY_KEY}"}
                ):
                    pass
            assert refused.value.response.status_code == 400
            body = json.loads(refused.value.response.body or b"{}")
            assert body["error"]["param"] == "model"


async def test_the_transcription_model_picks_the_recogniser(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        for model, event_id in (("whisper-1", "t1"), ("paraformer-v2", "t2")):
            await s.conn.session.update(
                session={
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"model": model}}},
                },
                event_id=event_id,
            )
            (error,) = s.of("error", await s.until("error"))
            assert error["error"]["param"] == "session.audio.input.transcription.model"
            assert error["error"]["event_id"] == event_id
        await s.conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "qwen3-asr-flash-realtime"}}},
            }
        )
        updated = s.of("session.updated", await s.until("session.updated"))[0]["session"]
        assert updated["audio"]["input"]["transcription"]["model"] == "qwen3-asr-flash-realtime"
        before = len(gw.sim.log.realtime_asr_sessions)
        await s.send_audio(speech() + silence(1.2))
        events = await s.until("response.done")
        assert s.of("conversation.item.input_audio_transcription.completed", events)[0][
            "transcript"
        ]
        assert len(gw.sim.log.realtime_asr_sessions) == before + 1
        # an 8 kHz model gets the utterance at 8 kHz (the simulator refuses any other rate for it)
        await s.conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "paraformer-realtime-8k-v2"}}},
            }
        )
        await s.until("session.updated")
        await s.send_audio(speech() + silence(1.2))
        events = await s.until("conversation.item.done")
        assert not s.of("conversation.item.input_audio_transcription.failed", events)
        (completed,) = s.of("conversation.item.input_audio_transcription.completed", events)
        assert completed["transcript"]
        assert gw.sim.log.asr_sessions[-1].model == "paraformer-realtime-8k-v2"


async def test_a_client_leaving_mid_answer_closes_every_upstream(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=1.0)
    async with gateway(tmp_path, config) as gw:
        gw.sim.set_reply("这是一个很长的回答。" * 20)
        async with realtime(gw, extra_query={"conversation_id": "conv-rt-gone"}) as s:
            await s.conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "讲"}],
                }
            )
            await s.conn.response.create()
            await s.until("response.output_audio.delta")
        await gw.sim.wait_closed(timeout=5)
        for _ in range(100):
            tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("realtime-")]
            if not tasks:
                break
            await asyncio.sleep(0.02)
        assert not tasks
        await gw.services.storage.outbox.drained()
        (row,) = await gw.services.storage.history.conversation(
            "conv-rt-gone", owner=gw.services.keys.owner(GATEWAY_KEY)
        )
        assert row.status == "interrupted" and row.error_code == "client_gone"
        assert row.user_content == "讲" and row.channel == "realtime"


async def test_a_failed_recognition_is_reported_and_the_next_turn_works(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        gw.sim.faults.add(Fault.task_failed("asr", after=0, code="InternalError"))
        await s.send_audio(speech() + silence(1.2))
        events = await s.until("conversation.item.input_audio_transcription.failed")
        (failed,) = s.of("conversation.item.input_audio_transcription.failed", events)
        assert failed["item_id"] == s.of("input_audio_buffer.committed", events)[0]["item_id"]
        assert failed["error"]["code"] == "upstream_error"
        done = await s.until("conversation.item.done")
        assert done[-1]["item"]["content"][0]["transcript"] is None
        # nothing was heard: no answer; the next utterance is answered
        await s.send_audio(speech() + silence(1.2))
        events = await s.until("response.done")
        assert len(s.of("response.created")) == 1
        assert s.of("response.done", events)[0]["response"]["status"] == "completed"


async def test_a_foreign_page_cannot_open_a_session(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        url = gw.ws_url("/v1/realtime", model="qwen-plus")
        offered = ["realtime", f"openai-insecure-api-key.{GATEWAY_KEY}"]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=offered, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "origin_not_allowed"


async def test_an_unknown_chat_model_fails_its_response_and_closes_the_session(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw, realtime(gw, model="no-such-model") as s:
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        (error,) = s.of("error", events)
        assert error["error"]["code"] == "model_not_found" and error["error"]["param"] == "model"
        response = s.of("response.done", events)[0]["response"]
        assert response["status"] == "failed"
        assert response["status_details"]["error"]["code"] == "model_not_found"
        assert gw.sim.log.chat_requests[-1].body["model"] == "no-such-model"
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await s.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
