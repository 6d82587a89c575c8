"""``/api-ws/v1/realtime``: dispatch by model, realtime recognition (qwen3-asr-flash-realtime) and Qwen-Omni
sessions at the event level (the SDK's view of them is in tests/referee)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from qwen_gateway.simulator import Fault, Simulator
from qwen_gateway.simulator.audio import synthesize

from .conftest import connect, recv_json, run_task

SPEECH = synthesize("今天天气怎么样？", 16000)
SILENCE = bytes(16000)  # half a second at 16 kHz


def url(sim: Simulator, model: str) -> str:
    return f"{sim.ws_base_url}/api-ws/v1/realtime?model={model}"


def event(type: str, **fields: Any) -> str:
    return json.dumps({"event_id": "event_test", "type": type, **fields})


def append(audio: bytes) -> str:
    return event("input_audio_buffer.append", audio=base64.b64encode(audio).decode())


async def until(ws: ClientConnection, type: str) -> list[dict[str, Any]]:
    events = []
    while True:
        events.append(await recv_json(ws))
        if events[-1]["type"] == type:
            return events


async def drain(ws: ClientConnection) -> list[dict[str, Any]]:
    events = []
    try:
        while True:
            events.append(await recv_json(ws))
    except websockets.ConnectionClosedOK:
        pass
    return events


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("qwen-tts-realtime", "tts"),
        ("qwen3-tts-flash-realtime-2025-09-18", "tts"),
        ("qwen3-asr-flash-realtime", "realtime_asr"),
        ("qwen3-omni-flash-realtime", "omni"),
    ],
)
async def test_the_model_picks_the_protocol(sim: Simulator, model: str, kind: str) -> None:
    async with await connect(url(sim, model)) as ws:
        created = await recv_json(ws)
        assert created["type"] == "session.created" and created["session"]["model"] == model
    assert sim.log.connections[0].kind == kind


@pytest.mark.parametrize(
    "model", ["paraformer-v2", "paraformer-realtime-v2", "cosyvoice-v2", "qwen-tts", "no-such", ""]
)
async def test_a_model_not_served_here_is_refused(sim: Simulator, model: str) -> None:
    ws = await connect(url(sim, model))
    error = await recv_json(ws)
    assert error["type"] == "error" and error["error"]["code"] == "model_not_found"
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    await sim.wait_closed()
    assert sim.log.connections[0].close_reason == "rejected"


async def test_manual_commit_events(sim: Simulator) -> None:
    sim.register_transcript(SPEECH, "今天天气怎么样？")
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(
            event("session.update", session={"turn_detection": None, "sample_rate": 16000})
        )
        updated = await recv_json(ws)
        assert updated["type"] == "session.updated" and updated["session"]["turn_detection"] is None
        for start in range(0, len(SPEECH), 6400):
            await ws.send(append(SPEECH[start : start + 6400]))
        await ws.send(event("input_audio_buffer.commit"))
        events = await until(ws, "conversation.item.input_audio_transcription.completed")
        types = [e["type"] for e in events]
        assert "conversation.item.input_audio_transcription.text" in types
        committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
        completed = events[-1]
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"] == "今天天气怎么样？"
        await ws.send(event("session.finish"))
        rest = await drain(ws)
    assert [e["type"] for e in rest] == ["session.finished"]


async def test_an_empty_commit_and_a_cleared_buffer(sim: Simulator) -> None:
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(event("session.update", session={"turn_detection": None}))
        await recv_json(ws)
        await ws.send(event("input_audio_buffer.commit"))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["error"]["event_id"] == "event_test"
        await ws.send(append(SPEECH[:3200]))
        await ws.send(event("input_audio_buffer.clear"))
        events = await until(ws, "input_audio_buffer.cleared")
        assert events[-1]["type"] == "input_audio_buffer.cleared"
        await ws.send(event("session.finish"))
        assert [e["type"] for e in await drain(ws)] == ["session.finished"]
    (record,) = sim.log.realtime_asr_sessions
    assert record.items == []


@pytest.mark.parametrize(
    ("update", "param"),
    [
        ({"sample_rate": 44100}, "session.sample_rate"),
        ({"input_audio_format": "mp3"}, "session.input_audio_format"),
        ({"turn_detection": {"type": "semantic_vad"}}, "session.turn_detection.type"),
        (
            {"turn_detection": {"type": "server_vad", "silence_duration_ms": 50}},
            "session.turn_detection.silence_duration_ms",
        ),
    ],
)
async def test_refused_session_values(sim: Simulator, update: dict[str, Any], param: str) -> None:
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(event("session.update", session=update))
        error = await recv_json(ws)
    assert error["type"] == "error" and error["error"]["param"] == param
    assert error["error"]["code"] == "invalid_value"


async def test_session_update_after_audio_is_refused(sim: Simulator) -> None:
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(append(SILENCE))
        await ws.send(event("session.update", session={"sample_rate": 8000}))
        error = await until(ws, "error")
    assert "already started" in error[-1]["error"]["message"]


async def test_server_vad_events(sim: Simulator) -> None:
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(append(SILENCE + SPEECH + SILENCE * 3))
        events = await until(ws, "conversation.item.input_audio_transcription.completed")
        types = [e["type"] for e in events]
        assert (
            types.index("input_audio_buffer.speech_started")
            < types.index("input_audio_buffer.speech_stopped")
            < types.index("input_audio_buffer.committed")
        )
        started = events[types.index("input_audio_buffer.speech_started")]
        assert 400 <= started["audio_start_ms"] <= 600
        await ws.send(event("session.finish"))
        assert [e["type"] for e in await drain(ws)] == ["session.finished"]
    (record,) = sim.log.realtime_asr_sessions
    assert [i.via for i in record.items] == ["vad"]


async def test_idle_timeout(sim: Simulator) -> None:
    sim.faults.add(Fault.idle_timeout(0.2, endpoint="realtime_asr"))
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        events = await drain(ws)
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"]["code"] == "idle_timeout"
    await sim.wait_closed()
    assert sim.log.connections[0].close_reason == "idle"


async def test_stall_then_drop(sim: Simulator) -> None:
    sim.faults.add(Fault.drop(0, endpoint="realtime_asr"))
    ws = await connect(url(sim, "qwen3-asr-flash-realtime"))
    await recv_json(ws)
    await ws.send(event("session.update", session={"turn_detection": None}))
    await recv_json(ws)
    await ws.send(append(SPEECH))
    with pytest.raises(websockets.ConnectionClosedError):
        while True:
            await recv_json(ws)
    await sim.wait_closed()
    assert sim.log.connections[0].close_reason == "dropped"


async def test_omni_text_only_response(sim: Simulator) -> None:
    sim.set_reply("好的。")
    async with await connect(url(sim, "qwen3-omni-flash-realtime")) as ws:
        created = await recv_json(ws)
        assert created["session"]["output_audio_format"] == "pcm24"
        await ws.send(
            event("session.update", session={"modalities": ["text"], "turn_detection": None})
        )
        await recv_json(ws)
        await ws.send(append(SPEECH))
        await ws.send(event("input_audio_buffer.commit"))
        await ws.send(event("response.create", response={"instructions": None}))
        events = await until(ws, "response.done")
        types = [e["type"] for e in events]
        assert "response.audio.delta" not in types
        text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        assert text == "好的。"
        await ws.send(event("session.finish"))
        assert [e["type"] for e in await drain(ws)] == ["session.finished"]


async def test_omni_refuses_audio_only_modalities(sim: Simulator) -> None:
    async with await connect(url(sim, "qwen3-omni-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(event("session.update", session={"modalities": ["audio"]}))
        error = await recv_json(ws)
    assert error["error"]["param"] == "session.modalities"


async def test_capture_frames_keeps_every_client_frame(sim: Simulator) -> None:
    """``capture_frames`` records what any WebSocket client sent, JSON decoded, binary as bytes."""
    sim.configure(capture_frames=True)
    async with await connect(f"{sim.ws_base_url}/api-ws/v1/inference") as ws:
        await ws.send(run_task("t1"))
        await recv_json(ws)
        await ws.send(b"\x00\x01" * 100)
        await ws.send("not json")
    await sim.wait_closed()
    frames = sim.log.connections[0].frames_in
    assert frames[0]["header"]["action"] == "run-task"
    assert frames[1:] == [b"\x00\x01" * 100, "not json"]
    sim.configure(capture_frames=False)
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(event("session.finish"))
        await drain(ws)
    assert sim.log.connections[1].frames_in == []


async def test_manual_mode_refuses_more_than_60_s_uncommitted(sim: Simulator) -> None:
    sim.configure(realtime_commit_limit=1.0)
    async with await connect(url(sim, "qwen3-asr-flash-realtime")) as ws:
        await recv_json(ws)
        await ws.send(event("session.update", session={"turn_detection": None}))
        await recv_json(ws)
        await ws.send(append(SILENCE * 3))
        error = await until(ws, "error")
        assert "must not exceed 1 seconds" in error[-1]["error"]["message"]
        await ws.send(event("input_audio_buffer.commit"))
        empty = await until(ws, "error")
        assert "no audio" in empty[-1]["error"]["message"]
