"""The official ``dashscope`` SDK as referee of the Omni bridge's upstream frames: the same manual turn made by
the SDK's ``OmniRealtimeConversation`` and by :class:`~qwen_gateway.realtime.omni.OmniBridge` (from GA client
events), both captured at the simulator, must match frame by frame up to ``event_id``, except where named in
:data:`SDK_ONLY`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import dashscope
import pytest
from dashscope.audio.qwen_omni import MultiModality, OmniRealtimeConversation

from qwen_gateway.config import load_settings
from qwen_gateway.providers.dashscope.asr_qwen_realtime import MAX_AUDIO_CHUNK
from qwen_gateway.providers.dashscope.policy import Backoff
from qwen_gateway.realtime.omni import OmniBridge, OmniTurn
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator.audio import synthesize

from .test_realtime_sdk import Events, chunks, frames_of, realtime_url

KEY = "sk-referee"
OMNI = "qwen3-omni-flash-realtime"
SPEECH = synthesize("今天天气怎么样？", 16000)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode()

#: ``session.update`` fields where the SDK's generic defaults differ from what the bridge sends, with both values:
#: the SDK's ``AudioFormat`` enum spells 24 kHz output ``pcm16`` where the model's docs and its own
#: ``session.created`` say ``pcm24``; the SDK asks for ``input_audio_transcription: {"model": None}`` where the
#: bridge keeps the server's default recogniser (the user's transcript is needed for history).
SDK_ONLY: dict[str, tuple[Any, Any]] = {
    "output_audio_format": ("pcm16", "pcm24"),
    "input_audio_transcription": ({"model": None}, None),
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY, capture_frames=True)) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def sdk_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope, "api_key", KEY)


def sdk_turn(sim: Simulator) -> Events:
    events = Events()
    conv = OmniRealtimeConversation(model=OMNI, callback=events, url=realtime_url(sim))
    conv.connect()
    events.wait_for("session.created")
    conv.update_session(
        output_modalities=[MultiModality.TEXT, MultiModality.AUDIO],
        voice="Ethan",
        instructions="Be brief.",
        enable_turn_detection=False,
    )
    events.wait_for("session.updated")
    conv.append_video(JPEG)
    for piece in chunks(SPEECH):
        conv.append_audio(piece)
    conv.commit()
    conv.create_response()
    events.wait_for("response.done")
    conv.close()
    return events


async def bridge_turn(sim: Simulator) -> list[OmniTurn]:
    """The same turn from a GA client: 16 kHz PCM (no resampling, so the audio frames can be compared)."""
    inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    done = asyncio.Event()
    turns: list[OmniTurn] = []

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "response.done":
            done.set()

    async def on_turn(turn: OmniTurn) -> None:
        turns.append(turn)

    async def events() -> AsyncIterator[dict[str, Any]]:
        while (event := await inbox.get()) is not None:
            yield event

    settings = load_settings(sim.env, dotenv=None, qwen_api_key=KEY)
    bridge = OmniBridge(
        settings=settings,
        model=OMNI,
        api_key=None,
        send=send,
        on_usage=lambda usage: None,
        on_turn=on_turn,
        backoff=Backoff(retries=0),
    )
    task = asyncio.create_task(bridge.run(events()))
    for event in [
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["audio"],
                "instructions": "Be brief.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 16000},
                        "turn_detection": None,
                    },
                    "output": {"voice": "Ethan"},
                },
            },
        },
        {"type": "input_image_buffer.append", "image": JPEG},
        *[
            {"type": "input_audio_buffer.append", "audio": piece}
            for piece in chunks(SPEECH, MAX_AUDIO_CHUNK)
        ],
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create", "response": {}},
    ]:
        inbox.put_nowait(event)
    async with asyncio.timeout(20):
        await done.wait()
        inbox.put_nowait(None)
        await task
    return turns


def without_ids(frames: list[Any]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        assert isinstance(frame, dict) and frame["event_id"].startswith("event_"), frame
        out.append({k: v for k, v in frame.items() if k != "event_id"})
    return out


async def test_the_bridge_sends_what_the_sdk_sends(sim: Simulator) -> None:
    await asyncio.to_thread(sdk_turn, sim)
    await sim.wait_closed()
    (turn,) = await bridge_turn(sim)
    assert turn.status == "completed"
    await sim.wait_closed()
    sdk, ours = without_ids(frames_of(sim, 0)), without_ids(frames_of(sim, 1))
    sdk_session, our_session = sdk[0]["session"], ours[0]["session"]
    for key, (sdk_value, our_value) in SDK_ONLY.items():
        assert sdk_session.pop(key) == sdk_value, key
        assert our_session.pop(key, None) == our_value, key
    assert sdk == ours
    assert [f["type"] for f in ours] == [
        "session.update",
        "input_image_buffer.append",
        *["input_audio_buffer.append"] * len(chunks(SPEECH)),
        "input_audio_buffer.commit",
        "response.create",
    ]
