"""Qwen-TTS-Realtime on ``/api-ws/v1/realtime``: event order, audio, session rules, faults, records."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import connect, recv_json

CYCLE = [
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.audio.delta",
    "response.audio.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


def _send(type: str, **fields: Any) -> str:
    return json.dumps({"event_id": "event_test", "type": type, **fields})


async def _drain(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every event until the server closes."""
    events = []
    try:
        while True:
            events.append(await recv_json(ws))
    except websockets.ConnectionClosedOK:
        pass
    return events


def _collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not (out and out[-1] == t == "response.audio.delta"):
            out.append(t)
    return out


def _audio(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"
    )


async def test_server_commit_session(sim: Simulator) -> None:
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    created = await recv_json(ws)
    assert created["type"] == "session.created" and created["event_id"].startswith("event_")
    session = created["session"]
    assert session | {"id": None} == {
        "object": "realtime.session",
        "mode": "server_commit",
        "model": "qwen-tts-realtime",
        "voice": "Cherry",
        "language_type": "Auto",
        "response_format": "pcm",
        "sample_rate": 24000,
        "id": None,
    }
    assert session["id"].startswith("sess_")
    await ws.send(_send("session.update", session={"voice": "Ethan", "language_type": "Chinese"}))
    updated = await recv_json(ws)
    assert updated["type"] == "session.updated"
    assert updated["session"]["voice"] == "Ethan" and updated["session"]["id"] == session["id"]
    await ws.send(_send("input_text_buffer.append", text="你好，"))
    await ws.send(_send("input_text_buffer.append", text="世界。Hello"))
    await ws.send(_send("session.finish"))
    events = await _drain(ws)
    types = _collapse([e["type"] for e in events])
    # "你好，世界。" is one sentence synthesised as soon as it is complete; "Hello" on session.finish.
    assert types == CYCLE + CYCLE + ["session.finished"]
    assert ws.close_code == 1000
    first_done = next(e for e in events if e["type"] == "response.done")
    assert first_done["response"]["status"] == "completed"
    usage = first_done["response"]["usage"]
    assert (
        usage["output_tokens"] >= 50
        and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    )
    response_ids = {e.get("response_id") for e in events if "response_id" in e}
    assert len(response_ids) == 2
    (record,) = sim.log.tts_sessions
    assert record.text_segments == ["你好，", "世界。Hello"]
    assert [r.text for r in record.responses] == ["你好，世界。", "Hello"]
    assert record.session_updates == [{"voice": "Ethan", "language_type": "Chinese"}]
    assert record.finish_received and record.finished
    await sim.wait_closed("tts", timeout=5)
    assert record.closed and record.connection.close_reason == "complete"


async def test_audio_is_pcm_whose_length_follows_the_text(sim: Simulator) -> None:
    async def speak(text: str) -> bytes:
        ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
        await recv_json(ws)
        await ws.send(_send("input_text_buffer.append", text=text))
        await ws.send(_send("session.finish"))
        return _audio(await _drain(ws))

    chinese = await speak("今天天气很好我们去公园")  # 11 characters
    latin = await speak("abcdefghijkl" * 2)  # 24 letters
    assert len(chinese) % 2 == 0
    assert len(chinese) / 48000 == pytest.approx(11 / 4, rel=0.01)
    assert len(latin) / 48000 == pytest.approx(24 / 12, rel=0.01)
    samples = memoryview(chinese).cast("h")
    assert max(samples) > 3000 and min(samples) < -3000  # a voice, not silence
    longer = await speak("今天天气很好我们去公园今天天气很好我们去公园")
    assert len(longer) > len(chinese)


async def test_sample_rate_rules_per_model(sim: Simulator) -> None:
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    await ws.send(_send("session.update", session={"sample_rate": 16000}))
    error = await recv_json(ws)
    assert error["type"] == "error"
    assert (
        error["error"]["param"] == "session.sample_rate"
        and error["error"]["code"] == "invalid_value"
    )
    await ws.close()
    url = sim.env["REAL_TIME_AUDIO_URL"].replace("qwen-tts-realtime", "qwen3-tts-flash-realtime")
    ws = await connect(url)
    await recv_json(ws)
    await ws.send(_send("session.update", session={"sample_rate": 16000}))
    assert (await recv_json(ws))["session"]["sample_rate"] == 16000
    await ws.send(_send("input_text_buffer.append", text="你好你好"))
    await ws.send(_send("session.finish"))
    events = await _drain(ws)
    assert len(_audio(events)) == 16000 * 2  # 4 characters = 1 s at 16 kHz
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["usage"] == {"characters": 4}


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
async def test_qwen_tts_realtime_takes_24000_only(sim: Simulator, rate: int) -> None:
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    await ws.send(_send("session.update", session={"sample_rate": rate}))
    error = await recv_json(ws)
    assert error["type"] == "error" and error["error"]["param"] == "session.sample_rate"
    assert error["error"]["message"] == f"Invalid value: {rate}. Supported values are: 24000."
    await ws.close()


@pytest.mark.parametrize(
    "model", ["cosyvoice-v2", "qwen3-tts-flash", "qwen-audio-3.1-tts-flash", "my-tts", ""]
)
async def test_a_model_the_realtime_tts_endpoint_does_not_serve_is_refused(
    sim: Simulator, model: str
) -> None:
    url = sim.env["REAL_TIME_AUDIO_URL"].replace("qwen-tts-realtime", model)
    ws = await connect(url)
    error = await recv_json(ws)
    assert (error["type"], error["error"]["code"]) == ("error", "model_not_found")
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(ws)
    assert ws.close_code == 1008


async def test_commit_mode(sim: Simulator) -> None:
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    await ws.send(_send("session.update", session={"mode": "commit"}))
    await recv_json(ws)
    await ws.send(_send("input_text_buffer.commit"))
    empty = await recv_json(ws)
    assert empty["type"] == "error" and empty["error"]["event_id"] == "event_test"
    await ws.send(_send("input_text_buffer.append", text="第一句。第二句。"))
    await ws.send(_send("input_text_buffer.clear"))
    assert (await recv_json(ws))["type"] == "input_text_buffer.cleared"
    await ws.send(_send("input_text_buffer.append", text="只说这一句。"))
    await ws.send(_send("input_text_buffer.commit"))
    assert await recv_json(ws) | {"event_id": None} == {
        "event_id": None,
        "type": "input_text_buffer.committed",
        "item_id": "",
    }
    types = []
    while True:
        event = await recv_json(ws)
        types.append(event["type"])
        if event["type"] == "response.done":
            break
    assert _collapse(types) == CYCLE
    await ws.send(_send("session.update", session={"voice": "Serena"}))
    late = await recv_json(ws)
    assert (
        late["error"]["message"]
        == "Session update error: session already started or finished or failed."
    )
    await ws.send(_send("no.such.event"))
    assert (await recv_json(ws))["type"] == "error"
    await ws.send("not json")
    assert (await recv_json(ws))["type"] == "error"
    await ws.send(_send("session.finish"))
    assert [e["type"] for e in await _drain(ws)] == ["session.finished"]
    assert [r.text for r in sim.log.tts_sessions[0].responses] == ["只说这一句。"]
    assert sim.log.tts_sessions[0].commits == 1


async def test_handshake_auth_and_errors(sim: Simulator) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(sim.env["REAL_TIME_AUDIO_URL"], key="bad")
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body)["code"] == "InvalidApiKey"
    sim.faults.add(Fault.http_error(403, code="AccessDenied", endpoint="tts"))
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(sim.env["REAL_TIME_AUDIO_URL"])
    assert info.value.response.status_code == 403
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"] + "&api_key=sk-query", key=None)
    assert (await recv_json(ws))["type"] == "session.created"
    await ws.close()
    await sim.wait_closed("tts", timeout=5)
    assert [c.close_reason for c in sim.log.closes] == ["rejected", "rejected", "client"]


async def test_403_rejection_config() -> None:
    async with Simulator(SimulatorConfig(ws_reject_status=403)) as sim:
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(sim.env["REAL_TIME_AUDIO_URL"], key=None)
        assert info.value.response.status_code == 403


async def _speak_with(
    sim: Simulator, text: str = "今天天气很好。我们去公园散步吧。"
) -> ClientConnection:
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    await ws.send(_send("input_text_buffer.append", text=text))
    await ws.send(_send("session.finish"))
    return ws


async def test_drop_after_deltas(sim: Simulator) -> None:
    sim.faults.add(Fault.drop(after_chunks=2, endpoint="tts"))
    ws = await _speak_with(sim)
    deltas = 0
    with pytest.raises(websockets.ConnectionClosedError) as info:
        while True:
            if (await recv_json(ws))["type"] == "response.audio.delta":
                deltas += 1
    assert deltas == 2 and info.value.rcvd is not None and info.value.rcvd.code == 1011
    await sim.wait_closed("tts", timeout=5)
    assert sim.log.tts_sessions[0].connection.close_reason == "dropped"


async def test_ws_error_event(sim: Simulator) -> None:
    sim.faults.add(
        Fault.ws_error("tts", after=1, code="internal_error", message="boom", close=True)
    )
    ws = await _speak_with(sim)
    events = []
    with pytest.raises(websockets.ConnectionClosedError):
        while True:
            events.append(await recv_json(ws))
    assert events[-1]["type"] == "error" and events[-1]["error"]["message"] == "boom"
    assert sum(e["type"] == "response.audio.delta" for e in events) == 1


async def test_stall_until_client_leaves(sim: Simulator) -> None:
    sim.faults.add(Fault.stall(after_chunks=1, seconds=None, endpoint="tts"))
    ws = await _speak_with(sim)
    while (await recv_json(ws))["type"] != "response.audio.delta":
        pass
    await ws.close()
    await sim.wait_closed("tts", timeout=5)
    assert sim.log.tts_sessions[0].connection.close_reason == "client"


async def test_malformed_frame(sim: Simulator) -> None:
    sim.faults.add(Fault.malformed("tts", after=0))
    ws = await _speak_with(sim)
    frames = []
    while True:
        frame = await ws.recv()
        frames.append(frame)
        try:
            json.loads(frame)
        except json.JSONDecodeError:
            break
    assert len(frames) == 4  # response.created, output_item.added, content_part.added, then garbage


async def test_bursty_and_slow_audio_keep_the_audio(sim: Simulator) -> None:
    sim.faults.add(Fault.bursty_audio(burst=2, pause=0.01), Fault.slow_audio(0.01))
    ws = await _speak_with(sim, "你好你好。")
    events = await _drain(ws)
    assert len(_audio(events)) == int(24000 * (1.0 + 0.25)) * 2
    assert {f.fault.kind for f in sim.faults.fired} == {"bursty_audio", "slow_audio"}


async def test_idle_close(sim: Simulator) -> None:
    sim.faults.add(Fault.idle_timeout(0.2, endpoint="tts"))
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    events = await _drain(ws)
    assert [e["type"] for e in events] == ["error"]
    await sim.wait_closed("tts", timeout=5)
    assert sim.log.closes[0].close_reason == "idle"


async def test_audio_streams_while_synthesis_goes_on(sim: Simulator) -> None:
    """At real-time pacing the client holds audio before the response is complete."""
    sim.configure(tts_realtime_factor=1.0)
    ws = await _speak_with(sim, "今天天气很好我们去公园散步吧。")
    while (await recv_json(ws))["type"] != "response.audio.delta":
        pass
    response = sim.log.tts_sessions[0].responses[0]
    assert response.status == "in_progress"
    assert response.audio_bytes < 48000
    await ws.close()
    await sim.wait_closed("tts", timeout=5)
    assert sim.log.tts_sessions[0].closed


async def test_cancel_response(sim: Simulator) -> None:
    sim.configure(tts_realtime_factor=1.0)
    ws = await _speak_with(sim, "今天天气很好我们去公园散步吧。")
    while (await recv_json(ws))["type"] != "response.audio.delta":
        pass
    await ws.send(_send("response.cancel"))
    events = await _drain(ws)
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    assert events[-1]["type"] == "session.finished"


async def test_idle_rule_waits_while_speaking(sim: Simulator) -> None:
    sim.configure(tts_realtime_factor=0.5, tts_idle_timeout=0.2)
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    await recv_json(ws)
    await ws.send(
        _send("input_text_buffer.append", text="你好你好。")
    )  # 1.25 s of audio, spoken in ~0.6 s
    events = await _drain(ws)
    types = [e["type"] for e in events]
    assert types.index("response.done") < types.index("error")
    assert types[-1] == "error" and events[-1]["error"]["code"] == "idle_timeout"
    assert sim.log.tts_sessions[0].responses[0].status == "completed"


async def test_handshake_delay(sim: Simulator) -> None:
    sim.faults.add(Fault.delay(0.05, endpoint="tts"))
    ws = await connect(sim.env["REAL_TIME_AUDIO_URL"])
    assert (await recv_json(ws))["type"] == "session.created"
    assert [f.fault.kind for f in sim.faults.fired] == ["delay"]
