"""Audio for devices on the seed endpoints, end to end: the format asked at the handshake (raw Opus packets, Ogg
Opus, PCM, MP3 with the format fields) decodes to the synthesised duration within one frame, Opus packets last
exactly ``frame_ms``, ``seq`` counts the turn's audio events; bad values are a 400 before the upgrade."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import av
import pytest
from websockets.exceptions import InvalidStatus

from .conftest import Gateway, client, gateway, packets, png_bytes, wav_bytes

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天，气温二十五度。适合出门散步！记得带上水。"


def synthesised_seconds(gw: Gateway) -> float:
    """Seconds of PCM the simulator's speech engine sent (every engine the gateway may use)."""
    log = gw.sim.log
    pcm = sum(r.audio_bytes for s in log.tts_sessions for r in s.responses)
    pcm += sum(s.audio_bytes for s in log.cosyvoice_sessions)
    pcm += sum(r.audio_bytes for r in log.http_tts_requests)
    return pcm / 2 / gw.settings.speech_sample_rate


def data_events(c: Any) -> list[dict[str, Any]]:
    return list(c.bodies("audio_stream:data"))


def packet_seconds(packet: bytes) -> float:
    ctx = av.CodecContext.create("libopus", "r")
    ctx.layout = "mono"  # type: ignore[attr-defined]
    return sum(f.samples / f.sample_rate for f in ctx.decode(av.Packet(packet)))  # type: ignore[attr-defined]


async def one_turn(gw: Gateway, query: dict[str, str]) -> Any:
    audio = wav_bytes(1.0)
    gw.sim.register_transcript(audio, QUESTION)
    gw.sim.set_reply(ANSWER)
    async with client(gw, query=query) as c:
        await c.recv()
        await c.send_all(packets(audio))
        await c.until("audio_complete")
    return c


@pytest.mark.parametrize(("rate", "frame_ms"), [(16000, 60), (24000, 20), (48000, 40)])
async def test_raw_opus_one_packet_per_event(tmp_path: Path, rate: int, frame_ms: int) -> None:
    async with gateway(tmp_path) as gw:
        query = {"audio_format": "opus", "sample_rate": str(rate), "frame_ms": str(frame_ms)}
        if rate != gw.settings.speech_sample_rate:
            pytest.importorskip(
                "qwen_gateway.voice.convert"
            )  # resampling lands with voice/convert.py
        c = await one_turn(gw, query)
        events = data_events(c)
        assert events
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        for e in events:
            assert (e["format"], e["sample_rate"], e["frame_ms"]) == ("opus", rate, frame_ms)
            assert e["duration_ms"] == frame_ms
            assert packet_seconds(base64.b64decode(e["data"])) == pytest.approx(frame_ms / 1000)
        played = len(events) * frame_ms / 1000 - 0.0065  # a player drops the encoder's lookahead
        assert 0 <= played - synthesised_seconds(gw) < frame_ms / 1000 + 1e-6
        assert c.names().index("audio_stream:finished") > c.names().index("audio_stream:data")


async def test_ogg_opus_stream(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        c = await one_turn(gw, {"audio_format": "ogg_opus", "frame_ms": "20"})
        events = data_events(c)
        ogg = b"".join(base64.b64decode(e["data"]) for e in events)
        assert ogg.startswith(b"OggS") and len(events) > 1
        with av.open(io.BytesIO(ogg), format="ogg") as container:
            seconds = sum(f.samples / f.sample_rate for f in container.decode(audio=0))
        assert abs(seconds - synthesised_seconds(gw)) < 0.02
        assert {e["format"] for e in events} == {"ogg_opus"}


async def test_pcm_at_the_asked_rate(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        rate = gw.settings.speech_sample_rate
        c = await one_turn(gw, {"audio_format": "pcm", "sample_rate": str(rate)})
        events = data_events(c)
        pcm = b"".join(base64.b64decode(e["data"]) for e in events)
        assert len(pcm) / 2 / rate == pytest.approx(synthesised_seconds(gw), abs=1 / rate)
        assert sum(e["duration_ms"] for e in events) == pytest.approx(len(pcm) / 2 / rate * 1000)


async def test_mp3_with_the_format_fields(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        c = await one_turn(gw, {"audio_format": "mp3", "sample_rate": "16000"})
        events = data_events(c)
        mp3 = b"".join(base64.b64decode(e["data"]) for e in events)
        with av.open(io.BytesIO(mp3), format="mp3") as container:
            frames = list(container.decode(audio=0))
        assert {f.sample_rate for f in frames} == {16000}
        seconds = sum(f.samples for f in frames) / 16000
        # LAME's delay and padding (no Xing header to trim them): at most 576 + two 576-sample frames
        assert 0 <= seconds - synthesised_seconds(gw) <= 3 * 576 / 16000
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert sum(e["duration_ms"] for e in events) / 1000 == pytest.approx(
            synthesised_seconds(gw), abs=0.001
        )


async def test_seed_clients_get_the_seed_events(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        c = await one_turn(gw, {})
        for e in data_events(c):
            assert set(e) <= {"event", "data", "turn_id"}


async def test_vlm_takes_the_format_too(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw, "vlm", query={"audio_format": "opus", "frame_ms": "20"}) as c:
            await c.recv()
            await c.send_all(packets(png_bytes(), 50_000, type="image"))
            await c.send_all(packets(audio, 50_000, type="audio"))
            await c.ws.send('{"type": "end"}')
            await c.until("vlm_complete")
        events = data_events(c)
        assert events and all(e["format"] == "opus" and e["frame_ms"] == 20 for e in events)


async def test_stream_mode_is_for_the_audio_endpoint(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        with pytest.raises(InvalidStatus) as info:
            async with client(gw, "vlm", query={"mode": "stream"}):
                pass
        assert info.value.response.status_code == 400
        async with client(gw, "audio", query={"mode": "stream"}) as c:
            assert "connected" in await c.recv()


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"audio_format": "flac"}, "audio_format"),
        ({"audio_format": "opus", "frame_ms": "25"}, "frame_ms"),
        ({"audio_format": "pcm", "sample_rate": "44100"}, "sample_rate"),
        ({"pace": "soon"}, "pace"),
        ({"mode": "stream", "silence_ms": "9"}, "silence_ms"),
    ],
)
async def test_bad_values_are_400_before_the_upgrade(
    tmp_path: Path, query: dict[str, str], param: str
) -> None:
    async with gateway(tmp_path) as gw:
        for endpoint in ("audio", "vlm"):
            with pytest.raises(InvalidStatus) as info:
                async with client(gw, endpoint, query=query):
                    pass
            response = info.value.response
            assert response.status_code == 400

            error = json.loads(response.body)["error"]
            assert error["code"] == "invalid_parameter" and error["param"] == param


# ------------------------------------------------------------------------------------------ paced delivery


async def timed_turn(c: Any, audio: bytes) -> list[tuple[float, dict[str, Any]]]:
    """Upload ``audio``, receive up to ``audio_complete``; every event with its arrival time (client clock)."""
    loop = asyncio.get_running_loop()
    await c.send_all(packets(audio))
    arrivals: list[tuple[float, dict[str, Any]]] = []
    while True:
        event = await c.recv(20)
        arrivals.append((loop.time(), event))
        if "audio_complete" in event:
            return arrivals


async def test_paced_audio_never_runs_ahead_of_playback(tmp_path: Path) -> None:
    lead, frame = 300, 60
    async with gateway(tmp_path) as gw:
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER)
        query = {"audio_format": "opus", "frame_ms": str(frame), "pace": "realtime"}
        async with client(gw, query=query) as c:
            await c.recv()
            arrivals = await timed_turn(c, audio)
    data = [
        (at, e["audio_stream"])
        for at, e in arrivals
        if e.get("audio_stream", {}).get("event") == "data"
    ]
    (finished_at,) = [
        at for at, e in arrivals if e.get("audio_stream", {}).get("event") == "finished"
    ]
    assert len(data) * frame > 2 * lead, (
        "the answer must outlast the lead for this test to mean anything"
    )
    start = data[0][0]  # the device starts playing when the first frame arrives
    total = 0.0
    for at, body in data:
        total += body["duration_ms"]
        ahead = total - (at - start) * 1000
        # lead + one frame; 30 ms for the first frame's own delivery time, which the device's clock includes
        assert ahead <= lead + frame + 30, (ahead, body["seq"])
    # the last frame is never cut by finished: it leaves after the last frame's playback time minus the lead
    assert (finished_at - start) * 1000 >= total - lead - 30


async def test_barge_in_while_paced_stops_the_audio_at_once(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio, second = wav_bytes(1.0), wav_bytes(1.0, seed=7)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.register_transcript(second, "再说一遍")
        gw.sim.set_reply(
            "".join(f"这是第{i}句比较长的回答内容，用来测试打断。" for i in range(1, 12))
        )
        query = {"audio_format": "opus", "frame_ms": "20", "pace": "100"}
        async with client(gw, query=query) as c:
            await c.recv()
            await c.send_all(packets(audio))
            while True:  # wait until the pacing holds the answer back
                event = await c.recv()
                if event.get("audio_stream", {}).get("seq") == 10:
                    break
            gw.sim.set_reply("好的。")  # the second answer is short
            await c.send_all(packets(second))
            got = await c.until("audio_stream:finished")
            turn_one = [
                e["audio_stream"] for e in got if e.get("audio_stream", {}).get("turn_id") == 1
            ]
            assert turn_one[-1]["event"] == "finished"
            # at most what was already on its way: the pacing held the rest, and it is dropped
            assert len(turn_one) < 10
            await c.until("audio_complete")
        assert [b["turn_id"] for b in c.bodies("audio_complete")] == [2]
