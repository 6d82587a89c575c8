"""Audio for devices: Opus encoding speed, and the device simulator against the gateway.

Prints figures; asserts nothing. Run: ``.venv/bin python bench/bench_device.py [answer-seconds]``.

1. Opus encoding (``qwen_gateway.voice.encoders``): "x real time" = seconds of audio encoded per second of CPU
   time on one core (process CPU time), TTS PCM at 24 kHz fed in 100 ms chunks, resampled by soxr where the
   asked rate differs, raw packets and Ogg pages.
2. ``qwen-gateway device-sim`` against an in-process gateway + DashScope simulator: an open-microphone question,
   a long answer (about ``answer-seconds``, default 30) as 60 ms Opus packets at 16 kHz into a 500 ms playback
   buffer, paced (``pace=realtime``) and unpaced: overruns, underruns, gaps, end of speech -> first sound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qwen_gateway.voice.encoders import OggOpusEncoder, OpusPacketEncoder

KEY = "sk-bench-device"
GATEWAY_KEY = "gk-bench-device"


def speech_like(seconds: float, rate: int, seed: int = 7) -> bytes:
    """Mono s16le PCM that keeps an encoder about as busy as speech does (a gliding voice with syllables)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 40 * np.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * math.pi * 4 * t) ** 2
    voiced = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5))
    x = 6000 * envelope * voiced + rng.normal(0, 300, t.size)
    return bytes(x.clip(-32768, 32767).astype("<i2").tobytes())


def encode_speed(cls: type, pcm: bytes, in_rate: int, out_rate: int, frame_ms: int) -> float:
    step = in_rate * 100 // 1000 * 2
    best = 0.0
    for _ in range(3):
        encoder = cls(in_rate, out_rate=out_rate, frame_ms=frame_ms)
        cpu0 = time.process_time()
        for i in range(0, len(pcm), step):
            encoder.encode_chunks(pcm[i : i + step])
        encoder.flush_chunks()
        cpu = time.process_time() - cpu0
        best = max(best, len(pcm) / 2 / in_rate / cpu)
    return best


def opus_figures(seconds: float = 60.0) -> None:
    pcm = speech_like(seconds, 24000)
    print(
        f"Opus encoding (libopus via PyAV, 24 kbps), {seconds:.0f} s of 24 kHz speech-like PCM, best of 3"
    )
    print(f"{'encoder':>18} {'out rate':>8} {'frame':>6} {'x RT (cpu)':>10}")
    for cls in (OpusPacketEncoder, OggOpusEncoder):
        for out_rate, frame_ms in ((24000, 60), (24000, 20), (16000, 60), (48000, 20)):
            x = encode_speed(cls, pcm, 24000, out_rate, frame_ms)
            print(f"{cls.__name__:>18} {out_rate:>8} {frame_ms:>4}ms {x:>9.0f}x")


async def device_figures(answer_seconds: float) -> None:
    from qwen_gateway.app import create_app
    from qwen_gateway.config import load_settings
    from qwen_gateway.device_sim import DeviceConfig, run_device
    from qwen_gateway.server import serving
    from qwen_gateway.services import open_services
    from qwen_gateway.simulator import Simulator, SimulatorConfig
    from qwen_gateway.simulator.audio import synthesize

    rate = 16000
    question = bytes(2 * rate * 300 // 1000) + synthesize("你好今天天气", rate) + bytes(2 * rate)
    sentence = "今天是晴天，气温二十五度，适合出门散步。"
    async with Simulator(SimulatorConfig(api_key=KEY), host="127.0.0.1", port=0) as sim:
        # the simulator's voice speaks about four characters a second: size the answer from a probe
        probe_seconds = len(synthesize(sentence, 24000)) / 2 / 24000
        sim.set_reply(sentence * max(1, round(answer_seconds / probe_seconds)))
        with tempfile.TemporaryDirectory() as tmp:
            base = load_settings(dict(sim.env), dotenv=None, data_dir=Path(tmp))
            settings = dataclasses.replace(
                base, qwen_api_key=KEY, api_keys=(GATEWAY_KEY,), port=0, read_timeout=30.0
            )
            async with open_services(settings) as svc:
                app = create_app(svc.settings, svc)
                async with serving(app, svc.settings, port=0) as base_url:
                    url = base_url.replace("http://", "ws://", 1)
                    print(
                        "\ndevice-sim: open-mic question, the answer as 60 ms Opus at 16 kHz, 500 ms buffer"
                    )
                    print(
                        f"{'pace':>9} {'answer s':>8} {'frames':>6} {'overruns':>8} {'lost ms':>8} "
                        f"{'underruns':>9} {'gap ms':>7} {'max buf':>7} {'speech end->sound ms':>20}"
                    )
                    for pace in ("realtime", None):
                        config = DeviceConfig(
                            url=url,
                            pcm=question,
                            rate=rate,
                            token=GATEWAY_KEY,
                            pace=pace,
                            buffer_ms=500,
                            silence_ms=500,
                            timeout=answer_seconds * 3 + 60,
                        )
                        r = await run_device(config)
                        print(
                            f"{pace or 'off':>9} {r.answer_ms / 1000:>8.1f} {r.frames:>6} "
                            f"{r.overruns:>8} {r.dropped_ms:>8.0f} {r.underruns:>9} {r.gap_ms:>7.0f} "
                            f"{r.max_buffer_ms:>7.0f} {r.first_sound_ms or 0:>20.0f}"
                        )
                        if r.errors:
                            print(f"          errors: {r.errors}")


def main() -> None:
    answer_seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    opus_figures()
    asyncio.run(device_figures(answer_seconds))


if __name__ == "__main__":
    main()
