"""The device simulator against the gateway + the DashScope simulator: an open-microphone question streamed in real
time, the answer as 60 ms Opus packets into a 500 ms playback buffer. Paced: no overrun, no underrun after the
first frame. Unpaced (the browser default) the same device overruns: the check can fail.

The paced answer lasts about 32 s, as the issue asks (paced delivery takes real time: this test takes as long); the
unpaced one about 8 s (it overruns within its first second)."""

from __future__ import annotations

from pathlib import Path

from qwen_gateway.device_sim import DeviceConfig, DeviceReport, run_device
from qwen_gateway.simulator.audio import synthesize

from .conftest import GATEWAY_KEY, gateway

RATE = 16000
SENTENCES = "今天是晴天，气温二十五度。适合出门散步！记得带上水，也别忘了防晒。"


def question() -> bytes:
    return bytes(2 * RATE * 300 // 1000) + synthesize("你好今天天气", RATE) + bytes(2 * RATE)


async def talk(tmp_path: Path, pace: str | None, answer: str) -> DeviceReport:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(answer)
        config = DeviceConfig(
            url=gw.ws_url(""),
            pcm=question(),
            rate=RATE,
            token=GATEWAY_KEY,
            audio_format="opus",
            sample_rate=16000,
            frame_ms=60,
            pace=pace,
            buffer_ms=500,
            silence_ms=500,
            timeout=120,
        )
        return await run_device(config)


async def test_paced_opus_never_overruns_a_500_ms_buffer(tmp_path: Path) -> None:
    report = await talk(tmp_path, "realtime", SENTENCES * 4)
    assert not report.errors
    assert report.ended_by == "vad"
    assert report.answer_ms > 30000, "a 30 s answer, as the issue asks"
    assert report.overruns == 0
    assert report.underruns == 0
    assert report.max_buffer_ms <= 300 + 60 + 60
    assert report.first_sound_ms is not None


async def test_unpaced_the_same_device_overruns(tmp_path: Path) -> None:
    report = await talk(tmp_path, None, SENTENCES)
    assert report.overruns > 0
