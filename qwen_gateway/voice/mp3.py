"""Incremental PCM -> MP3 encoding for one spoken answer.

One :class:`Mp3Encoder` lives for one voice turn: TTS PCM goes in as it arrives, MP3 bytes come out at once
(whole MPEG frames, ready to send as an ``audio_stream`` chunk), and :meth:`Mp3Encoder.flush` returns the tail.
The concatenation of everything returned is one valid MP3 stream.

Choices:

* The encoder works at the PCM's own sample rate (LAME's resampler is switched off). A provider that speaks at
  16 kHz while the settings say 24 kHz gets an encoder created at 16 kHz: the turn creates the encoder from the
  first :class:`~qwen_gateway.providers.base.PcmChunk`'s ``sample_rate``. That is exact, cheaper than resampling,
  and every browser plays any MPEG-1/2/2.5 rate. A rate change in the middle of a turn is a provider bug.
* The encoder itself does no I/O and is called synchronously; the voice pipeline calls it from a worker thread,
  except for a turn's first audio (encoded at once on the loop: a thread may wait up to 5 ms for the GIL).
  LAME runs at 600-700 times real time on a quiet core for 24 kHz mono at 64 kbps (0.15 ms per 100 ms TTS
  chunk, up to 0.4 ms on a busy machine), and lameenc releases the GIL while it encodes. That is cheap for one
  turn but not for many: 100 voices speaking at once are 100 s of audio a second, and the chunks of many
  sessions arrive in one event-loop iteration (an upstream's burst, or what piled up during a GC pass): encoded
  on the loop they held it 40-60 ms at a time. Off the loop the same work costs the loop about 0.05 ms a chunk
  (the hand-off) and runs on another core.
* Calls are serialised by a lock, so a :meth:`Mp3Encoder.flush` from the loop waits for an ``encode`` still
  running in a worker thread (one whose awaiting task was cancelled) instead of racing it in LAME's state.
* The stream carries no Xing/LAME header (that header needs the final length, known only at the end), so a
  decoder cannot trim LAME's encoder delay and end padding: a stream of ``n`` PCM samples decodes to
  ``n + ENCODER_DELAY + 576`` samples rounded up to whole frames (``frame_samples``), i.e. its duration is
  the PCM's plus 1152 samples, within one frame.
"""

from __future__ import annotations

import threading

import lameenc  # type: ignore[import-not-found]

__all__ = ["ENCODER_DELAY", "MPEG_SAMPLE_RATES", "Mp3Encoder", "allowed_bitrates"]

#: Samples of silence LAME puts before the first input sample (its fixed encoder delay).
ENCODER_DELAY = 576

#: Sample rates MP3 can carry: MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz), MPEG-2.5 (8-12 kHz).
MPEG_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})

_MPEG1_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def allowed_bitrates(sample_rate: int) -> tuple[int, ...]:
    """The constant bitrates (kbps) MPEG Layer III allows at ``sample_rate``."""
    if sample_rate not in MPEG_SAMPLE_RATES:
        raise ValueError(
            f"MP3 cannot carry {sample_rate} Hz; expected one of {sorted(MPEG_SAMPLE_RATES)}"
        )
    return _MPEG1_BITRATES if sample_rate >= 32000 else _MPEG2_BITRATES


class Mp3Encoder:
    """A constant-bitrate MP3 encoder for 16-bit little-endian PCM, fed piece by piece.

    Args:
        sample_rate: the PCM's rate in Hz (one of :data:`MPEG_SAMPLE_RATES`); the MP3 has the same rate.
        bitrate_kbps: constant bitrate, one of :func:`allowed_bitrates` for that rate.
        channels: 1 (mono) or 2 (interleaved stereo).
        quality: LAME's algorithm quality, 0 (best, slowest) to 9 (fastest); 5 is LAME's default and
            is plenty for speech.

    Raises:
        ValueError: an unsupported rate, bitrate, channel count or quality.
    """

    def __init__(
        self, sample_rate: int, *, bitrate_kbps: int = 64, channels: int = 1, quality: int = 5
    ) -> None:
        if bitrate_kbps not in allowed_bitrates(sample_rate):
            raise ValueError(
                f"{bitrate_kbps} kbps is not an MP3 bitrate at {sample_rate} Hz; "
                f"expected one of {allowed_bitrates(sample_rate)}"
            )
        if channels not in (1, 2):
            raise ValueError(f"channels={channels}: expected 1 or 2")
        if not 0 <= quality <= 9:
            raise ValueError(f"quality={quality}: expected 0..9")
        self._sample_rate = sample_rate
        self._channels = channels
        self._bitrate = bitrate_kbps
        self._block = 2 * channels
        self._pending = b""
        self._samples_in = 0
        self._bytes_out = 0
        self._started = False
        self._finished = False
        self._lock = threading.Lock()
        self._lame = lameenc.Encoder()
        self._lame.set_channels(channels)
        self._lame.set_in_sample_rate(sample_rate)
        self._lame.set_out_sample_rate(sample_rate)
        self._lame.set_bit_rate(bitrate_kbps)
        self._lame.set_quality(quality)
        # LAME sets itself up on its first encode call (about 0.6 ms): do it now, while the answer is still
        # being generated, rather than on the first PCM chunk on the way to the first audio.
        self._lame.encode(b"")

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def bitrate_kbps(self) -> int:
        return self._bitrate

    @property
    def frame_samples(self) -> int:
        """PCM samples per MP3 frame: 1152 for MPEG-1 rates (>= 32 kHz), 576 below."""
        return 1152 if self._sample_rate >= 32000 else 576

    @property
    def samples_in(self) -> int:
        """Whole samples (per channel) accepted so far; a dangling partial sample is not counted."""
        return self._samples_in

    @property
    def duration(self) -> float:
        """Seconds of PCM accepted so far."""
        return self._samples_in / self._sample_rate

    @property
    def bytes_out(self) -> int:
        """MP3 bytes returned so far."""
        return self._bytes_out

    @property
    def finished(self) -> bool:
        """True once :meth:`flush` was called."""
        return self._finished

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Encode more PCM and return the MP3 bytes that are ready (possibly empty).

        ``pcm`` may have any length: a trailing partial sample (an odd byte, or a partial stereo frame) is
        kept and completed by the next call.

        Raises:
            RuntimeError: called after :meth:`flush`.
        """
        with self._lock:
            if self._finished:
                raise RuntimeError("Mp3Encoder.encode() after flush()")
            data = self._pending + bytes(pcm) if self._pending else bytes(pcm)
            usable = len(data) - len(data) % self._block
            self._pending = data[usable:]
            if not usable:
                return b""
            self._samples_in += usable // self._block
            self._started = True
            out = bytes(self._lame.encode(data[:usable] if usable < len(data) else data))
            self._bytes_out += len(out)
            return out

    def flush(self) -> bytes:
        """End the stream: return the last MP3 frames. A dangling partial sample is dropped.

        Calling it again returns ``b""``; with no PCM ever fed the stream is empty.
        """
        with self._lock:
            if self._finished:
                return b""
            self._finished = True
            self._pending = b""
            if not self._started:
                return b""
            out = bytes(self._lame.flush())
            self._bytes_out += len(out)
            return out

    def __repr__(self) -> str:
        return (
            f"Mp3Encoder({self._sample_rate} Hz, {self._channels} ch, {self._bitrate} kbps, "
            f"{self.duration:.2f} s in, {self._bytes_out} B out)"
        )
