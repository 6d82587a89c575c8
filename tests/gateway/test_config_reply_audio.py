"""``QG_STORE_REPLY_AUDIO``: read like every on/off setting, listed by ``serve --help``, carried to the voice pipeline."""

from __future__ import annotations

import pytest

from qwen_gateway.__main__ import main
from qwen_gateway.config import ConfigError, load_settings
from qwen_gateway.voice.turn import VoiceConfig


def test_on_by_default() -> None:
    settings = load_settings({}, dotenv=None)
    assert settings.store_reply_audio is True
    assert VoiceConfig.from_settings(settings).store_reply_audio is True


@pytest.mark.parametrize("raw", ["0", "off", "false", "no", "OFF"])
def test_turned_off(raw: str) -> None:
    settings = load_settings({"QG_STORE_REPLY_AUDIO": raw}, dotenv=None)
    assert settings.store_reply_audio is False
    assert VoiceConfig.from_settings(settings).store_reply_audio is False


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="QG_STORE_REPLY_AUDIO"):
        load_settings({"QG_STORE_REPLY_AUDIO": "sometimes"}, dotenv=None)


def test_serve_help_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "QG_STORE_REPLY_AUDIO (default on)" in capsys.readouterr().out
