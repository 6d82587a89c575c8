"""CosyVoice over the task protocol: sentence events, one binary frame per synthesis event, usage, faults."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from qwen_gateway.simulator import Fault, Simulator
from qwen_gateway.simulator.audio import duration_of

from .conftest import connect, continue_task, finish_task, recv_any, run_task


async def _started(sim: Simulator, task_id: str = "tts-1", **parameters: Any) -> ClientConnection:
    params = {"voice": "longxiaochun_v2", "format": "pcm", "sample_rate": 16000} | parameters
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task(task_id, task="tts", model="cosyvoice-v2", parameters=params))
    started = json.loads(await recv_any(ws))
    assert started["header"]["event"] == "task-started" and started["header"]["task_id"] == task_id
    return ws


async def _collect(ws: ClientConnection) -> list[dict[str, Any] | bytes]:
    """Events (dicts) and binary frames until task-finished/task-failed."""
    out: list[dict[str, Any] | bytes] = []
    while True:
        frame = await recv_any(ws)
        if isinstance(frame, bytes):
            out.append(frame)
            continue
        event = json.loads(frame)
        out.append(event)
        if event["header"]["event"] in ("task-finished", "task-failed"):
            return out


def _kind(item: dict[str, Any] | bytes) -> str:
    if isinstance(item, bytes):
        return "BINARY"
    output = item["payload"].get("output") or {}
    return output.get("type") or item["header"]["event"]


async def test_sentences_audio_and_usage(sim: Simulator) -> None:
    ws = await _started(sim)
    await ws.send(continue_task("tts-1", "床前明月光，疑是地上霜。举头"))
    await ws.send(continue_task("tts-1", "望明月。"))
    await ws.send(finish_task("tts-1"))
    items = await _collect(ws)
    kinds = [_kind(i) for i in items]
    # Each sentence: begin, (synthesis + exactly one binary frame)*, end.
    assert kinds[0] == "sentence-begin" and kinds[-1] == "task-finished"
    for i, kind in enumerate(kinds):
        if kind == "sentence-synthesis":
            assert kinds[i + 1] == "BINARY"
        if kind == "BINARY":
            assert kinds[i - 1] == "sentence-synthesis"
    begins = [i for i in items if _kind(i) == "sentence-begin"]
    ends = [i for i in items if _kind(i) == "sentence-end"]
    assert [b["payload"]["output"]["original_text"] for b in begins] == [
        "床前明月光，疑是地上霜。",
        "举头望明月。",
    ]
    assert [e["payload"]["usage"]["characters"] for e in ends] == [
        22,
        33,
    ]  # a Chinese character counts 2
    assert [e["payload"]["output"]["sentence"]["index"] for e in ends] == [0, 1]
    finished = items[-1]
    assert isinstance(finished, dict)
    assert finished["payload"] == {
        "output": {"sentence": {"words": []}},
        "usage": {"characters": 33},
    }
    assert finished["header"]["attributes"]["request_uuid"]
    pcm = b"".join(i for i in items if isinstance(i, bytes))
    assert duration_of(pcm, "pcm", 16000) == pytest.approx((15 / 4) + 0.15 + 2 * 0.25, rel=0.01)
    (record,) = sim.log.cosyvoice_sessions
    assert record.texts == ["床前明月光，疑是地上霜。举头", "望明月。"]
    assert record.sentences == ["床前明月光，疑是地上霜。", "举头望明月。"]
    assert record.finished and record.characters == 33 and record.audio_bytes == len(pcm)
    # The socket takes another task after task-finished.
    await ws.send(run_task("tts-2", task="tts", model="cosyvoice-v2", parameters=record.params))
    assert json.loads(await recv_any(ws))["header"]["event"] == "task-started"
    await ws.close()
    await sim.wait_closed("tts_cosyvoice", timeout=5)
    assert record.closed


async def test_wav_and_mp3_formats(sim: Simulator) -> None:
    for fmt in ("wav", "mp3"):
        ws = await _started(sim, f"t-{fmt}", format=fmt, sample_rate=22050)
        await ws.send(continue_task(f"t-{fmt}", "你好，欢迎使用语音合成。"))
        await ws.send(finish_task(f"t-{fmt}"))
        audio = b"".join(i for i in await _collect(ws) if isinstance(i, bytes))
        if fmt == "wav":
            assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
            assert int.from_bytes(audio[24:28], "little") == 22050
        else:
            assert duration_of(audio, "mp3") == pytest.approx(10 / 4 + 0.15 + 0.25, abs=0.15)
        await ws.close()


@pytest.mark.parametrize(
    ("parameters", "model", "message"),
    [
        ({"format": "pcm"}, "cosyvoice-v2", "Request voice is invalid!"),
        (
            {"voice": "longwan", "format": "pcm"},
            "cosyvoice-v2",
            "[tts:]Engine return error code: 418",
        ),
        (
            {"voice": "longxiaochun_v2", "sample_rate": 12345},
            "cosyvoice-v2",
            "Unsupported sample_rate: 12345.",
        ),
        (
            {"voice": "longxiaochun_v2", "rate": 3},
            "cosyvoice-v2",
            "rate should be in [0.5, 2.0], got 3.",
        ),
    ],
)
async def test_bad_parameters(
    sim: Simulator, parameters: dict[str, Any], model: str, message: str
) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("x", task="tts", model=model, parameters=parameters))
    failed = json.loads(await recv_any(ws))
    assert failed["header"]["event"] == "task-failed"
    assert failed["header"]["error_code"] == "InvalidParameter"
    assert failed["header"]["error_message"] == message


async def test_finish_without_text_fails(sim: Simulator) -> None:
    ws = await _started(sim)
    await ws.send(finish_task("tts-1"))
    items = await _collect(ws)
    assert isinstance(items[-1], dict)
    assert items[-1]["header"]["error_message"] == "Please ensure input text is valid."


async def test_idle_rule(sim: Simulator) -> None:
    sim.configure(asr_idle_timeout=0.3)
    ws = await _started(sim)
    await ws.send(continue_task("tts-1", "你好。"))
    items = await _collect(ws)  # speaks, then the client says nothing more
    assert _kind(items[-1]) == "task-failed"
    assert isinstance(items[-1], dict)
    assert items[-1]["header"]["error_message"] == "request timeout after 0.3 seconds."
    assert "sentence-end" in [_kind(i) for i in items]


async def test_faults(sim: Simulator) -> None:
    sim.faults.add(
        Fault.task_failed("tts_cosyvoice", after=1, code="InternalError", message="engine down")
    )
    ws = await _started(sim)
    await ws.send(continue_task("tts-1", "今天天气很好我们去公园散步吧。"))
    items = await _collect(ws)
    assert sum(isinstance(i, bytes) for i in items) == 1
    assert isinstance(items[-1], dict) and items[-1]["header"]["error_message"] == "engine down"
    assert sim.log.cosyvoice_sessions[0].failed == ("InternalError", "engine down")

    sim.faults.add(Fault.drop(after_chunks=2, endpoint="tts_cosyvoice"))
    ws = await _started(sim, "tts-2")
    await ws.send(continue_task("tts-2", "今天天气很好我们去公园散步吧。"))
    binaries = 0
    with pytest.raises(websockets.ConnectionClosedError):
        while True:
            if isinstance(await recv_any(ws), bytes):
                binaries += 1
    assert binaries == 2

    sim.faults.add(Fault.stall(0, None, endpoint="tts_cosyvoice"))
    ws = await _started(sim, "tts-3")
    await ws.send(continue_task("tts-3", "你好。"))
    frames: list[str | bytes] = []
    with contextlib.suppress(TimeoutError):
        while True:  # the stall never ends: only what preceded it arrives
            frames.append(await recv_any(ws, within=0.3))
    assert [_kind(json.loads(f)) for f in frames] == ["sentence-begin"]
    await ws.close()
    await sim.wait_closed("tts_cosyvoice", timeout=5)
    assert sim.log.cosyvoice_sessions[-1].aborted


async def test_new_run_task_interrupts(sim: Simulator) -> None:
    sim.configure(tts_realtime_factor=1.0)
    ws = await _started(sim, "a")
    await ws.send(continue_task("a", "今天天气很好我们去公园散步吧。"))
    while not isinstance(await recv_any(ws), bytes):
        pass
    await ws.send(
        run_task("b", task="tts", model="cosyvoice-v2", parameters={"voice": "longxiaochun_v2"})
    )
    while True:
        frame = await recv_any(ws)
        if isinstance(frame, str) and json.loads(frame)["header"]["task_id"] == "b":
            break
    assert sim.log.cosyvoice_sessions[0].aborted
    assert not sim.log.cosyvoice_sessions[0].finished


async def test_rate_limit_at_run_task(sim: Simulator) -> None:
    sim.faults.add(Fault.http_error(429, code="insufficient_quota", endpoint="tts_cosyvoice"))
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("x", task="tts", model="cosyvoice-v2"))
    failed = json.loads(await recv_any(ws))["header"]
    assert (failed["event"], failed["error_code"]) == ("task-failed", "Throttling.AllocationQuota")
    assert failed["error_message"] == "Allocated quota exceeded, please increase your quota limit."
    # An ASR task on another socket is not affected.
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("y"))
    assert json.loads(await recv_any(ws))["header"]["event"] == "task-started"


@pytest.mark.parametrize("model", ["paraformer-v2", "qwen3-tts-flash", "qwen-tts-realtime", "cosy"])
async def test_a_model_the_task_tts_endpoint_does_not_serve_is_model_not_found(
    sim: Simulator, model: str
) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    await ws.send(run_task("x", task="tts", model=model))
    failed = json.loads(await recv_any(ws))["header"]
    assert (failed["event"], failed["error_code"]) == ("task-failed", "ModelNotFound")
    assert failed["error_message"] == f"Model not found ({model})!"


@pytest.mark.parametrize(
    "model",
    ["qwen-audio-3.0-tts-flash", "qwen-audio-3.1-tts-flash", "cosyvoice-v3-plus", "cosyvoice-v1"],
)
async def test_every_task_tts_model_speaks(sim: Simulator, model: str) -> None:
    ws = await connect(sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"])
    voice = {"cosyvoice-v1": "longxiaochun"}.get(model, "longanyang")
    params = {"voice": voice, "format": "pcm", "sample_rate": 48000}
    await ws.send(run_task("t", task="tts", model=model, parameters=params))
    assert json.loads(await recv_any(ws))["header"]["event"] == "task-started"
    await ws.send(continue_task("t", "你好你好。"))
    await ws.send(finish_task("t"))
    audio = b"".join(i for i in await _collect(ws) if isinstance(i, bytes))
    assert duration_of(audio, "pcm", 48000) == pytest.approx(1.0 + 0.25, abs=0.05)


async def test_the_sdks_default_format_is_mp3_at_22050(sim: Simulator) -> None:
    # dashscope.audio.tts_v2.SpeechSynthesizer(model, voice) with no format sends "Default" and 0
    ws = await _started(sim, format="Default", sample_rate=0)
    await ws.send(continue_task("tts-1", "你好你好。"))
    await ws.send(finish_task("tts-1"))
    audio = b"".join(i for i in await _collect(ws) if isinstance(i, bytes))
    assert duration_of(audio, "mp3") == pytest.approx(1.25, abs=0.15)
    record = sim.log.cosyvoice_sessions[-1]
    assert (record.params["format"], record.params["sample_rate"]) == ("Default", 0)
