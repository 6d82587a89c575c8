"""The cascade through ``/v1/realtime``, driven by the official openai SDK against the simulator: a spoken turn found
by server VAD, a manual commit, a text-only answer, barge-in, a tool round trip, G.711 both ways."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import av

from qwen_gateway.simulator import SimulatorConfig
from tests.realtime.harness import Session, realtime, silence, speech
from tests.voice_ws.conftest import GATEWAY_KEY, UPSTREAM_KEY, Gateway, gateway

ANSWER = "今天是晴天，气温二十度。适合出门散步！"


def order(s: Session, events: list[dict[str, object]], *kinds: str) -> None:
    """``kinds`` occur in ``events`` in this order (first occurrence of each)."""
    types = s.types(events)
    positions = [types.index(k) for k in kinds]
    assert positions == sorted(positions), list(zip(kinds, positions, strict=True))


async def history_rows(gw: Gateway, conversation: str) -> list[object]:
    await gw.services.storage.outbox.drained()
    return await gw.services.storage.history.conversation(
        conversation, owner=gw.services.keys.owner(GATEWAY_KEY)
    )


async def test_a_spoken_turn_found_by_server_vad(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, extra_query={"conversation_id": "conv-rt-vad"}) as s:
            await s.send_audio(silence(0.5) + speech() + silence(1.2))
            events = await s.until("response.done")
        order(
            s,
            events,
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_audio_transcript.delta",
            "response.output_audio.delta",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        )
        (started,) = s.of("input_audio_buffer.speech_started", events)
        (stopped,) = s.of("input_audio_buffer.speech_stopped", events)
        (committed,) = s.of("input_audio_buffer.committed", events)
        assert started["item_id"] == stopped["item_id"] == committed["item_id"]
        # speech began after the half second of silence and ended before the trailing one
        assert 300 <= started["audio_start_ms"] <= 700
        assert started["audio_start_ms"] < stopped["audio_end_ms"]
        (completed,) = s.of("conversation.item.input_audio_transcription.completed", events)
        deltas = s.of("conversation.item.input_audio_transcription.delta", events)
        assert completed["transcript"] and completed["item_id"] == committed["item_id"]
        assert "".join(d["delta"] for d in deltas) == completed["transcript"]
        assert completed["usage"]["seconds"] > 2
        # the answer: its text, its audio (24 kHz pcm16 by default), its usage
        (done,) = s.of("response.output_audio_transcript.done", events)
        text = "".join(d["delta"] for d in s.of("response.output_audio_transcript.delta", events))
        assert done["transcript"] == text == ANSWER
        pcm = s.audio(events)
        assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 1.0
        (response_done,) = s.of("response.done", events)
        response = response_done["response"]
        assert response["status"] == "completed" and response["usage"]["total_tokens"] > 0
        (item,) = response["output"]
        assert item["role"] == "assistant" and item["content"][0]["transcript"] == ANSWER
        # the chat model heard what was recognised
        assert gw.sim.log.chat_requests[-1].messages[-1] == {
            "role": "user",
            "content": completed["transcript"],
        }
        (row,) = await history_rows(gw, "conv-rt-vad")
        assert row.channel == "realtime" and row.status == "completed"  # type: ignore[attr-defined]
        assert row.user_content == completed["transcript"]  # type: ignore[attr-defined]
        assert row.assistant_content == ANSWER  # type: ignore[attr-defined]


async def test_manual_commit_then_response_create(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        (updated,) = s.of("session.updated", await s.until("session.updated"))
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await s.send_audio(speech() + silence(0.3))
        await s.conn.input_audio_buffer.commit()
        await s.conn.response.create()
        events = await s.until("response.done")
        assert "input_audio_buffer.speech_started" not in s.types(events)
        order(
            s,
            events,
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_audio.delta",
            "response.done",
        )
        assert s.of("response.done", events)[0]["response"]["status"] == "completed"
        # an empty buffer cannot be committed; the connection stays
        await s.conn.input_audio_buffer.commit(event_id="evt_empty")
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_empty"


async def test_a_typed_question_with_a_text_only_answer(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "简短回答"}
        )
        await s.until("session.updated")
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "天气？"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        text = "".join(d["delta"] for d in s.of("response.output_text.delta", events))
        assert text == ANSWER and s.of("response.output_text.done", events)[0]["text"] == ANSWER
        assert not s.of("response.output_audio.delta", events)
        assert s.of("response.done", events)[0]["response"]["output_modalities"] == ["text"]
        assert gw.sim.log.tts_sessions == []
        request = gw.sim.log.chat_requests[-1]
        assert request.messages == [
            {"role": "system", "content": "简短回答"},
            {"role": "user", "content": "天气？"},
        ]


async def test_barge_in_cancels_the_answer_and_the_new_turn_answers(tmp_path: Path) -> None:
    # TTS at real time: the first answer is still being spoken when the user talks again
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=1.0)
    long_answer = "这是一个很长的回答。" * 20
    async with gateway(tmp_path, config) as gw:
        gw.sim.set_reply(long_answer, times=1)
        async with realtime(gw, extra_query={"conversation_id": "conv-rt-barge"}) as s:
            await s.send_audio(speech() + silence(1.2))
            first = await s.until("response.output_audio.delta")
            while len(s.audio(first)) < 48000:  # a second of the answer was heard
                first.append(await s.recv())
            first_id = s.of("response.created", first)[0]["response"]["id"]
            gw.sim.set_reply(ANSWER)
            await s.send_audio(speech(text="等一下。") + silence(1.2))
            events = await s.until("response.done")
            # the running answer ended at once, cancelled by the new speech
            order(s, events, "input_audio_buffer.speech_started", "response.done")
            (cancelled,) = s.of("response.done", events)
            response = cancelled["response"]
            assert response["id"] == first_id and response["status"] == "cancelled"
            assert response["status_details"]["reason"] == "turn_detected"
            (item,) = response["output"]
            heard = item["content"][0]["transcript"]
            assert item["status"] == "incomplete" and 0 < len(heard) < len(long_answer) / 4
            assert long_answer.startswith(heard)
            # the new turn is answered
            second = await s.until("response.done")
            done = s.of("response.done", second)[0]["response"]
            assert done["status"] == "completed" and done["id"] != first_id
            assert s.of("response.output_audio_transcript.done", second)[0]["transcript"] == ANSWER
        # every upstream of the cancelled answer was closed
        await gw.sim.wait_closed("tts", timeout=5)
        rows = await history_rows(gw, "conv-rt-barge")
        assert [r.status for r in rows] == ["interrupted", "completed"]  # type: ignore[attr-defined]
        assert rows[0].error_code == "turn_detected"  # type: ignore[attr-defined]
        assert rows[0].assistant_content == heard  # type: ignore[attr-defined]
        # the model's next request saw only what was heard
        messages = [m for m in gw.sim.log.chat_requests[-1].messages if m["role"] != "system"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[1] == {"role": "assistant", "content": heard}


async def test_response_cancel_and_truncate(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=1.0)
    async with gateway(tmp_path, config) as gw, realtime(gw) as s:
        gw.sim.set_reply("这是一个很长的回答。" * 20)
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "讲个故事"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.output_audio.delta")
        while len(s.audio(events)) < 2 * 48000:  # two seconds of it
            events.append(await s.recv())
        item_id = s.of("response.output_item.added", events)[0]["item"]["id"]
        await s.conn.response.cancel()
        done = s.of("response.done", await s.until("response.done"))[0]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "client_cancelled"
        sent = done["output"][0]["content"][0]["transcript"]
        assert sent and sent != "这是一个很长的回答。" * 20
        # the client played only half a second of it: the item keeps that much
        await s.conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=500)
        (truncated,) = s.of(
            "conversation.item.truncated", await s.until("conversation.item.truncated")
        )
        assert truncated["audio_end_ms"] == 500
        await s.conn.send({"type": "conversation.item.retrieve", "item_id": item_id})
        (got,) = s.of("conversation.item.retrieved", await s.until("conversation.item.retrieved"))
        cut = got["item"]["content"][0]["transcript"]
        assert sent.startswith(cut) and len(cut) < len(sent)
        # beyond the audio it has: refused, the item unchanged
        await s.conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=60_000, event_id="evt_t"
        )
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["param"] == "audio_end_ms" and error["error"]["event_id"] == "evt_t"
        # nothing to cancel now
        await s.conn.response.cancel(event_id="evt_c")
        (error,) = s.of("error", await s.until("error"))
        assert error["error"]["code"] == "response_cancel_not_active"
        assert error["error"]["event_id"] == "evt_c"


async def test_a_tool_round_trip(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        clock = {
            "type": "function",
            "name": "clock",
            "description": "The time now",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
        }
        await s.conn.session.update(session={"type": "realtime", "tools": [clock]})
        await s.until("session.updated")
        args = json.dumps({"zone": "Asia/Shanghai"})
        gw.sim.set_tool_call("clock", args, text="我看一下时间。")
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "几点了？"}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        request = gw.sim.log.chat_requests[-1]
        assert request.body["tools"][0]["function"]["name"] == "clock"
        (args_done,) = s.of("response.function_call_arguments.done", events)
        assert args_done["name"] == "clock" and json.loads(args_done["arguments"]) == json.loads(
            args
        )
        deltas = s.of("response.function_call_arguments.delta", events)
        assert "".join(d["delta"] for d in deltas) == args
        response = s.of("response.done", events)[0]["response"]
        message, call = response["output"]
        # what was said before the call was spoken
        assert message["content"][0]["transcript"] == "我看一下时间。"
        assert s.audio(events)
        assert call["type"] == "function_call" and call["call_id"] == args_done["call_id"]
        # the client runs the tool and asks for the rest of the answer
        gw.sim.set_reply("现在是上午十点。")
        await s.conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": '{"time": "10:00"}',
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        assert (
            s.of("response.output_audio_transcript.done", events)[0]["transcript"]
            == "现在是上午十点。"
        )
        messages = gw.sim.log.chat_requests[-1].messages
        assert messages[-2]["tool_calls"][0]["id"] == call["call_id"]
        assert messages[-1] == {
            "role": "tool",
            "tool_call_id": call["call_id"],
            "content": '{"time": "10:00"}',
        }


def g711_decode(data: bytes, codec: str) -> int:
    """Samples in ``data`` decoded by FFmpeg (PyAV) as G.711 at 8 kHz."""
    fmt = {"pcm_mulaw": "mulaw", "pcm_alaw": "alaw"}[codec]
    container = av.open(
        io.BytesIO(data), format=fmt, options={"sample_rate": "8000", "channels": "1"}
    )
    with container:
        return sum(frame.samples for frame in container.decode(audio=0))


def g711_encode(pcm24k: bytes, codec: str) -> bytes:
    """24 kHz pcm16 -> 8 kHz G.711 with PyAV."""
    out = io.BytesIO()
    fmt = {"pcm_mulaw": "mulaw", "pcm_alaw": "alaw"}[codec]
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=8000)
        stream.layout = "mono"  # type: ignore[union-attr]
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm24k) // 2)
        frame.planes[0].update(pcm24k)
        frame.sample_rate = 24000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):  # type: ignore[union-attr]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            container.mux(packet)
    return out.getvalue()


async def test_g711_in_and_out(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcma"}},
                },
            }
        )
        updated = s.of("session.updated", await s.until("session.updated"))[0]["session"]
        assert updated["audio"]["output"]["format"]["type"] == "audio/pcma"
        ulaw = g711_encode(silence(0.3) + speech() + silence(1.2), "pcm_mulaw")
        await s.send_audio(ulaw, chunk=800)  # 100 ms of 8 kHz G.711
        events = await s.until("response.done")
        assert s.of("conversation.item.input_audio_transcription.completed", events)[0][
            "transcript"
        ]
        alaw = s.audio(events)
        samples = g711_decode(alaw, "pcm_alaw")
        # one byte a sample at 8 kHz, and as long as the speech TTS made for the answer (a second or more)
        assert samples == len(alaw) and samples / 8000 > 1.0


async def test_beta_session_fields_work_too(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        await s.conn.send(
            {
                "type": "session.update",
                "session": {
                    "modalities": ["text", "audio"],
                    "input_audio_format": "pcm16",
                    "output_audio_format": "g711_ulaw",
                    "turn_detection": None,
                },
            }
        )
        session = s.of("session.updated", await s.until("session.updated"))[0]["session"]
        assert session["audio"]["output"]["format"]["type"] == "audio/pcmu"
        assert session["audio"]["input"]["turn_detection"] is None
        assert session["output_modalities"] == ["audio"]


async def test_a_resumed_conversation_starts_with_its_recent_turns(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        query = {"conversation_id": "conv-rt-resume"}
        async with realtime(gw, extra_query=query) as s:
            await s.conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "天气？"}],
                }
            )
            await s.conn.response.create()
            await s.until("response.done")
        await gw.services.storage.outbox.drained()
        async with realtime(gw, extra_query=query) as s:
            await s.conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "明天呢？"}],
                }
            )
            await s.conn.response.create()
            await s.until("response.done")
        messages = [m for m in gw.sim.log.chat_requests[-1].messages if m["role"] != "system"]
        assert messages == [
            {"role": "user", "content": "天气？"},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "明天呢？"},
        ]
        # another conversation starts empty
        async with realtime(gw) as s:
            await s.conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "你好"}],
                }
            )
            await s.conn.response.create()
            await s.until("response.done")
        messages = [m for m in gw.sim.log.chat_requests[-1].messages if m["role"] != "system"]
        assert messages == [{"role": "user", "content": "你好"}]


async def test_a_user_audio_item_is_recognised_then_answered(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        gw.sim.set_reply(ANSWER)
        audio = base64.b64encode(speech()).decode()
        await s.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": audio}],
            }
        )
        await s.conn.response.create()
        events = await s.until("response.done")
        order(
            s,
            events,
            "conversation.item.added",
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done",
            "response.created",
            "response.done",
        )
        (added,) = s.of("conversation.item.added", events)[:1]
        assert "audio" not in added["item"]["content"][0]  # not echoed
        transcript = s.of("conversation.item.input_audio_transcription.completed", events)[0][
            "transcript"
        ]
        assert transcript
        assert (
            s.of("conversation.item.done", events)[0]["item"]["content"][0]["transcript"]
            == transcript
        )
        assert gw.sim.log.chat_requests[-1].messages[-1] == {"role": "user", "content": transcript}
