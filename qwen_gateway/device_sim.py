"""``qwen-gateway device-sim``: a small voice device, for tests and for device teams.

It behaves as an ESP32-class voice box on ``/v1/chat/audio`` with the device options (:mod:`protocol.device`):

* the microphone: a WAV file (16-bit PCM, mono) streamed in real time as 60 ms open-microphone packets
  (``mode=stream``), then silence while the microphone stays open, until the gateway ends the utterance (it heard
  the end of the speech: ``chat_started``), or ``{"type": "end"}`` after ``--tail-ms``;
* the speaker: the answer as raw Opus packets (or PCM), decoded with PyAV into a bounded playback buffer of
  ``--buffer-ms`` drained in real time from the first frame on (:class:`PlaybackBuffer`).

It reports what a device team wants to know: **overruns** (audio arrived with the buffer full: the excess is lost),
**underruns** (the buffer ran dry while the answer was still coming: a gap in the sound, with the total gap
time), and the time from the **end of speech** (the last non-silent sample of the WAV, as the microphone sent it)
to the **first sound** (the first answer frame in the buffer).

Example::

    qwen-gateway device-sim --url ws://127.0.0.1:5000 --token gk-... --wav question.wav \\
        --audio-format opus --sample-rate 16000 --frame-ms 60 --pace realtime --buffer-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import av
import numpy as np

__all__ = [
    "DeviceConfig",
    "DeviceReport",
    "PlaybackBuffer",
    "main",
    "read_wav",
    "run_device",
    "speech_end_ms",
]

#: A sample quieter than this (of 32767) is silence, for finding where the speech in the WAV ends.
SILENCE_LEVEL = 328  # 1 % of full scale


class PlaybackBuffer:
    """A device's bounded playback buffer, drained in real time from the first frame on (times in seconds).

    Args:
        capacity_ms: the most audio it holds; audio arriving beyond it is lost (an overrun).
    """

    def __init__(self, capacity_ms: float) -> None:
        self.capacity_ms = capacity_ms
        self.level_ms = 0.0
        self.started_at: float | None = None
        self.finished = False
        self.overruns = 0
        self.dropped_ms = 0.0
        self.underruns = 0
        self.gap_ms = 0.0
        self.max_level_ms = 0.0
        self.received_ms = 0.0
        self._at = 0.0
        self._dry = False

    def _drain(self, now: float) -> None:
        if self.started_at is None:
            return
        played = max(now - self._at, 0.0) * 1000
        self._at = now
        if played <= self.level_ms:
            self.level_ms -= played
            return
        empty_for = played - self.level_ms
        self.level_ms = 0.0
        if not self.finished:  # dry while the answer is still coming: a gap in the sound
            if not self._dry:
                self.underruns += 1
                self._dry = True
            self.gap_ms += empty_for

    def push(self, ms: float, now: float) -> None:
        """``ms`` of decoded audio arrived at ``now``."""
        self._drain(now)
        if self.started_at is None:
            self.started_at = self._at = now
        self._dry = False
        self.received_ms += ms
        room = self.capacity_ms - self.level_ms
        if ms > room + 1e-6:
            self.overruns += 1
            self.dropped_ms += ms - room
            self.level_ms = self.capacity_ms
        else:
            self.level_ms += ms
        self.max_level_ms = max(self.max_level_ms, self.level_ms)

    def finish(self, now: float) -> None:
        """The answer's audio ended (``audio_stream`` ``finished``): what is left plays out, no more gaps."""
        self._drain(now)
        self.finished = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """What the device does (see the module docstring)."""

    url: str
    pcm: bytes
    rate: int
    token: str | None = None
    audio_format: str = "opus"
    sample_rate: int = 16000
    frame_ms: int = 60
    pace: str | None = "realtime"
    buffer_ms: float = 500.0
    silence_ms: int = 700
    mic_frame_ms: int = 60
    tail_ms: int = 3000
    timeout: float = 120.0


@dataclass(slots=True)
class DeviceReport:
    """What the device saw."""

    overruns: int = 0
    dropped_ms: float = 0.0
    underruns: int = 0
    gap_ms: float = 0.0
    first_sound_ms: float | None = None
    answer_ms: float = 0.0
    frames: int = 0
    max_buffer_ms: float = 0.0
    packets_sent: int = 0
    ended_by: str = ""
    transcript: str = ""
    answer: str = ""
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The report as ``name: value`` lines."""
        return "\n".join(f"{k}: {v}" for k, v in asdict(self).items())


def read_wav(data: bytes) -> tuple[bytes, int]:
    """The PCM and rate of a 16-bit mono WAV; ``ValueError`` for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise ValueError("the WAV must be 16-bit PCM, mono")
            return w.readframes(w.getnframes()), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None


def speech_end_ms(pcm: bytes, rate: int) -> float:
    """Where the speech in ``pcm`` ends: after its last sample louder than :data:`SILENCE_LEVEL`."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE_LEVEL)
    last = int(loud[-1]) + 1 if loud.size else 0
    return last * 1000 / rate


class _Speaker:
    """The answer's audio events -> decoded duration (ms) -> the playback buffer."""

    def __init__(self, audio_format: str, sample_rate: int, buffer: PlaybackBuffer) -> None:
        self._format = audio_format
        self._rate = sample_rate
        self.buffer = buffer
        self._decoder: Any = None
        self.frames = 0
        if audio_format == "opus":
            self._decoder = av.CodecContext.create("libopus", "r")
            self._decoder.layout = "mono"

    def audio(self, payload: bytes, now: float) -> None:
        if self._format == "opus":
            frames = self._decoder.decode(av.Packet(payload))
            ms = sum(f.samples * 1000 / f.sample_rate for f in frames)
        else:  # pcm
            ms = len(payload) / 2 / self._rate * 1000
        self.frames += 1
        self.buffer.push(ms, now)


def _handshake_url(config: DeviceConfig) -> str:
    query: dict[str, str] = {
        "mode": "stream",
        "format": f"pcm;rate={config.rate}",
        "silence_ms": str(config.silence_ms),
        "audio_format": config.audio_format,
        "sample_rate": str(config.sample_rate),
    }
    if config.audio_format == "opus":
        query["frame_ms"] = str(config.frame_ms)
    if config.pace:
        query["pace"] = config.pace
    if config.token:
        query["token"] = config.token
    return f"{config.url.rstrip('/')}/v1/chat/audio?{urlencode(query)}"


async def run_device(
    config: DeviceConfig, *, clock: Callable[[], float] = time.monotonic
) -> DeviceReport:
    """Talk once to the gateway as a device (see the module docstring) and report what was heard."""
    from websockets.asyncio.client import connect

    report = DeviceReport()
    buffer = PlaybackBuffer(config.buffer_ms)
    speaker = _Speaker(config.audio_format, config.sample_rate, buffer)
    utterance_ended = asyncio.Event()
    frame_bytes = config.rate * config.mic_frame_ms // 1000 * 2
    speech_end = speech_end_ms(config.pcm, config.rate)
    speech_ended_at: float | None = None

    async with asyncio.timeout(config.timeout):
        async with connect(_handshake_url(config), max_size=None, ping_interval=None) as ws:

            async def microphone() -> None:
                nonlocal speech_ended_at
                start = clock()
                seq = 0
                offset = 0
                silence = bytes(frame_bytes)
                tail_frames = config.tail_ms // config.mic_frame_ms
                while not utterance_ended.is_set():
                    if offset < len(config.pcm):
                        chunk = config.pcm[offset : offset + frame_bytes]
                    elif tail_frames > 0:
                        tail_frames -= 1
                        chunk = silence
                    else:
                        await ws.send('{"type": "end"}')
                        report.ended_by = "end"
                        return
                    # real time: frame n leaves when its audio has been recorded
                    due = start + (seq + 1) * config.mic_frame_ms / 1000
                    if (delay := due - clock()) > 0:
                        await asyncio.sleep(delay)
                    seq += 1
                    body = {"seq": seq, "data": base64.b64encode(chunk).decode()}
                    await ws.send(json.dumps(body))
                    report.packets_sent = seq
                    offset += len(chunk) if offset < len(config.pcm) else 0
                    if speech_ended_at is None and offset * 500 / config.rate >= speech_end:
                        speech_ended_at = (
                            clock()
                        )  # the frame holding the last of the speech was sent
                report.ended_by = report.ended_by or "vad"

            async def loudspeaker() -> None:
                async for frame in ws:
                    now = clock()
                    event = json.loads(frame)
                    ((name, body),) = event.items()
                    if name == "chat_started":
                        utterance_ended.set()
                        report.transcript = body.get("user_message", "")
                    elif name == "audio_stream" and body.get("event") == "data":
                        if report.first_sound_ms is None and speech_ended_at is not None:
                            report.first_sound_ms = round((now - speech_ended_at) * 1000, 1)
                        speaker.audio(base64.b64decode(body["data"]), now)
                    elif name == "audio_stream":
                        buffer.finish(now)
                    elif name == "error":
                        report.errors.append(f"{body.get('code', '')}: {body.get('message', '')}")
                        utterance_ended.set()
                    elif name == "audio_complete":
                        report.answer = body.get("assistant_response", "")
                        return

            async with asyncio.TaskGroup() as group:
                mic = group.create_task(microphone())
                await loudspeaker()
                mic.cancel()

    report.overruns, report.dropped_ms = buffer.overruns, round(buffer.dropped_ms, 1)
    report.underruns, report.gap_ms = buffer.underruns, round(buffer.gap_ms, 1)
    report.answer_ms = round(buffer.received_ms, 1)
    report.frames = speaker.frames
    report.max_buffer_ms = round(buffer.max_level_ms, 1)
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-gateway device-sim",
        description="Talk to a gateway as a small voice device and report overruns, underruns, gaps and "
        "the time from the end of speech to the first sound.",
    )
    p.add_argument("--url", default="ws://127.0.0.1:5000", help="the gateway (ws://host:port)")
    p.add_argument("--token", default=None, help="a gateway key")
    p.add_argument("--wav", required=True, help="the question: a 16-bit mono WAV file")
    p.add_argument("--audio-format", choices=("opus", "pcm"), default="opus")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--frame-ms", type=int, default=60, help="Opus packet duration")
    p.add_argument("--pace", default="realtime", help="realtime, a lead in ms, or off")
    p.add_argument("--buffer-ms", type=float, default=500.0, help="the playback buffer")
    p.add_argument("--silence-ms", type=int, default=700, help="silence that ends the speech")
    p.add_argument("--tail-ms", type=int, default=3000, help="open-mic silence before sending end")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``device-sim`` subcommand; 0 when the turn completed without overruns or errors."""
    args = _parser().parse_args(argv)
    try:
        with open(args.wav, "rb") as f:
            pcm, rate = read_wav(f.read())
    except (OSError, ValueError) as exc:
        print(f"device-sim: {exc}", file=sys.stderr)
        return 2
    config = DeviceConfig(
        url=args.url,
        pcm=pcm,
        rate=rate,
        token=args.token,
        audio_format=args.audio_format,
        sample_rate=args.sample_rate,
        frame_ms=args.frame_ms,
        pace=None if args.pace == "off" else args.pace,
        buffer_ms=args.buffer_ms,
        silence_ms=args.silence_ms,
        tail_ms=args.tail_ms,
        timeout=args.timeout,
    )
    try:
        report = asyncio.run(run_device(config))
    except (OSError, TimeoutError) as exc:
        print(f"device-sim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the websockets client's handshake errors (a 400, a 401)
        print(f"device-sim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), ensure_ascii=False) if args.json else report.text())
    return 0 if not report.errors and report.overruns == 0 else 1
