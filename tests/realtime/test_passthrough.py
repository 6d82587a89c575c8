"""``ClientEventPump``: frames -> normalised GA event dicts for a streaming backend (the Omni seam), errors answered
at once, the queue bounded."""

from __future__ import annotations

import asyncio
import json

from protocol import realtime as rt
from qwen_gateway.realtime.passthrough import ClientEventPump


async def test_frames_become_ga_dicts_and_bad_ones_errors() -> None:
    errors: list[rt.RealtimeErrorEvent] = []

    async def send_error(event: rt.RealtimeErrorEvent) -> None:
        errors.append(event)

    pump = ClientEventPump(send_error)
    await pump.on_frame(
        json.dumps(
            {
                "type": "session.update",
                "event_id": "e1",
                "session": {
                    "modalities": ["text", "audio"],
                    "input_audio_format": "g711_ulaw",
                    "voice": "Cherry",
                },
            }
        )
    )
    await pump.on_frame(json.dumps({"type": "input_audio_buffer.append", "audio": "AAEC"}))
    await pump.on_frame(json.dumps({"type": "input_image_buffer.append", "image": "aGk="}))
    await pump.on_frame(json.dumps({"type": "nope", "event_id": "e2"}))
    await pump.end()
    got = [e async for e in pump.events()]
    assert got == [
        {
            "type": "session.update",
            "event_id": "e1",
            "session": {
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"voice": "Cherry"},
                },
            },
        },
        {"type": "input_audio_buffer.append", "audio": "AAEC"},
        {"type": "input_image_buffer.append", "image": "aGk="},
    ]
    (error,) = errors
    assert error.error.code == "unknown_event" and error.error.event_id == "e2"


async def test_a_slow_backend_slows_the_reader_down() -> None:
    async def send_error(event: rt.RealtimeErrorEvent) -> None:
        raise AssertionError(event)

    pump = ClientEventPump(send_error, queue_size=2)
    frame = json.dumps({"type": "input_audio_buffer.commit"})
    await pump.on_frame(frame)
    await pump.on_frame(frame)
    blocked = asyncio.create_task(pump.on_frame(frame))
    await asyncio.sleep(0)
    assert not blocked.done()  # the queue is full: the reader waits
    events = pump.events()
    assert (await anext(events))["type"] == "input_audio_buffer.commit"
    await blocked
