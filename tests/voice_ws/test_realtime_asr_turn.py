"""A full ``/v1/chat/audio`` turn recognised by ``qwen3-asr-flash-realtime`` (realtime protocol, manual commit at
the end of the upload), with uploads it does not take as they are: an MP3, and a WAV at 44.1 kHz. The gateway
decodes them to 16 kHz PCM on the way; the simulator recognises exactly the PCM it receives."""

from __future__ import annotations

import json
from pathlib import Path

import lameenc  # type: ignore[import-not-found]
import pytest

from qwen_gateway.simulator import Fault
from qwen_gateway.voice.decode import PcmDecoder
from qwen_gateway.voice.formats import sniff

from .conftest import client, gateway, packets, png_bytes, wav_bytes

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天。适合出门散步！"


def mp3_bytes(seconds: float, rate: int = 44100) -> bytes:
    wav = wav_bytes(seconds, rate=rate)
    enc = lameenc.Encoder()
    enc.set_channels(1)
    enc.set_in_sample_rate(rate)
    enc.set_out_sample_rate(rate)
    enc.set_bit_rate(64)
    return bytes(enc.encode(wav[44:])) + bytes(enc.flush())


def pcm16k(upload: bytes) -> bytes:
    """What the gateway sends the recogniser for ``upload`` (decoding does not depend on chunking)."""
    decoder = PcmDecoder(sniff(upload[:4096]), 16000)
    return decoder.feed(upload) + decoder.finish()


@pytest.mark.parametrize(
    ("upload", "ext"),
    [(mp3_bytes(2.0), "mp3"), (wav_bytes(2.0, rate=44100), "wav")],
    ids=["mp3-44k", "wav-44k"],
)
async def test_turn_with_realtime_recognition(tmp_path: Path, upload: bytes, ext: str) -> None:
    async with gateway(tmp_path, asr_model="qwen3-asr-flash-realtime") as gw:
        pcm = pcm16k(upload)
        gw.sim.register_transcript(pcm, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(upload))
            await c.until("audio_complete")
        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_success"] and complete["transcription_text"] == QUESTION
        assert complete["chat_success"] and complete["tts_success"]
        assert complete["assistant_response"] == ANSWER
        assert abs(complete["duration"] - 2.0) < 0.1
        assert complete["filepath"].endswith(f".{ext}")
        assert await gw.services.storage.objects.get(complete["filepath"]) == upload

        (session,) = gw.sim.log.realtime_asr_sessions
        assert session.model == "qwen3-asr-flash-realtime"
        assert session.session["input_audio_format"] == "pcm"
        assert session.session["sample_rate"] == 16000
        assert session.session["turn_detection"] is None
        assert bytes(session.audio) == pcm
        assert [(i.via, i.transcript) for i in session.items] == [("commit", QUESTION)]
        assert session.finished
        assert not gw.sim.log.asr_sessions, "nothing went to the task WebSocket"
        await gw.sim.wait_closed("realtime_asr", timeout=5)


async def test_an_8k_model_gets_the_upload_at_8k(tmp_path: Path) -> None:
    """The task WebSocket's ``paraformer-realtime-8k-v2`` takes 8 kHz only: a 16 kHz WAV is resampled."""
    upload = wav_bytes(1.5)
    async with gateway(tmp_path, asr_model="paraformer-realtime-8k-v2") as gw:
        decoder = PcmDecoder(sniff(upload[:4096]), 8000)
        pcm = decoder.feed(upload) + decoder.finish()
        gw.sim.register_transcript(pcm, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(upload))
            await c.until("audio_complete")
        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_text"] == QUESTION
        (task,) = gw.sim.log.asr_sessions
        assert task.params["format"] == "pcm" and task.params["sample_rate"] == 8000
        assert bytes(task.audio) == pcm


async def test_a_recognition_error_is_a_typed_error_event(tmp_path: Path) -> None:
    upload = mp3_bytes(1.0)
    async with gateway(tmp_path, asr_model="qwen3-asr-flash-realtime") as gw:
        gw.sim.faults.add(
            Fault.ws_error(endpoint="realtime_asr", after=0, code="internal_error", close=True)
        )
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(upload))
            await c.until("audio_complete")
        (error,) = c.bodies("error")
        assert error["code"] == "upstream_error", error
        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_success"] is False
        assert await gw.services.storage.objects.get(complete["filepath"]) == upload


async def test_vlm_turn_with_realtime_recognition(tmp_path: Path) -> None:
    audio, image = mp3_bytes(1.5), png_bytes()
    async with gateway(tmp_path, asr_model="qwen3-asr-flash-realtime") as gw:
        gw.sim.register_transcript(pcm16k(audio), QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw, "vlm") as c:
            await c.recv()
            await c.send_all(
                packets(image, 50 * 1024, type="image") + packets(audio, 20 * 1024, type="audio")
            )
            await c.ws.send(json.dumps({"type": "end"}))
            await c.until("vlm_complete")
        (complete,) = c.bodies("vlm_complete")
        assert complete["transcription"] == QUESTION and complete["vlm_response"] == ANSWER
        (session,) = gw.sim.log.realtime_asr_sessions
        assert session.session["sample_rate"] == 16000 and bytes(session.audio) == pcm16k(audio)
