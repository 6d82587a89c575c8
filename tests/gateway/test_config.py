"""Settings: seed variable names, validation errors that name the variable, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_gateway.config import ConfigError, ignored_variables, load_settings


def test_defaults_are_embedded() -> None:
    s = load_settings({}, dotenv=None)
    assert (s.host, s.port) == ("127.0.0.1", 5000)
    assert s.chat_model == "qwen-plus"
    assert not s.uses_mysql and not s.uses_oss
    assert s.sqlite_path == Path("data") / "history.sqlite3"


def test_seed_env_names_are_read() -> None:
    env = {
        "QWEN_API_KEY": "sk-abc",
        "QWEN_CHAT_MODEL": "qwen-max",
        "QWEN_VLM_MODEL": "qwen-vl-max",
        "QWEN_AUDIO_RECOGNIZE_MODEL": "paraformer-v1",
        "TTS_VOICE": "Ethan",
        "TTS_SAMPLE_RATE": "16000",
        "QG_TTS_MODEL": "qwen3-tts-flash-realtime",
        "ACCESSKEY_ID": "ak",
        "ACCESSKEY_SECRET": "sk",
        "BUCKET": "b",
        "REGIN": "cn-hangzhou",
        "DB_HOST": "db.example",
        "DB_PORT": "3307",
        "DB_NAME": "chat",
        "DEFAULT_SYSTEM_PROMPT": "你是助手",
        "QG_API_KEYS": "k1, k2,",
    }
    s = load_settings(env, dotenv=None)
    assert s.qwen_api_key == "sk-abc" and s.chat_model == "qwen-max"
    assert s.asr_model == "paraformer-v1" and s.tts_voice == "Ethan"
    assert s.tts_sample_rate == 16000
    assert s.uses_oss and s.oss_region == "cn-hangzhou"
    assert s.uses_mysql and s.db_port == 3307 and s.db_name == "chat"
    assert s.api_keys == ("k1", "k2")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"QG_PORT": "abc"}, "QG_PORT"),
        ({"QG_PORT": "70000"}, "QG_PORT"),
        ({"TTS_SAMPLE_RATE": "12345"}, "TTS_SAMPLE_RATE"),
        ({"QWEN_API_CHAT_URL": "ftp://x"}, "QWEN_API_CHAT_URL"),
        ({"REAL_TIME_AUDIO_URL": "https://x"}, "REAL_TIME_AUDIO_URL"),
        ({"QG_AUTH": "maybe"}, "QG_AUTH"),
        ({"QG_WS_SEND_TIMEOUT": "0"}, "QG_WS_SEND_TIMEOUT"),
        ({"BUCKET": "b"}, "BUCKET"),
        ({"QG_API_KEYS_FILE": "/nonexistent/keys"}, "QG_API_KEYS_FILE"),
        ({"QG_MP3_BITRATE_KBPS": "320"}, "QG_MP3_BITRATE_KBPS"),  # not at 24 kHz (MPEG-2)
        ({"QG_UPLOAD_IDLE_TIMEOUT": "-1"}, "QG_UPLOAD_IDLE_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env, dotenv=None)


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('QWEN_CHAT_MODEL=qwen-turbo\nTTS_VOICE="Serena"\n', encoding="utf-8")
    s = load_settings({"TTS_VOICE": "Ethan"}, dotenv=dotenv)
    assert s.chat_model == "qwen-turbo"
    assert s.tts_voice == "Ethan"


def test_redacted_hides_secrets() -> None:
    s = load_settings(
        {"QWEN_API_KEY": "sk-secret", "DB_PASSWORD": "pw", "QG_API_KEYS": "gk"}, dotenv=None
    )
    red = s.redacted()
    assert red["QWEN_API_KEY"] == "***" and red["DB_PASSWORD"] == "***"
    assert red["QG_API_KEYS"] == "***"
    assert "sk-secret" not in repr(red)


def test_ffmpeg_path_is_accepted_and_ignored() -> None:
    s = load_settings({"FFMPEG_PATH": "/usr/bin/ffmpeg"}, dotenv=None)
    assert s is not None
    assert "FFMPEG_PATH" in ignored_variables({"FFMPEG_PATH": "/usr/bin/ffmpeg"})


def test_env_example_lists_every_variable_and_loads() -> None:
    from dataclasses import fields

    from qwen_gateway.config import Settings

    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = {
        line.split("=", 1)[0].strip()
        for line in example.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    wanted = {f.metadata["env"] for f in fields(Settings) if "env" in f.metadata}
    assert wanted - names == set()
    s = load_settings({}, dotenv=example)  # the example as shipped is a valid configuration
    assert not s.qwen_api_key and not s.uses_mysql and not s.uses_oss
