"""``/v1/chat/vlm`` end to end: image + spoken question -> the VLM's spoken answer, in the seed's order."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from .conftest import client, compact, decoded_samples, gateway, packets, png_bytes, wav_bytes

QUESTION = "图片里有什么？"
ANSWER = "图片里是一块灰色的方块。它很小，只有十六个像素宽。"


async def test_full_vlm_turn_in_seed_order(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio, image = wav_bytes(1.5), png_bytes()
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw, "vlm") as c:
            assert (await c.recv())["connected"]["message"] == "VLM连接已建立"
            image_packets = packets(image, 50 * 1024, type="image")
            audio_packets = packets(audio, 20 * 1024, type="audio")
            await c.send_all(image_packets + audio_packets)
            await c.ws.send(json.dumps({"type": "end"}))
            await c.until("vlm_complete")
        names = compact(c.names())
        assert names[:4] == [
            "connected",
            "packet_ack*",
            "transcription_started",
            "vlm_chat_started",
        ]
        assert names[-3:] == ["audio_stream:finished", "vlm_chat_tts_complete", "vlm_complete"]
        assert set(names[4:-3]) <= {
            "vlm_chat_chunk",
            "vlm_chat_chunk*",
            "tts_started",
            "audio_stream:data",
            "audio_stream:data*",
        }
        assert c.names().index("tts_started") < c.names().index("audio_stream:data")
        acks = c.bodies("packet_ack")
        assert [a["type"] for a in acks] == ["image"] * len(image_packets) + ["audio"] * len(
            audio_packets
        )

        (started,) = c.bodies("vlm_chat_started")
        assert started["user_message"] == QUESTION
        assert started["image_url"].startswith("http")
        assert "".join(ch["chunk"] for ch in c.bodies("vlm_chat_chunk")) == ANSWER

        (done,) = c.bodies("vlm_chat_tts_complete")
        assert done["user_message"] == QUESTION and done["assistant_response"] == ANSWER
        assert done["audio_chunks"] == len(c.bodies("audio_stream:data")) > 0

        (complete,) = c.bodies("vlm_complete")
        assert complete["transcription"] == QUESTION and complete["vlm_response"] == ANSWER
        assert complete["audio_size"] == len(audio) and complete["image_size"] == len(image)
        assert abs(complete["duration"] - 1.5) < 0.01
        assert complete["audio_file"].endswith(".wav") and complete["image_file"].endswith(".png")

        # The VLM was asked about the image itself, with the recognised question.
        (request,) = gw.sim.log.chat_requests
        assert request.body["model"] == gw.settings.vlm_model
        content = request.messages[-1]["content"]
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        assert url == "data:image/png;base64," + base64.b64encode(image).decode()
        assert {"type": "text", "text": QUESTION} in content

        (tts,) = gw.sim.log.tts_sessions
        samples, _ = decoded_samples(c.mp3())
        pcm = sum(r.audio_bytes for r in tts.responses) // 2
        assert pcm <= samples <= pcm + 1152 + 1152
        await gw.sim.wait_closed(timeout=5)


async def test_vlm_end_before_uploads_complete_is_a_typed_error(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw, "vlm") as c:
        await c.recv()
        await c.send_all(packets(png_bytes(), type="image"))
        await c.ws.send(json.dumps({"type": "end"}))
        events = await c.until("error")
        assert events[-1]["error"]["code"] == "incomplete_upload"
        # The connection goes on: finish the audio and ask again.
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, QUESTION)
        await c.send_all(packets(audio, type="audio"))
        await c.ws.send(json.dumps({"type": "end"}))
        await c.until("vlm_complete")
        assert c.bodies("vlm_complete")[0]["transcription"] == QUESTION


async def test_vlm_image_that_is_not_an_image(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, client(gw, "vlm") as c:
        await c.recv()
        await c.send_all(packets(b"not an image at all", type="image"))
        await c.send_all(packets(wav_bytes(0.5), type="audio"))
        await c.ws.send(json.dumps({"type": "end"}))
        events = await c.until("vlm_complete")
        errors = [e["error"] for e in events if "error" in e]
        assert len(errors) == 1 and "image" in errors[0]["message"]
        assert c.bodies("vlm_complete")[0]["vlm_response"] == ""
        # Nothing reached an upstream.
        assert not gw.sim.log.chat_requests and not gw.sim.log.asr_sessions


async def test_vlm_cancel_mid_answer(tmp_path: Path) -> None:
    from qwen_gateway.simulator import SimulatorConfig

    from .conftest import UPSTREAM_KEY

    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=40, tts_realtime_factor=0.5)
    async with gateway(tmp_path, config) as gw:
        audio = wav_bytes(0.5)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER * 20)
        async with client(gw, "vlm") as c:
            await c.recv()
            await c.send_all(packets(png_bytes(), type="image") + packets(audio, type="audio"))
            await c.ws.send(json.dumps({"type": "end"}))
            await c.until("audio_stream:data")
            await c.ws.send(json.dumps({"type": "cancel"}))
            events = await c.until("audio_stream:finished")
            assert events[-1]["audio_stream"]["turn_id"] == 1
            await gw.sim.wait_closed(timeout=5)
            # The connection goes on with a new question.
            await c.send_all(packets(png_bytes(), type="image") + packets(audio, type="audio"))
            gw.sim.set_reply(ANSWER)
            await c.ws.send(json.dumps({"type": "end"}))
            await c.until("vlm_complete")
        assert [b["turn_id"] for b in c.bodies("vlm_complete")] == [2]
