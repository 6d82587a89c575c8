"""The model catalogue: exact names, dated snapshots and families pick a protocol; never a substring."""

from __future__ import annotations

import pytest

from qwen_gateway.config import ConfigError, load_settings
from qwen_gateway.providers.dashscope.catalogue import (
    ASR_MODELS,
    TTS_MODELS,
    AsrProtocol,
    CatalogueError,
    TtsProtocol,
    asr_model,
    tts_model,
)


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("paraformer-realtime-v2", AsrProtocol.TASK),
        ("paraformer-realtime-8k-v2", AsrProtocol.TASK),
        ("fun-asr-realtime", AsrProtocol.TASK),
        ("gummy-realtime-v1", AsrProtocol.TASK),
        ("qwen-audio-3.1-asr-flash-streaming", AsrProtocol.TASK),
        ("qwen3-asr-flash-realtime", AsrProtocol.REALTIME),
        ("qwen3-asr-flash-realtime-2025-10-27", AsrProtocol.REALTIME),
        ("paraformer-v2", AsrProtocol.FILE_URLS),
        ("fun-asr", AsrProtocol.FILE_URLS),
        ("qwen3-asr-flash-filetrans", AsrProtocol.FILE_URL),
        ("qwen3-asr-flash-filetrans-2025-11-17", AsrProtocol.FILE_URL),
        # Fun-ASR's file API, one URL in file_urls (the SDK 2.0.2's default and example).
        ("qwen-audio-3.1-asr-flash-filetrans", AsrProtocol.FILE_URLS),
    ],
)
def test_recognition_protocol_by_name(name: str, protocol: AsrProtocol) -> None:
    model = asr_model(name)
    assert model.protocol is protocol and model.name == name


@pytest.mark.parametrize(
    ("name", "protocol", "voice"),
    [
        ("qwen-tts-realtime", TtsProtocol.REALTIME, "Cherry"),
        ("qwen3-tts-flash-realtime-2025-09-18", TtsProtocol.REALTIME, "Cherry"),
        ("cosyvoice-v1", TtsProtocol.TASK, "longxiaochun"),
        ("cosyvoice-v2", TtsProtocol.TASK, "longxiaochun_v2"),
        ("cosyvoice-v3-plus", TtsProtocol.TASK, "longanyang"),
        ("qwen-audio-3.1-tts-flash", TtsProtocol.TASK, "longanhuan_v3.1"),
        ("qwen3-tts-flash", TtsProtocol.HTTP, "Cherry"),
        ("qwen-tts", TtsProtocol.HTTP, "Cherry"),
    ],
)
def test_synthesis_protocol_and_voice_by_name(name: str, protocol: TtsProtocol, voice: str) -> None:
    model = tts_model(name)
    assert (model.protocol, model.default_voice) == (protocol, voice)
    assert model.default_sample_rate in model.sample_rates


@pytest.mark.parametrize("name", ["my-realtime-model", "xparaformer-v2", "cosyvoice", "tts", ""])
def test_unknown_names_are_refused_not_guessed(name: str) -> None:
    with pytest.raises(CatalogueError, match="QWEN_AUDIO_RECOGNIZE_MODEL"):
        asr_model(name)
    with pytest.raises(CatalogueError, match="QG_TTS_MODEL"):
        tts_model(name)


def test_an_override_names_the_protocol_of_an_unknown_model() -> None:
    assert asr_model("acme-asr-9", "realtime").protocol is AsrProtocol.REALTIME
    assert tts_model("acme-tts-9", "http").protocol is TtsProtocol.HTTP
    with pytest.raises(CatalogueError, match="QG_ASR_PROTOCOL='websocket'"):
        asr_model("acme-asr-9", "websocket")


def test_sample_rates_each_model_refuses() -> None:
    with pytest.raises(
        CatalogueError, match="TTS_SAMPLE_RATE=22050: qwen-tts-realtime takes 24000"
    ):
        tts_model("qwen-tts-realtime", sample_rate=22050)
    assert (
        tts_model("qwen3-tts-flash-realtime", sample_rate=48000).name == "qwen3-tts-flash-realtime"
    )
    assert not asr_model("paraformer-realtime-8k-v2").accepts("pcm", 16000)
    assert asr_model("paraformer-realtime-v2").accepts("mp3", 44100)
    assert not asr_model("qwen3-asr-flash-realtime").accepts("mp3", 16000)


def test_every_row_is_consistent() -> None:
    for name, asr in ASR_MODELS.items():
        assert asr.name == name and asr_model(name) == asr
    for name, tts in TTS_MODELS.items():
        assert tts.name == name and tts_model(name) == tts


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"QWEN_AUDIO_RECOGNIZE_MODEL": "whisper-1"}, "QWEN_AUDIO_RECOGNIZE_MODEL"),
        ({"QG_TTS_MODEL": "tts-1"}, "QG_TTS_MODEL"),
        ({"TTS_SAMPLE_RATE": "44100"}, "TTS_SAMPLE_RATE"),
        ({"QG_TTS_PROTOCOL": "grpc", "QG_TTS_MODEL": "x"}, "QG_TTS_PROTOCOL"),
        ({"DASHSCOPE_REGION": "mars-1"}, "DASHSCOPE_REGION"),
    ],
)
def test_settings_refuse_a_misconfigured_model(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(env, dotenv=None)


def test_region_derives_every_url_not_set() -> None:
    s = load_settings({"DASHSCOPE_REGION": "intl"}, dotenv=None)
    assert s.chat_url == "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions"
    assert s.tts_url.startswith("wss://dashscope-intl.aliyuncs.com/api-ws/v1/realtime?")
    assert s.dashscope_ws_base == "wss://dashscope-intl.aliyuncs.com/api-ws/v1/inference"
    assert s.realtime_ws_url == "wss://dashscope-intl.aliyuncs.com/api-ws/v1/realtime"
    assert s.tts_http_endpoint == (
        "https://dashscope-intl.aliyuncs.com/api/v1/services/aigc/multimodal-generation/generation"
    )
    # an explicit URL wins, and the newer URLs follow the seed-era variables
    s = load_settings(
        {
            "DASHSCOPE_REGION": "intl",
            "REAL_TIME_AUDIO_URL": "ws://127.0.0.1:9/api-ws/v1/realtime?model=qwen-tts-realtime",
            "DASHSCOPE_HTTP_BASE_URL": "http://127.0.0.1:9/api/v1",
        },
        dotenv=None,
    )
    assert s.realtime_ws_url == "ws://127.0.0.1:9/api-ws/v1/realtime"
    assert s.tts_http_endpoint.startswith("http://127.0.0.1:9/api/v1/services/")
    assert s.chat_url.startswith("https://dashscope-intl.aliyuncs.com/")


def test_voice_and_rate_default_to_the_model() -> None:
    s = load_settings({"QG_TTS_MODEL": "cosyvoice-v2"}, dotenv=None)
    assert (s.speech_voice, s.speech_sample_rate) == ("longxiaochun_v2", 24000)
    s = load_settings({"QG_TTS_MODEL": "cosyvoice-v2", "TTS_VOICE": "longwan"}, dotenv=None)
    assert s.speech_voice == "longwan"
