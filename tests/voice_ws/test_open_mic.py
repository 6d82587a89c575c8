"""Open-microphone uploads end to end (``mode=stream``): packets without ``total``, the turn ends when the VAD hears
the end of the speech, or on ``{"type": "end"}``; recognition streams throughout; packets after the end are
acknowledged and dropped; ``seq`` 1 starts the next utterance."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from qwen_gateway.simulator.audio import synthesize

from .conftest import client, gateway

RATE = 16000
FRAME = RATE * 60 // 1000 * 2  # 60 ms of 16 kHz PCM16
ANSWER = "好的，我知道了。"


def silence(ms: int) -> bytes:
    return bytes(2 * RATE * ms // 1000)


def open_packets(pcm: bytes, first_seq: int = 1) -> list[str]:
    """``pcm`` as 60 ms open-microphone packets (no ``total``)."""
    return [
        json.dumps({"seq": first_seq + i, "data": base64.b64encode(pcm[o : o + FRAME]).decode()})
        for i, o in enumerate(range(0, len(pcm), FRAME))
    ]


QUERY = {"mode": "stream", "format": "pcm;rate=16000", "silence_ms": "500"}


async def test_the_turn_ends_when_the_speech_ends(tmp_path: Path) -> None:
    speech = silence(300) + synthesize("你好今天天气", RATE)
    trailing = silence(3000)  # the device keeps streaming after the speech
    frames = open_packets(speech + trailing)
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with client(gw, query=QUERY) as c:
            await c.recv()
            await c.send_all(frames)  # never an end: the VAD ends the utterance
            events = await c.until("audio_complete")
    acks = [next(iter(e.values())) for e in events if "packet_ack" in e]
    assert len(acks) == len(frames), "every packet is acknowledged, the ones after the end too"
    assert {a["total"] for a in acks} == {0}
    (complete,) = c.bodies("audio_complete")
    spoken_packets = len(speech) // FRAME
    # the utterance ended 500 ms (+ the VAD's frames) after the speech, long before the device stopped
    assert spoken_packets <= complete["packets"] < spoken_packets + 20
    assert complete["packets"] < len(frames)
    assert complete["transcription_success"] and complete["chat_success"]
    assert [b["turn_id"] for b in c.bodies("audio_complete")] == [1]
    # recognition streamed: the recogniser got the audio up to the end of speech, as it arrived
    (asr,) = gw.sim.log.asr_sessions or gw.sim.log.realtime_asr_sessions
    assert len(asr.audio) == complete["size"]


async def test_the_turn_ends_on_end(tmp_path: Path) -> None:
    speech = synthesize(
        "你好今天天气", RATE
    )  # no trailing silence: only the client knows it is done
    frames = open_packets(speech)
    async with gateway(tmp_path) as gw:
        gw.sim.register_transcript(speech, "你好今天天气")
        gw.sim.set_reply(ANSWER)
        async with client(gw, query=QUERY) as c:
            await c.recv()
            await c.send_all(frames)
            await c.ws.send('{"type": "end"}')
            await c.until("audio_complete")
    (complete,) = c.bodies("audio_complete")
    assert complete["packets"] == len(frames) and complete["size"] == len(speech)
    assert complete["transcription_text"] == "你好今天天气"


async def test_the_next_utterance_starts_with_seq_1(tmp_path: Path) -> None:
    first = silence(200) + synthesize("你好", RATE) + silence(1000)
    second = synthesize("天气", RATE)
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with client(gw, query=QUERY) as c:
            await c.recv()
            await c.send_all(open_packets(first))
            await c.until("audio_complete")
            await c.send_all(open_packets(second))
            await c.ws.send('{"type": "end"}')
            events: list[dict[str, Any]] = await c.until("audio_complete")
    assert [b["turn_id"] for b in c.bodies("audio_complete")] == [1, 2]
    assert any("chat_started" in e for e in events)


async def test_silence_alone_never_ends_a_turn(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw, query=QUERY) as c:
        await c.recv()
        await c.send_all(open_packets(silence(3000)))
        await c.ws.send('{"type": "end"}')
        await c.until("audio_complete")
    (complete,) = c.bodies("audio_complete")
    assert complete["packets"] == 50  # the whole upload, ended by the client
