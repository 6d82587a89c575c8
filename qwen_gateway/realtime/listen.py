"""The input audio buffer of a realtime session: the client's audio, converted to the recogniser's PCM, cut into
utterances by server VAD (or kept until a manual commit).

:class:`InputAudio` is synchronous (CPU work of tens of microseconds per 20 ms chunk) and does no I/O. Each
:meth:`InputAudio.feed` returns what the chunk did, in order:

* :class:`Started`: speech began at ``audio_start_ms``; ``audio`` is its first audio, the prefix padding
  (``prefix_padding_ms`` before the start) included, up to the end of this chunk;
* :class:`Audio`: more audio of the current utterance;
* :class:`Stopped`: speech ended at ``audio_end_ms`` (the utterance's audio is complete: the trailing silence the
  detector waited for was already passed on).

With turn detection off (manual mode) the audio is only kept (:meth:`InputAudio.take` on commit), up to
``max_ms``; times are milliseconds of the session's input audio since its start.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.realtime_session import VadConfig

from ..voice.convert import InputConverter, WireFormat
from ..voice.vad import SpeechDetector, SpeechStarted, VadSettings

__all__ = ["Audio", "BufferFull", "InputAudio", "Started", "Step", "Stopped"]

#: Audio kept before the current position, beyond the prefix padding, for a start the detector reports late
#: (it decides over a 200 ms window).
_HISTORY_MARGIN_MS = 1000


@dataclass(frozen=True, slots=True)
class Started:
    audio_start_ms: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class Audio:
    audio: bytes


@dataclass(frozen=True, slots=True)
class Stopped:
    audio_end_ms: int


Step = Started | Audio | Stopped


class BufferFull(Exception):
    """The manual-mode buffer would hold more than ``max_ms`` of audio (the chunk was not kept)."""


class InputAudio:
    """Client audio in ``fmt`` -> pcm16 mono at ``rate``; server VAD when ``vad`` is given (see the module
    docstring). ``max_ms``: the longest utterance or manual buffer."""

    def __init__(
        self, fmt: WireFormat, vad: VadConfig | None, *, rate: int = 16000, max_ms: int = 300_000
    ) -> None:
        self.fmt = fmt
        self.rate = rate
        self.max_ms = max_ms
        self._converter = InputConverter(fmt, rate)
        self._vad_config = vad
        self._detector = self._new_detector()
        self._base_ms = 0  # position of the current detector's zero on the session's timeline
        self._fed = 0  # bytes of converted audio since the session started
        self._history = bytearray()  # the most recent converted audio, ending at ``_fed``
        self._buffer = bytearray()  # manual mode: everything since the last commit / clear
        self._utterance_bytes = 0  # VAD mode: audio passed to the current utterance

    def _new_detector(self) -> SpeechDetector | None:
        v = self._vad_config
        if v is None:
            return None
        settings = VadSettings(
            threshold=v.threshold,
            prefix_padding_ms=v.prefix_padding_ms,
            silence_duration_ms=v.silence_duration_ms,
        )
        return SpeechDetector(settings, self.rate)

    # ------------------------------------------------------------------ state
    @property
    def position_ms(self) -> int:
        """Milliseconds of input audio received in the session so far."""
        return self._ms(self._fed)

    @property
    def speaking(self) -> bool:
        return self._detector is not None and self._detector.speaking

    @property
    def buffered_ms(self) -> int:
        """Manual mode: audio waiting for a commit."""
        return self._ms(len(self._buffer))

    @property
    def utterance_ms(self) -> int:
        """VAD mode: audio of the current utterance so far."""
        return self._ms(self._utterance_bytes)

    def _ms(self, nbytes: int) -> int:
        return (nbytes // 2) * 1000 // self.rate

    def _bytes(self, ms: int) -> int:
        return max(0, ms) * self.rate // 1000 * 2

    # ------------------------------------------------------------------ changes
    def reconfigure(self, fmt: WireFormat, vad: VadConfig | None) -> None:
        """A ``session.update`` changed the input format or turn detection: what is buffered is kept, a speech
        in progress is forgotten (call :meth:`reset` first to end it)."""
        if fmt != self.fmt:
            self.fmt = fmt
            self._converter = InputConverter(fmt, self.rate)
        if vad != self._vad_config:
            self._vad_config = vad
            self.reset()

    def reset(self) -> None:
        """Forget a speech in progress: detection starts over at the current position."""
        self._detector = self._new_detector()
        self._base_ms = self.position_ms
        self._utterance_bytes = 0

    def take(self) -> bytes:
        """Manual mode: the buffered audio, the converter's tail included (the buffer is emptied)."""
        tail = self._converter.flush()
        self._fed += len(tail)
        self._buffer += tail
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def clear(self) -> None:
        """Drop the buffered audio and any speech in progress."""
        self._buffer.clear()
        self.reset()

    # ------------------------------------------------------------------ audio
    def feed(self, data: bytes) -> list[Step]:
        """Take the next chunk of client audio (see the module docstring).

        Raises:
            BufferFull: manual mode, the buffer would exceed ``max_ms`` (the chunk was dropped).
        """
        if self._detector is None:
            incoming_ms = len(data) // self.fmt.sample_width * 1000 // self.fmt.sample_rate
            if self.buffered_ms + incoming_ms > self.max_ms:
                raise BufferFull(f"the input audio buffer holds at most {self.max_ms} ms")
        pcm = self._converter.feed(data)
        if not pcm:
            return []
        if self._detector is None:
            self._fed += len(pcm)
            self._buffer += pcm
            return []
        self._fed += len(pcm)
        self._remember(pcm)
        steps: list[Step] = []
        was_speaking = self._detector.speaking
        started_here = False
        for event in self._detector.feed(pcm):
            if isinstance(event, SpeechStarted):
                start = self._base_ms + event.audio_start_ms
                padding = self._vad_config.prefix_padding_ms if self._vad_config else 0
                audio = self._since(start - padding)
                self._utterance_bytes = len(audio)
                steps.append(Started(start, audio))
                started_here = True
            else:
                if was_speaking and not started_here:
                    steps.append(Audio(pcm))
                    self._utterance_bytes += len(pcm)
                    was_speaking = False
                steps.append(Stopped(self._base_ms + event.audio_end_ms))
                started_here = True  # the chunk was handed on
        if was_speaking and not started_here:
            steps.append(Audio(pcm))
            self._utterance_bytes += len(pcm)
        return steps

    def _remember(self, pcm: bytes) -> None:
        self._history += pcm
        keep = self._bytes(
            (self._vad_config.prefix_padding_ms if self._vad_config else 0) + _HISTORY_MARGIN_MS
        )
        if len(self._history) > keep:
            del self._history[: len(self._history) - keep]

    def _since(self, ms: int) -> bytes:
        """The converted audio from ``ms`` (session timeline) to now, as far as it is still kept."""
        wanted = self._fed - self._bytes(ms)
        wanted = min(len(self._history), max(0, wanted))
        return bytes(self._history[len(self._history) - wanted :])
