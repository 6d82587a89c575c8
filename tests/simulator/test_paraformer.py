"""Realtime recognition over ``/api-ws/v1/inference``: results timed to the audio, registry, faults, records."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import lameenc
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from qwen_gateway.simulator import Fault, Simulator

from .conftest import connect, finish_task, pcm_tone, recv_json, run_task


async def _started(sim: Simulator, task_id: str = "task-1", **kwargs: Any) -> ClientConnection:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task(task_id, **kwargs))
    started = await recv_json(ws)
    assert started == {
        "header": {"task_id": task_id, "event": "task-started", "attributes": {}},
        "payload": {},
    }
    return ws


async def _until_finished(ws: ClientConnection) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await recv_json(ws)
        events.append(event)
        if event["header"]["event"] in ("task-finished", "task-failed"):
            return events


async def _send_chunks(ws: ClientConnection, audio: bytes, size: int) -> None:
    """Send ``audio`` in ``size`` pieces; the server may close meanwhile (faults)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        for start in range(0, len(audio), size):
            await ws.send(audio[start : start + size])


def _sentences(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["payload"]["output"]["sentence"]
        for e in events
        if e["header"]["event"] == "result-generated"
    ]


async def test_partials_arrive_before_the_last_packet(sim: Simulator) -> None:
    audio = pcm_tone(3.0)
    sim.register_transcript(audio, "今天天气很好，我们去公园散步吧。")
    ws = await _started(sim)
    chunk = 3200  # 100 ms
    await ws.send(audio[: len(audio) // 2])
    partial = await recv_json(ws)  # arrives although more than half the audio is still to come
    sentence = partial["payload"]["output"]["sentence"]
    assert sentence["sentence_end"] is False and sentence["end_time"] is None
    assert partial["payload"]["usage"] is None and sentence["heartbeat"] is False
    assert "今天天气很好".startswith(sentence["text"][:6]) and sentence["text"]
    for start in range(len(audio) // 2, len(audio), chunk):
        await ws.send(audio[start : start + chunk])
    await ws.send(finish_task("task-1"))
    events = [partial, *await _until_finished(ws)]
    sentences = _sentences(events)
    texts = [s["text"] for s in sentences]
    assert len(texts) > 2 and all(b.startswith(a) for a, b in itertools.pairwise(texts))
    final = sentences[-1]
    assert final["sentence_end"] is True and final["text"] == "今天天气很好，我们去公园散步吧。"
    assert final["begin_time"] == 0 and final["end_time"] == final["words"][-1]["end_time"]
    assert 2500 < final["end_time"] <= 3000  # the closing pause is silence
    assert [w["text"] for w in final["words"]][:3] == ["今", "天", "天"]
    assert final["words"][5]["punctuation"] == "，"
    assert events[-2]["payload"]["usage"] == {"duration": 3}
    assert events[-1] == {
        "header": {"task_id": "task-1", "event": "task-finished", "attributes": {}},
        "payload": {"output": {}, "usage": None},
    }
    (record,) = sim.log.asr_sessions
    assert bytes(record.audio) == audio and record.finish_received and record.finished
    assert record.transcript == "今天天气很好，我们去公园散步吧。"
    assert record.params == {"format": "pcm", "sample_rate": 16000}
    assert not record.closed
    await ws.close()
    await sim.wait_closed("asr", timeout=5)
    assert record.closed and record.close_time is not None
    assert record.connection.close_reason == "client"


async def test_unknown_audio_gets_the_default_text(sim: Simulator) -> None:
    ws = await _started(sim)
    await ws.send(pcm_tone(1.0, seed=5))
    await ws.send(finish_task("task-1"))
    final = _sentences(await _until_finished(ws))[-1]
    assert final["text"] == sim.config.asr_default_text and final["sentence_end"]


async def test_multi_sentence_finals_come_with_the_audio(sim: Simulator) -> None:
    sim.configure(asr_default_text="第一句话。第二句话。")
    ws = await _started(sim)
    await ws.send(pcm_tone(1.6))  # past the first sentence (1.25 s) and its pause
    finals = []
    while not finals:
        sentence = (await recv_json(ws))["payload"]["output"]["sentence"]
        if sentence["sentence_end"]:
            finals.append(sentence)
    assert finals[0]["text"] == "第一句话。" and finals[0]["sentence_id"] == 1
    await ws.send(finish_task("task-1"))
    last = _sentences(await _until_finished(ws))[-1]
    assert last["text"] == "第二句话。" and last["sentence_id"] == 2 and last["sentence_end"]


async def test_empty_result_cases(sim: Simulator) -> None:
    silence = bytes(32000)
    sim.register_transcript(silence, "")
    ws = await _started(sim)
    await ws.send(silence)
    await ws.send(finish_task("task-1"))
    events = await _until_finished(ws)
    assert [e["header"]["event"] for e in events] == ["task-finished"]
    # No audio at all: nothing recognised either; the socket takes a new task.
    await ws.send(run_task("task-2"))
    assert (await recv_json(ws))["header"]["event"] == "task-started"
    await ws.send(finish_task("task-2"))
    assert [e["header"]["event"] for e in await _until_finished(ws)] == ["task-finished"]
    assert [s.task_id for s in sim.log.asr_sessions] == ["task-1", "task-2"]
    assert sim.log.connection_counts()["inference"] == 1


async def test_mp3_audio_is_timed_from_frames(sim: Simulator) -> None:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(32)
    encoder.set_in_sample_rate(16000)
    encoder.set_channels(1)
    encoder.set_quality(7)
    mp3 = bytes(encoder.encode(pcm_tone(2.0))) + bytes(encoder.flush())
    sim.register_transcript(mp3, "hello world")
    ws = await _started(sim, parameters={"format": "mp3", "sample_rate": 16000})
    for start in range(0, len(mp3), 1000):
        await ws.send(mp3[start : start + 1000])
    await ws.send(finish_task("task-1"))
    final = _sentences(await _until_finished(ws))[-1]
    assert final["text"] == "hello world"
    assert final["end_time"] == pytest.approx(2000, abs=150)


async def test_partial_end_time_knob_and_gummy_shape(sim: Simulator) -> None:
    sim.configure(asr_partial_end_time=True)
    ws = await _started(sim)
    await ws.send(pcm_tone(1.0))
    sentence = (await recv_json(ws))["payload"]["output"]["sentence"]
    assert sentence["sentence_end"] is False and sentence["end_time"] == 1000
    await ws.close()
    ws = await _started(sim, "task-g", model="gummy-realtime-v1")
    await ws.send(pcm_tone(1.0))
    await ws.send(finish_task("task-g"))
    events = await _until_finished(ws)
    transcription = events[-2]["payload"]["output"]["transcription"]
    assert (
        transcription["sentence_end"] is True
        and transcription["text"] == sim.config.asr_default_text
    )


async def test_idle_rule_fails_the_task(sim: Simulator) -> None:
    sim.configure(asr_idle_timeout=0.3)
    ws = await _started(sim)
    await ws.send(pcm_tone(0.1))
    events = await _until_finished(ws)
    assert events[-1] == {
        "header": {
            "task_id": "task-1",
            "event": "task-failed",
            "error_code": "CLIENT_ERROR",
            "error_message": "request timeout after 0.3 seconds.",
            "attributes": {},
        },
        "payload": {},
    }
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(ws)
    await sim.wait_closed("asr", timeout=5)
    assert sim.log.asr_sessions[0].failed == ("CLIENT_ERROR", "request timeout after 0.3 seconds.")
    assert sim.log.closes[0].close_reason == "idle"


async def test_idle_socket_without_task_is_closed(sim: Simulator) -> None:
    sim.configure(task_reuse_timeout=0.2)
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"] + "/")
    with pytest.raises(websockets.ConnectionClosedOK):
        await recv_json(ws)
    assert sim.log.closes[0].close_reason == "idle"


@pytest.mark.parametrize(
    ("message", "code", "error"),
    [
        (
            run_task("t", model=""),
            "InvalidParameter",
            "Missing required parameter 'payload.model'! Please follow the protocol!",
        ),
        (
            json.dumps(
                {
                    "header": {"action": "run-task", "task_id": "t"},
                    "payload": {"model": "paraformer-realtime-v2", "task": "asr"},
                }
            ),
            "InvalidParameter",
            "InvalidParameter: task can not be null",
        ),
        (
            run_task("t", parameters={"sample_rate": 16000}),
            "InvalidParameter",
            "Missing required parameter 'payload.parameters.format'! Please follow the protocol!",
        ),
        (
            run_task("t", parameters={"format": "pcm"}),
            "InvalidParameter",
            "Missing required parameter 'payload.parameters.sample_rate'! Please follow the protocol!",
        ),
        (
            run_task("t", model="paraformer-realtime-8k-v2"),
            "InvalidParameter",
            "Model paraformer-realtime-8k-v2 only supports sample_rate 8000.",
        ),
        (finish_task("t"), "InvalidParameter", "Task t not found, send run-task first!"),
    ],
)
async def test_bad_instructions_fail_the_task(
    sim: Simulator, message: str, code: str, error: str
) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(message)
    failed = await recv_json(ws)
    assert failed["header"] | {"attributes": None} == {
        "task_id": "t",
        "event": "task-failed",
        "error_code": code,
        "error_message": error,
        "attributes": None,
    }
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(ws)


async def test_audio_without_a_task_fails(sim: Simulator) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(pcm_tone(0.1))
    failed = await recv_json(ws)
    assert failed["header"]["event"] == "task-failed"


async def test_new_run_task_replaces_the_running_one(sim: Simulator) -> None:
    ws = await _started(sim, "first")
    await ws.send(pcm_tone(0.2))
    await ws.send(run_task("second"))
    while (event := await recv_json(ws))["header"]["event"] != "task-started":
        assert event["header"]["task_id"] == "first"
    assert event["header"]["task_id"] == "second"
    assert sim.log.asr_sessions[0].aborted and not sim.log.asr_sessions[0].finished


async def test_faults_task_failed_after_results(sim: Simulator) -> None:
    sim.faults.add(Fault.task_failed("asr", after=2, code="InternalError", message="boom"))
    ws = await _started(sim)
    await _send_chunks(ws, pcm_tone(2.0), 6400)
    events = await _until_finished(ws)
    assert [e["header"]["event"] for e in events] == ["result-generated"] * 2 + ["task-failed"]
    assert events[-1]["header"]["error_message"] == "boom"


async def test_faults_at_run_task(sim: Simulator) -> None:
    sim.faults.add(Fault.http_error(429, code="limit_requests", endpoint="asr"))
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("t"))
    failed = await recv_json(ws)
    assert failed["header"]["error_code"] == "Throttling.RateQuota"
    sim.faults.add(
        Fault.task_failed("asr", before_start=True, code="ModelUnavailable", message="busy")
    )
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("t"))
    assert (await recv_json(ws))["header"]["error_message"] == "busy"
    sim.faults.add(Fault.http_error(503, endpoint="inference"))
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    assert info.value.response.status_code == 503


async def test_faults_drop_malformed_stall(sim: Simulator) -> None:
    sim.faults.add(Fault.drop(after_chunks=1, endpoint="asr"))
    ws = await _started(sim)
    await _send_chunks(ws, pcm_tone(2.0), 6400)
    assert (await recv_json(ws))["header"]["event"] == "result-generated"
    with pytest.raises(websockets.ConnectionClosedError):
        await recv_json(ws)

    sim.faults.add(Fault.malformed("asr", after=0))
    ws = await _started(sim, "t2")
    await ws.send(pcm_tone(1.0))
    with pytest.raises(json.JSONDecodeError):
        await recv_json(ws)
    await ws.close()

    sim.faults.add(Fault.stall(0, None, endpoint="asr"))
    ws = await _started(sim, "t3")
    await ws.send(pcm_tone(1.0))
    await sim.log.wait_for(lambda: sim.log.asr_sessions[-1].frames == 1, timeout=5)
    await ws.close()
    await sim.wait_closed("asr", timeout=5)
    assert not sim.log.asr_sessions[-1].finished


async def test_delay_before_task_started(sim: Simulator) -> None:
    sim.faults.add(Fault.delay(0.05, endpoint="asr"))
    ws = await _started(sim)
    await ws.close()
    assert sim.faults.fired[0].fault.kind == "delay"


async def test_server_close_is_seen_while_the_client_keeps_sending(sim: Simulator) -> None:
    """The server stops reading after a drop; a client still uploading must see the close anyway."""
    sim.faults.add(Fault.drop(after_chunks=1, endpoint="asr"))
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"], close_timeout=60)
    await ws.send(run_task("t"))
    await recv_json(ws)
    sender = asyncio.create_task(_send_chunks(ws, pcm_tone(6.0), 1600))  # 60 frames
    with pytest.raises(websockets.ConnectionClosedError):
        async with asyncio.timeout(
            20
        ):  # a guard against hanging: without the fix it waits out close_timeout
            while True:
                await ws.recv()
    await sender
    await sim.wait_closed("asr", timeout=5)


async def test_client_close_is_seen_during_a_stall(sim: Simulator) -> None:
    """A stalled server still notices a client that uploads a lot and leaves."""
    sim.faults.add(Fault.stall(0, None, endpoint="asr"))
    sim.configure(asr_default_text="天" * 100 + "。", asr_chars_per_second=20.0)
    ws = await _started(sim)
    await _send_chunks(ws, pcm_tone(10.0), 1600)  # 100 frames and ~100 pending results
    await sim.log.wait_for(lambda: sim.log.asr_sessions[0].frames == 100, timeout=5)
    await ws.close()
    await sim.wait_closed("asr", timeout=5)
    assert sim.log.closes[0].close_reason == "client"


async def test_idle_timeout_fault_applies_to_one_task(sim: Simulator) -> None:
    sim.faults.add(Fault.idle_timeout(0.2, endpoint="asr"))
    ws = await _started(sim)
    failed = (await _until_finished(ws))[-1]["header"]
    assert (failed["error_code"], failed["error_message"]) == (
        "CLIENT_ERROR",
        "request timeout after 0.2 seconds.",
    )
    ws = await _started(sim, "t2")  # the next task has the configured 23 s rule
    await ws.send(pcm_tone(0.5))
    await ws.send(finish_task("t2"))
    assert (await _until_finished(ws))[-1]["header"]["event"] == "task-finished"
