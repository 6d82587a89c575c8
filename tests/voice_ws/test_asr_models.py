"""A full ``/v1/chat/audio`` turn with each recognition model of the catalogue configured, against the strict
simulator (which serves each model only where DashScope does).

Streaming models (task WebSocket) get the upload while it arrives; file models (``file_urls`` or ``file_url``)
get the stored object's URL, which the simulator downloads from the gateway. Models that only take 8 kHz (or
16 kHz) get an upload recorded at that rate: converting other uploads is the transcoding stage's job (another
branch), not this test's. The realtime-protocol models (``qwen3-asr-flash-realtime``) have their own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_gateway.providers.dashscope.catalogue import ASR_MODELS, AsrModel, AsrProtocol

from .conftest import client, gateway, packets, wav_bytes

MODELS = [m for m in ASR_MODELS.values() if m.protocol is not AsrProtocol.REALTIME]


def upload_rate(model: AsrModel) -> int:
    """A rate the model takes as it is: 16 kHz unless the catalogue allows only others."""
    if model.sample_rates is None or 16000 in model.sample_rates:
        return 16000
    return min(model.sample_rates)


@pytest.mark.parametrize("model", MODELS, ids=[m.name for m in MODELS])
async def test_a_turn_with_each_recognition_model(tmp_path: Path, model: AsrModel) -> None:
    async with gateway(tmp_path, asr_model=model.name) as gw:
        rate = upload_rate(model)
        audio = wav_bytes(0.8, rate=rate, seed=len(model.name))
        question = f"用{model.name}识别。"
        gw.sim.register_transcript(audio, question)
        gw.sim.set_reply("好的。")
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete")
        assert c.bodies("chat_started")[0]["user_message"] == question
        (complete,) = c.bodies("audio_complete")
        assert complete["transcription_success"] and complete["transcription_text"] == question
        assert complete["chat_success"] and complete["tts_success"]
        assert "error" not in c.names()

        if model.protocol is AsrProtocol.TASK:
            (session,) = gw.sim.log.asr_sessions
            assert session.model == model.name and session.finished
            assert (session.params["format"], session.params["sample_rate"]) == ("wav", rate)
            assert gw.sim.log.file_asr_tasks == []
        else:
            (task,) = gw.sim.log.file_asr_tasks
            assert task.body["model"] == model.name and task.status == "SUCCEEDED"
            key = "file_url" if model.protocol is AsrProtocol.FILE_URL else "file_urls"
            assert set(task.body["input"]) == {key}
            assert gw.sim.log.asr_sessions == []
