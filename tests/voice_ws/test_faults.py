"""Upstream faults during a turn: a typed ``error`` event, the audio produced so far flushed, ``audio_stream``
``finished``, truthful ``*_success: false``, every upstream socket closed, and the connection usable for the next
turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qwen_gateway.simulator import Fault

from .conftest import (
    GATEWAY_KEY,
    Client,
    Gateway,
    client,
    compact,
    decoded_samples,
    gateway,
    packets,
    wav_bytes,
)

ANSWER = "第一句话在这里。第二句话在这里。第三句话在这里。第四句话在这里。"


async def _turn(c: Client, audio: bytes) -> list[dict[str, Any]]:
    await c.send_all(packets(audio))
    return await c.until("audio_complete", wait=30)


def _errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["error"] for e in events if "error" in e]


def _body(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (body,) = [e[name] for e in events if name in e]
    return body


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [next(iter(e)) for e in events]


async def _next_turn_works(gw: Gateway, c: Client) -> None:
    gw.sim.faults.clear()
    audio = wav_bytes(0.3, seed=99)
    gw.sim.register_transcript(audio, "再试一次")
    gw.sim.set_reply("好的，没问题。")
    events = await _turn(c, audio)
    assert not _errors(events)
    assert _body(events, "audio_complete")["tts_success"] is True


async def test_recognition_task_failed(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw) as c:
        await c.recv()
        gw.sim.faults.add(Fault.task_failed("asr", after=0, code="InternalError"))
        events = await _turn(c, wav_bytes(0.6))
        (error,) = _errors(events)
        assert error["code"] == "upstream_error" and error["turn_id"] == 1
        assert "user_message" not in _body(events, "chat_started")
        complete = _body(events, "audio_complete")
        assert complete["transcription_success"] is False and complete["chat_success"] is False
        assert complete["oss_uploaded"] is True  # the upload was still stored
        assert not gw.sim.log.chat_requests
        await gw.sim.wait_closed("asr", timeout=5)
        await _next_turn_works(gw, c)


async def test_recognition_stalls_after_the_upload(tmp_path: Path) -> None:
    async with gateway(tmp_path, read_timeout=1.0) as gw, client(gw) as c:
        await c.recv()
        gw.sim.faults.add(Fault.stall(0, None, endpoint="asr"))
        events = await _turn(c, wav_bytes(0.6))
        (error,) = _errors(events)
        assert error["code"] == "upstream_timeout"
        assert _body(events, "audio_complete")["transcription_success"] is False
        await gw.sim.wait_closed("asr", timeout=5)
        await _next_turn_works(gw, c)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.http_error(429, code="limit_requests", times=2), "rate_limited"),
        (Fault.http_error(500, code="InternalError", times=2), "upstream_error"),
    ],
    ids=["429", "500"],
)
async def test_chat_refused(tmp_path: Path, fault: Fault, code: str) -> None:
    async with gateway(tmp_path) as gw, client(gw) as c:
        await c.recv()
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "你好")
        gw.sim.faults.add(fault)
        events = await _turn(c, audio)
        (error,) = _errors(events)
        assert error["code"] == code
        assert _names(events)[-4:] == [
            "error",
            "audio_stream",
            "chat_tts_complete",
            "audio_complete",
        ]
        assert events[-3]["audio_stream"]["event"] == "finished"
        done = _body(events, "chat_tts_complete")
        assert done["tts_success"] is False and done["assistant_response"] == ""
        complete = _body(events, "audio_complete")
        assert complete["transcription_success"] is True and complete["chat_success"] is False
        assert len(gw.sim.log.chat_requests) == 2  # one retry before giving up
        # The synthesis session opened with the chat request was given nothing and closed.
        assert all(not t.text for t in gw.sim.log.tts_sessions)
        await gw.sim.wait_closed(timeout=5)
        await _next_turn_works(gw, c)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.drop(after_chunks=8, endpoint="chat"),
        Fault.stream_error(after_chunks=8, code="InternalError", message="boom"),
        Fault.stall(after_chunks=8, seconds=None, endpoint="chat"),
    ],
    ids=["drop", "stream_error", "stall"],
)
async def test_chat_fails_mid_answer_and_what_was_said_is_spoken(
    tmp_path: Path, fault: Fault
) -> None:
    async with gateway(tmp_path, read_timeout=1.0) as gw:
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "你好")
        gw.sim.set_reply(ANSWER)
        gw.sim.faults.add(fault)
        async with client(gw, query={"conversation_id": "conv-fault"}) as c:
            await c.recv()
            events = await _turn(c, audio)
            (error,) = _errors(events)
            expected = "upstream_timeout" if fault.kind == "stall" else "upstream_error"
            assert error["code"] == expected
            done = _body(events, "chat_tts_complete")
            partial = done["assistant_response"]
            assert partial and ANSWER.startswith(partial) and partial != ANSWER
            assert done["tts_success"] is False
            assert _body(events, "audio_complete")["chat_success"] is False
            # What was said before the failure was spoken; its audio came before "finished".
            assert decoded_samples(c.mp3(turn_id=1))[0] > 0
            assert events[-3] == {"audio_stream": {"event": "finished", "turn_id": 1}}
            (tts,) = gw.sim.log.tts_sessions
            assert tts.text and partial.startswith(tts.text.rstrip("。").split("。")[0])
            await gw.sim.wait_closed(timeout=5)
            await _next_turn_works(gw, c)
        await gw.services.storage.outbox.drained()
        turns = await gw.services.storage.history.conversation(
            "conv-fault", owner=gw.services.keys.owner(GATEWAY_KEY)
        )
        assert turns[0].status == "interrupted" and turns[0].assistant_content == partial
        assert turns[0].error_code


@pytest.mark.parametrize(
    "fault",
    [
        Fault.ws_error("tts", after=2, close=True),
        Fault.ws_error("tts", after=2, close=False),
        Fault.drop(after_chunks=2, endpoint="tts"),
        Fault.http_error(503, endpoint="tts", times=2),
        Fault.stall(after_chunks=2, seconds=3, endpoint="tts"),
    ],
    ids=["error-close", "error", "drop", "handshake-503", "stall"],
)
async def test_tts_fails_and_the_text_goes_on(tmp_path: Path, fault: Fault) -> None:
    async with gateway(tmp_path, read_timeout=1.0) as gw, client(gw) as c:
        await c.recv()
        audio = wav_bytes(0.4)
        gw.sim.register_transcript(audio, "你好")
        gw.sim.set_reply(ANSWER)
        gw.sim.faults.add(fault)
        events = await _turn(c, audio)
        (error,) = _errors(events)
        assert error["code"] in ("upstream_error", "upstream_timeout")
        assert "speech synthesis" in error["message"]
        done = _body(events, "chat_tts_complete")
        assert done["assistant_response"] == ANSWER  # the text answer is complete
        assert done["tts_success"] is False
        assert done["segments_count"] < done["total_segments"] or fault.kind != "http_error"
        complete = _body(events, "audio_complete")
        assert complete["chat_success"] is True and complete["tts_success"] is False
        assert "".join(b["chunk"] for b in c.bodies("chat_chunk")) == ANSWER
        finished = [e for e in events if e.get("audio_stream", {}).get("event") == "finished"]
        assert len(finished) == 1
        mp3 = c.mp3(turn_id=1)
        if fault.kind != "http_error":
            assert mp3 and decoded_samples(mp3)[0] > 0  # the audio produced before the fault
        await gw.sim.wait_closed(timeout=5)
        await _next_turn_works(gw, c)


async def test_fault_sequence_keeps_one_connection_usable(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw) as c:
        await c.recv()
        for fault in (
            Fault.task_failed("asr", after=0),
            Fault.http_error(429, code="limit_requests", times=2),
            Fault.ws_error("tts", after=1, close=True),
        ):
            gw.sim.faults.clear()
            gw.sim.faults.add(fault)
            audio = wav_bytes(0.3, seed=len(c.events))
            gw.sim.register_transcript(audio, "你好")
            events = await _turn(c, audio)
            assert len(_errors(events)) == 1
        await _next_turn_works(gw, c)
        assert compact(c.names())[0] == "connected"
