"""``qwen-gateway check`` and ``serve`` stop with a clear message for a model or sample rate the catalogue
refuses: exit status 2, and the message names the variable and the accepted values. Run as a user runs them,
in a subprocess, from an empty folder (no ``.env``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "QG_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "-m", "qwen_gateway", command],
        cwd=tmp_path,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["check", "serve"])
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"QWEN_AUDIO_RECOGNIZE_MODEL": "whisper-1"},
            ["QWEN_AUDIO_RECOGNIZE_MODEL='whisper-1'", "paraformer-realtime-v2", "QG_ASR_PROTOCOL"],
        ),
        (
            {"QWEN_AUDIO_RECOGNIZE_MODEL": "paraformer-v2", "QG_ASR_PROTOCOL": "batch"},
            ["QG_ASR_PROTOCOL='batch'", "task, realtime, file-urls, file-url"],
        ),
        (
            {"QG_TTS_MODEL": "qwen-tts-realtime", "TTS_SAMPLE_RATE": "44100"},
            ["TTS_SAMPLE_RATE=44100", "qwen-tts-realtime takes 24000"],
        ),
        (
            {"QG_TTS_MODEL": "no-such-voice-model"},
            ["QG_TTS_MODEL='no-such-voice-model'", "QG_TTS_PROTOCOL"],
        ),
    ],
    ids=["unknown-asr-model", "bad-asr-protocol", "refused-tts-rate", "unknown-tts-model"],
)
def test_a_misconfigured_model_stops_the_command(
    tmp_path: Path, command: str, env: dict[str, str], expected: list[str]
) -> None:
    done = run(tmp_path, command, **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("qwen-gateway: configuration error: ")
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_check_accepts_each_file_model_and_prints_the_settings(tmp_path: Path) -> None:
    for model in ("qwen3-asr-flash-filetrans", "qwen-audio-3.1-asr-flash-filetrans"):
        done = run(tmp_path, "check", QWEN_AUDIO_RECOGNIZE_MODEL=model, DASHSCOPE_WORKSPACE="ws-1")
        assert done.returncode == 0, done.stderr
        assert f"QWEN_AUDIO_RECOGNIZE_MODEL={model}" in done.stdout
        assert "DASHSCOPE_WORKSPACE=ws-1" in done.stdout
