"""A full ``/v1/chat/audio`` turn with each synthesis model of the catalogue configured (TTS_VOICE and
TTS_SAMPLE_RATE unset: the catalogue's defaults), against the strict simulator; and the 23 s rule of the task
WebSocket with a chat model slower to its first token than the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_gateway.providers.dashscope.catalogue import TTS_MODELS, TtsProtocol
from qwen_gateway.simulator import Simulator, SimulatorConfig

from .conftest import (
    UPSTREAM_KEY,
    client,
    decoded_samples,
    gateway,
    packets,
    voice_tasks,
    wav_bytes,
)

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天，气温二十五度。适合出门散步！记得带上水。"

MODELS = [
    "qwen-tts-realtime",
    "qwen3-tts-flash-realtime",
    "qwen3-tts-instruct-flash-realtime",
    "cosyvoice-v1",
    "cosyvoice-v2",
    "cosyvoice-v3-flash",
    "cosyvoice-v3-plus",
    "qwen-audio-3.0-tts-flash",
    "qwen-audio-3.1-tts-flash",
    "qwen3-tts-flash",
    "qwen-tts",
]


def spoken(sim: Simulator, model: str) -> tuple[int, str, str]:
    """(PCM bytes the simulator produced, the text it was given, the voice) for ``model``'s protocol."""
    protocol = TTS_MODELS[model].protocol
    if protocol is TtsProtocol.REALTIME:
        (session,) = sim.log.tts_sessions
        assert session.model == model
        audio = sum(r.audio_bytes for r in session.responses)
        return audio, session.text, str(session.session["voice"])
    if protocol is TtsProtocol.TASK:
        (task,) = sim.log.cosyvoice_sessions
        assert task.model == model and task.finished
        return task.audio_bytes, "".join(task.texts), str(task.params["voice"])
    requests = sim.log.http_tts_requests
    assert requests and all(r.body["model"] == model and r.completed for r in requests)
    audio = sum(r.audio_bytes for r in requests)
    return audio, "".join(r.text for r in requests), str(requests[0].body["input"]["voice"])


async def _turn(tmp_path: Path, model: str, config: SimulatorConfig | None = None) -> None:
    async with gateway(tmp_path, config, tts_model=model) as gw:
        assert gw.settings.tts_voice == "" and gw.settings.tts_sample_rate == 0
        audio = wav_bytes(1.0)
        gw.sim.register_transcript(audio, QUESTION)
        gw.sim.set_reply(ANSWER)
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(audio))
            await c.until("audio_complete", wait=30)
        (done,) = c.bodies("chat_tts_complete")
        assert done["assistant_response"] == ANSWER
        assert done["tts_success"] is True
        assert done["segments_count"] == done["total_segments"] >= 2
        pcm_bytes, text, voice = spoken(gw.sim, model)
        assert text == ANSWER  # the whole answer was spoken
        assert voice == TTS_MODELS[model].default_voice
        samples, rate = decoded_samples(c.mp3())
        assert rate == TTS_MODELS[model].default_sample_rate
        assert pcm_bytes // 2 <= samples <= pcm_bytes // 2 + 1152 + 576 * 2
    assert not voice_tasks()


@pytest.mark.parametrize("model", MODELS)
async def test_a_turn_speaks_with_every_model(tmp_path: Path, model: str) -> None:
    await _turn(tmp_path, model)


def test_every_synthesis_model_of_the_catalogue_is_covered() -> None:
    assert sorted(MODELS) == sorted(TTS_MODELS)


@pytest.mark.parametrize("model", ["cosyvoice-v2", "qwen-audio-3.1-tts-flash"])
async def test_a_first_token_slower_than_the_23_s_rule_is_still_spoken(
    tmp_path: Path, model: str
) -> None:
    # The rule scaled down to 0.5 s, the chat's first token at 1.2 s: a task opened with the chat request
    # would fail with "request timeout after 0.5 seconds." before the first sentence.
    config = SimulatorConfig(api_key=UPSTREAM_KEY, asr_idle_timeout=0.5, ttft=1.2)
    await _turn(tmp_path, model, config)
