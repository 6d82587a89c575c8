"""Sessions on ``/v1/chat/audio``: several turns with memory, barge-in, empty transcripts, formats, streaming
recognition while the upload is still arriving, file-recognition models."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

from qwen_gateway.simulator import SimulatorConfig

from .conftest import (
    GATEWAY_KEY,
    UPSTREAM_KEY,
    client,
    compact,
    gateway,
    packets,
    voice_tasks,
    wav_bytes,
)

LONG_ANSWER = "".join(f"这是第{i}句比较长的回答内容，用来测试打断。" for i in range(1, 40))


def _answer_for(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    return f"你问的是：{user}。我的回答是第{len(body['messages'])}条消息之后的内容。"


async def test_empty_transcript_skips_chat(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, "")
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
        assert compact(c.names()) == [
            "connected",
            "packet_ack*",
            "transcription_started",
            "chat_started",
            "audio_complete",
        ]
        (skip,) = c.bodies("chat_started")
        assert skip["message"] == "跳过对话生成：语音识别失败或结果为空"
        assert "user_message" not in skip
        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_success"] is False and complete["transcription_text"] == ""
        assert complete["chat_success"] is False and complete["tts_success"] is False
        assert complete["oss_uploaded"] is True
        assert not gw.sim.log.chat_requests and not gw.sim.log.tts_sessions


async def test_three_turns_carry_the_conversation(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(_answer_for)
        questions = ["第一个问题", "第二个问题", "第三个问题"]
        uploads = [wav_bytes(0.4, seed=i) for i in range(3)]
        for audio, q in zip(uploads, questions, strict=True):
            gw.sim.register_transcript(audio, q)
        async with client(gw, query={"conversation_id": "conv-three"}) as c:
            await c.recv()
            for audio in uploads:
                await c.send_all(packets(audio))
                await c.until("audio_complete")
        answers = [b["assistant_response"] for b in c.bodies("chat_tts_complete")]
        assert [b["turn_id"] for b in c.bodies("audio_complete")] == [1, 2, 3]
        third = gw.sim.log.chat_requests[2].messages
        assert third[0]["role"] == "system"
        assert third[1:] == [
            {"role": "user", "content": questions[0]},
            {"role": "assistant", "content": answers[0]},
            {"role": "user", "content": questions[1]},
            {"role": "assistant", "content": answers[1]},
            {"role": "user", "content": questions[2]},
        ]
        await gw.services.storage.outbox.drained()
        stored = await gw.services.storage.history.conversation(
            "conv-three", owner=gw.services.keys.owner(GATEWAY_KEY)
        )
        assert [t.user_content for t in stored] == questions
        assert [t.assistant_content for t in stored] == answers
        assert all(t.status == "completed" and t.channel == "audio" for t in stored)
        assert all(t.audio_key and t.recognition_ms is not None for t in stored)


async def test_history_budget_limits_the_context(tmp_path: Path) -> None:
    async with gateway(tmp_path, history_turns=1) as gw:
        gw.sim.set_reply(_answer_for)
        uploads = [wav_bytes(0.3, seed=i) for i in range(3)]
        for i, audio in enumerate(uploads):
            gw.sim.register_transcript(audio, f"问题{i}")
        async with client(gw) as c:
            await c.recv()
            for audio in uploads:
                await c.send_all(packets(audio))
                await c.until("audio_complete")
        third = gw.sim.log.chat_requests[2].messages
        assert [m["content"] for m in third if m["role"] == "user"] == ["问题1", "问题2"]


async def _barge_in(tmp_path: Path, interrupt: str) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=60, tts_realtime_factor=0.5)
    async with gateway(tmp_path, config) as gw:
        first, second = wav_bytes(0.4, seed=1), wav_bytes(0.4, seed=2)
        gw.sim.register_transcript(first, "讲个很长的故事")
        gw.sim.register_transcript(second, "停，换个话题")
        gw.sim.set_reply(
            lambda body: LONG_ANSWER if "故事" in body["messages"][-1]["content"] else "好的。"
        )
        async with client(gw, query={"conversation_id": "conv-barge"}) as c:
            await c.recv()
            await c.send_all(packets(first))
            await c.until("audio_stream:data")  # turn 1 is speaking
            if interrupt == "utterance":
                await c.send_all(packets(second))
            else:
                await c.ws.send(json.dumps({"type": "cancel"}))
            events = await c.until("audio_stream:finished")
            assert events[-1]["audio_stream"]["turn_id"] == 1
            # Turn 1's upstreams are closed at once.
            await gw.sim.wait_closed("tts", timeout=3)
            await gw.sim.wait_closed("chat", timeout=3)
            if interrupt == "cancel":
                await c.send_all(packets(second))
            await c.until("audio_complete")
            # Nothing of turn 1 follows its "finished".
            after = c.events[c.events.index(events[-1]) + 1 :]
            assert all(next(iter(e.values())).get("turn_id") in (2, None) for e in after)
            assert not [b for b in c.bodies("chat_tts_complete") if b["turn_id"] == 1]
        await gw.services.storage.outbox.drained()
        turns = await gw.services.storage.history.conversation(
            "conv-barge", owner=gw.services.keys.owner(GATEWAY_KEY)
        )
        assert [t.status for t in turns] == ["interrupted", "completed"]
        partial = turns[0].assistant_content
        assert partial and LONG_ANSWER.startswith(partial) and partial != LONG_ANSWER
        assert turns[0].error_code == ("barge_in" if interrupt == "utterance" else "client_cancel")
        # The second turn's context holds what was said before the interruption.
        assert {"role": "assistant", "content": partial} in gw.sim.log.chat_requests[1].messages
    assert not voice_tasks()


async def test_barge_in_with_a_new_utterance(tmp_path: Path) -> None:
    await _barge_in(tmp_path, "utterance")


async def test_barge_in_with_cancel(tmp_path: Path) -> None:
    await _barge_in(tmp_path, "cancel")


async def test_recognition_runs_while_the_upload_arrives(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(4.0)
        text = "我想知道明天北京的天气，会不会下雨，需要带伞吗？"
        gw.sim.register_transcript(audio, text)
        upload = packets(audio)
        async with client(gw) as c:
            await c.recv()
            await c.send_all(upload[:-1])
            await c.until("packet_ack")  # at least the first ack
            # Before the last packet is sent, the recogniser already produced a partial transcript.
            await gw.sim.log.wait_for(
                lambda: any(
                    r["output"]["sentence"]["text"] and not r["output"]["sentence"]["sentence_end"]
                    for s in gw.sim.log.asr_sessions
                    for r in s.results
                ),
                timeout=5,
            )
            (session,) = gw.sim.log.asr_sessions
            assert not session.finish_received
            assert len(session.audio) < len(audio)
            await c.ws.send(upload[-1])
            await c.until("audio_complete")
        assert c.bodies("chat_started")[0]["user_message"] == text


async def test_extended_events_show_the_transcript_before_the_upload_ends(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(4.0)
        text = "我想知道明天北京的天气，会不会下雨，需要带伞吗？"
        gw.sim.register_transcript(audio, text)
        upload = packets(audio)
        async with client(gw, query={"events": "extended"}) as c:
            await c.recv()
            await c.send_all(upload[:-1])
            partial = (await c.until("transcription_partial"))[-1]["transcription_partial"]
            assert partial["text"] and text.startswith(partial["text"].rstrip("，。？"))
            assert partial["is_final"] is False
            (session,) = gw.sim.log.asr_sessions
            assert not session.finish_received  # the last packet has not even been sent
            await c.ws.send(upload[-1])
            await c.until("audio_complete")
        assert c.bodies("chat_started")[0]["user_message"] == text


async def test_seed_clients_get_no_extended_events(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw) as c:
        await c.recv()
        await c.send_all(packets(wav_bytes(2.0)))
        events = await c.until("audio_complete")
        assert not [e for e in events if "transcription_partial" in e]


async def test_unknown_format_is_a_typed_error_before_any_upstream_call(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw) as c:
        await c.recv()
        await c.send_all(packets(b"\x1aE\xdf\xa3" + bytes(5000)))  # WebM/Matroska
        events = await c.until("audio_complete")
        (error,) = [e["error"] for e in events if "error" in e]
        assert error["code"] == "unsupported_audio_format"
        assert "webm" in error["message"].lower()
        assert c.bodies("audio_complete")[0]["transcription_success"] is False
        assert not gw.sim.log.connections


async def test_declared_raw_pcm(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        pcm = b"".join(struct.pack("<h", (i * 37) % 3000) for i in range(16000))
        gw.sim.register_transcript(pcm, "原始音频")
        async with client(gw, query={"format": "pcm;rate=16000"}) as c:
            await c.recv()
            await c.send_all(packets(pcm))
            await c.until("audio_complete")
        assert c.bodies("chat_started")[0]["user_message"] == "原始音频"
        (session,) = gw.sim.log.asr_sessions
        assert session.params["format"] == "pcm" and session.params["sample_rate"] == 16000
        assert abs(c.bodies("audio_complete")[0]["duration"] - 1.0) < 0.01


async def test_file_recognition_model_recognises_the_stored_upload(tmp_path: Path) -> None:
    async with gateway(tmp_path, asr_model="paraformer-v2") as gw:
        audio = wav_bytes(0.6)
        gw.sim.register_transcript(audio, "文件识别")
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
        names = compact(c.names())
        assert names.index("transcription_started") < names.index("chat_started")
        (task,) = gw.sim.log.file_asr_tasks
        assert task.file_urls and "/objects/" in task.file_urls[0]
        assert c.bodies("chat_started")[0]["user_message"] == "文件识别"


async def test_turns_per_connection_limit(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_turns_per_connection=1) as gw:
        audio = wav_bytes(0.3)
        gw.sim.register_transcript(audio, "一次")
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
            await c.send_all(packets(wav_bytes(0.3, seed=5))[:1])
            events = await c.until("error")
            assert events[-1]["error"]["code"] == "too_many_turns"
            await asyncio.wait_for(c.ws.wait_closed(), 5)
            assert c.ws.close_code == 1008
