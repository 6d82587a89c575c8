"""The end of speech in an open-microphone upload (``mode=stream``).

:class:`SpeechEndWatch` decodes the upload as it arrives to 16 kHz mono PCM (:class:`~.decode.PcmDecoder`) and
runs the VAD (:class:`~.vad.SpeechDetector`, WebRTC's) over it; it reports the end of the speech once: the
first ``SpeechStopped`` after speech started, i.e. ``silence_ms`` of silence after speech. Silence alone never
ends an upload (the upload's idle timeout and the client's ``end`` still do).

Only formats that decode while they arrive can be watched (raw PCM, WAV, MP3); an Ogg upload ends on the
client's ``end``.
"""

from __future__ import annotations

from .decode import PcmDecoder, UndecodableAudio
from .formats import AudioFormatInfo
from .vad import SpeechDetector, SpeechStopped, VadSettings

__all__ = ["VAD_RATE", "SpeechEndWatch"]

#: The rate the VAD listens at.
VAD_RATE = 16000


class SpeechEndWatch:
    """Watches one upload for the end of its speech (see the module docstring).

    Args:
        info: the upload's format.
        silence_ms: the trailing silence that ends the speech.
    """

    def __init__(self, info: AudioFormatInfo, silence_ms: int) -> None:
        self._decoder = PcmDecoder(info, VAD_RATE)
        self._vad = SpeechDetector(VadSettings(silence_duration_ms=silence_ms), VAD_RATE)
        #: the speech has ended (reported once); or the watch gave up (an undecodable upload)
        self.done = not self._decoder.streaming
        #: where the speech ended, in ms from the upload's start (once it did)
        self.ended_at_ms: int | None = None

    def feed(self, data: bytes) -> bool:
        """The upload's next bytes; True exactly once, when they complete the end of the speech."""
        if self.done:
            return False
        try:
            pcm = self._decoder.feed(data)
        except UndecodableAudio:
            self.done = True  # the recogniser's path reports it
            return False
        for event in self._vad.feed(pcm):
            if isinstance(event, SpeechStopped):
                self.done = True
                self.ended_at_ms = event.audio_end_ms
                return True
        return False
