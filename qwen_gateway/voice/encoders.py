"""The answer's audio in the format a device asked for: raw Opus packets, an Ogg Opus stream, PCM, MP3.

Each encoder lives for one turn (one per PCM rate; a provider changing rates mid-turn is a provider bug), takes
the speech engine's 16-bit mono PCM as it arrives and returns :class:`AudioChunk` s, each the payload of one
``audio_stream`` ``data`` event with its duration:

* :class:`OpusPacketEncoder`: libopus through PyAV, fed frames of exactly ``frame_ms``; every chunk is one raw
  Opus packet of exactly ``frame_ms``. The last frame is padded with silence so that the encoder's lookahead
  (6.5 ms) is also out: the packets decode to the PCM's duration plus the lookahead, rounded up to a frame
  (a raw packet stream has no header to say how much to trim; a player may drop the first 6.5 ms).
* :class:`OggOpusEncoder`: the same packets muxed by PyAV into an Ogg Opus stream written to memory, one page
  per packet, each chunk the pages completed so far; the stream's pre-skip and final granule make it decode to
  the PCM's exact duration.
* :class:`PcmEncoder`: the PCM at the asked rate.
* :class:`Mp3ChunkEncoder`: :class:`~qwen_gateway.voice.mp3.Mp3Encoder` at the asked rate (a chunk's duration
  is the PCM it took in; LAME's delay makes the frames lag it by 576 samples).

Resampling is :class:`qwen_gateway.voice.convert.Resampler` (soxr), only when the rates differ. Every encoder also
satisfies :class:`~qwen_gateway.voice.answer.AudioEncoder` (``encode``/``flush`` return the chunks joined).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.audio.codeccontext import AudioCodecContext

from protocol import OutputAudio

from .convert import Resampler
from .mp3 import Mp3Encoder

__all__ = [
    "OPUS_BITRATE_KBPS",
    "OPUS_LOOKAHEAD_48K",
    "AudioChunk",
    "Mp3ChunkEncoder",
    "OggOpusEncoder",
    "OpusPacketEncoder",
    "PcmEncoder",
    "encoder_factory",
]

#: The Opus bitrate of spoken answers (plenty for wideband speech; xiaozhi-class devices use 16-32 kbps).
OPUS_BITRATE_KBPS = 24

#: libopus's lookahead at 48 kHz (2.5 ms + 4 ms), in samples: the decoder's output lags the input by it.
OPUS_LOOKAHEAD_48K = 312


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """The payload of one audio event and the playback time it carries (milliseconds)."""

    data: bytes
    duration_ms: float


def _opus_context(ctx: Any, rate: int, frame_ms: int, bitrate_kbps: int) -> None:
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.bit_rate = bitrate_kbps * 1000
    ctx.time_base = Fraction(1, rate)
    ctx.options = {"frame_duration": str(frame_ms), "application": "voip"}


def _frame(samples: bytes, rate: int, pts: int) -> av.AudioFrame:
    array = np.frombuffer(samples, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(array, format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    return frame


class _Framed:
    """What the encoders share: input counting, resampling to the output rate, cutting exact frames."""

    def __init__(self, sample_rate: int, out_rate: int, frame_samples: int) -> None:
        self._sample_rate = sample_rate
        self.out_rate = out_rate
        self._frame_bytes = frame_samples * 2
        self._resample = Resampler(sample_rate, out_rate)  # at the same rate: the PCM as it is
        self._pending = bytearray()
        self._samples_in = 0
        self._odd_in = 0
        self._finished = False

    @property
    def sample_rate(self) -> int:
        """The rate of the PCM it takes."""
        return self._sample_rate

    @property
    def samples_in(self) -> int:
        """Whole input samples taken so far."""
        return self._samples_in

    @property
    def finished(self) -> bool:
        """True once flushed."""
        return self._finished

    def _take(self, pcm: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.encode() after flush()")
        data = bytes(pcm)
        total = self._odd_in + len(data)
        self._samples_in += total // 2 - self._odd_in // 2
        self._odd_in = total % 2
        self._pending += self._resample.process(data)

    def _frames(self) -> list[bytes]:
        """The whole frames pending, taken out."""
        size = self._frame_bytes
        count = len(self._pending) // size
        frames = [bytes(self._pending[i * size : (i + 1) * size]) for i in range(count)]
        del self._pending[: count * size]
        return frames

    def encode(self, pcm: bytes) -> bytes:
        """:meth:`encode_chunks`, joined (the :class:`AudioEncoder` face)."""
        return b"".join(c.data for c in self.encode_chunks(pcm))

    def flush(self) -> bytes:
        """:meth:`flush_chunks`, joined."""
        return b"".join(c.data for c in self.flush_chunks())

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]:
        raise NotImplementedError

    def flush_chunks(self) -> list[AudioChunk]:
        raise NotImplementedError


class _OpusFrames(_Framed):
    """An Opus encoder's frames: exactly ``frame_ms`` (20, 40 or 60) at ``out_rate``."""

    def __init__(self, sample_rate: int, out_rate: int, frame_ms: int) -> None:
        if frame_ms not in (20, 40, 60):
            raise ValueError(f"frame_ms={frame_ms}: expected 20, 40 or 60")
        super().__init__(sample_rate, out_rate, out_rate * frame_ms // 1000)
        self.frame_ms = frame_ms
        self.frame_samples = out_rate * frame_ms // 1000


class OpusPacketEncoder(_OpusFrames):
    """Raw Opus packets of exactly ``frame_ms`` each (see the module docstring).

    Args:
        sample_rate: the rate of the PCM it takes.
        out_rate: Opus's rate (8000, 12000, 16000, 24000 or 48000).
        frame_ms: every packet's duration (20, 40 or 60).
        bitrate_kbps: the target bitrate.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        out_rate: int,
        frame_ms: int,
        bitrate_kbps: int = OPUS_BITRATE_KBPS,
    ) -> None:
        super().__init__(sample_rate, out_rate, frame_ms)
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, AudioCodecContext)
        _opus_context(ctx, out_rate, frame_ms, bitrate_kbps)
        ctx.open()
        self._ctx = ctx
        self._pts = 0
        self._lookahead = math.ceil(OPUS_LOOKAHEAD_48K * out_rate / 48000)

    @property
    def samples_out(self) -> int:
        """Output-rate samples encoded so far (whole packets)."""
        return self._pts

    def _encode_frame(self, samples: bytes) -> list[AudioChunk]:
        packets = self._ctx.encode(_frame(samples, self.out_rate, self._pts))
        self._pts += self.frame_samples
        for packet in packets:
            if packet.pts is not None and packet.pts < 0:
                self._lookahead = -packet.pts  # the encoder's own figure
        return [AudioChunk(bytes(p), float(self.frame_ms)) for p in packets]

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]:
        """Take more PCM; return the packets completed (one per whole frame)."""
        self._take(pcm)
        return [c for f in self._frames() for c in self._encode_frame(f)]

    def flush_chunks(self) -> list[AudioChunk]:
        """End the stream: the last frames, padded with silence up to the end of the lookahead."""
        if self._finished:
            return []
        self._pending += self._resample.flush()
        self._finished = True
        real = self._pts + len(self._pending) // 2
        if real == 0:
            return []
        target = math.ceil((real + self._lookahead) / self.frame_samples) * self.frame_samples
        self._pending += bytes(2 * (target - real))
        out = [c for f in self._frames() for c in self._encode_frame(f)]
        # No encode(None): FFmpeg would add a packet of its own for the lookahead, already covered above.
        return out


class _Sink:
    """A write-only file for PyAV's muxer: what it writes, taken out in order."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class OggOpusEncoder(_OpusFrames):
    """An Ogg Opus stream (RFC 7845) made of ``frame_ms`` packets, one page per packet; each chunk carries the
    pages completed so far (the first one also the two header pages).

    Args: as :class:`OpusPacketEncoder`.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        out_rate: int,
        frame_ms: int,
        bitrate_kbps: int = OPUS_BITRATE_KBPS,
    ) -> None:
        super().__init__(sample_rate, out_rate, frame_ms)
        self._sink = _Sink()
        self._container: Any = av.open(
            self._sink,
            "w",
            format="ogg",
            options={"page_duration": str(frame_ms * 1000)},
            buffer_size=4096,
        )
        self._stream = self._container.add_stream("libopus", rate=out_rate)
        _opus_context(self._stream.codec_context, out_rate, frame_ms, bitrate_kbps)
        self._pts = 0
        self._muxed_ms = 0.0  # duration of the packets muxed but not yet seen in the output

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            if packet.duration and packet.time_base:
                self._muxed_ms += float(packet.duration * packet.time_base) * 1000
            self._container.mux(packet)

    def _chunk(self) -> list[AudioChunk]:
        data = self._sink.take()
        if not data:
            return []
        chunk = AudioChunk(data, round(self._muxed_ms, 3))
        self._muxed_ms = 0.0
        return [chunk]

    def _encode(self, frame: bytes | None) -> None:
        if frame is None:
            self._mux(self._stream.encode(None))
            return
        self._mux(self._stream.encode(_frame(frame, self.out_rate, self._pts)))
        self._pts += len(frame) // 2

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]:
        """Take more PCM; return the pages completed (at most one chunk)."""
        self._take(pcm)
        for frame in self._frames():
            self._encode(frame)
        return self._chunk()

    def flush_chunks(self) -> list[AudioChunk]:
        """End the stream: the last (short) frame, the encoder's tail and the last page."""
        if self._finished:
            return []
        self._pending += self._resample.flush()
        self._finished = True
        if self._pts == 0 and not self._pending:
            self._container = None  # nothing was said: no stream at all
            return []
        if self._pending:
            self._encode(bytes(self._pending))  # libopus pads a short last frame itself
            self._pending.clear()
        self._encode(None)
        self._container.close()
        self._container = None
        return self._chunk()


class PcmEncoder(_Framed):
    """16-bit little-endian mono PCM at ``out_rate``."""

    def __init__(self, sample_rate: int, *, out_rate: int) -> None:
        super().__init__(sample_rate, out_rate, 1)

    def _out(self) -> list[AudioChunk]:
        data = bytes(self._pending)
        self._pending.clear()
        if not data:
            return []
        return [AudioChunk(data, len(data) / 2 / self.out_rate * 1000)]

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]:
        self._take(pcm)
        return self._out()

    def flush_chunks(self) -> list[AudioChunk]:
        if self._finished:
            return []
        self._pending += self._resample.flush()
        self._finished = True
        return self._out()


class Mp3ChunkEncoder(_Framed):
    """MP3 at ``out_rate`` (None: the PCM's own rate) with the durations of the PCM each chunk took in."""

    def __init__(self, sample_rate: int, *, out_rate: int | None, bitrate_kbps: int) -> None:
        rate = out_rate or sample_rate
        super().__init__(sample_rate, rate, 1)
        self._mp3 = Mp3Encoder(rate, bitrate_kbps=bitrate_kbps)
        self._uncredited = 0  # output-rate samples encoded whose duration no chunk carried yet

    def _out(self, mp3: bytes) -> list[AudioChunk]:
        if not mp3:
            return []
        chunk = AudioChunk(mp3, self._uncredited / self.out_rate * 1000)
        self._uncredited = 0
        return [chunk]

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]:
        self._take(pcm)
        data = bytes(self._pending)
        self._pending.clear()
        self._uncredited += len(data) // 2
        return self._out(self._mp3.encode(data))

    def flush_chunks(self) -> list[AudioChunk]:
        if self._finished:
            return []
        data = bytes(self._pending) + self._resample.flush()
        self._pending.clear()
        self._finished = True
        self._uncredited += len(data) // 2
        return self._out(self._mp3.encode(data) + self._mp3.flush())


ChunkEncoderType = OpusPacketEncoder | OggOpusEncoder | PcmEncoder | Mp3ChunkEncoder

#: How each format's encoder is made: (PCM rate, asked format, MP3 bitrate) -> encoder.
_MAKERS: dict[str, Callable[[int, OutputAudio, int], ChunkEncoderType]] = {
    "opus": lambda rate, out, _: OpusPacketEncoder(
        rate, out_rate=out.sample_rate or rate, frame_ms=out.frame_ms or 60
    ),
    "ogg_opus": lambda rate, out, _: OggOpusEncoder(
        rate, out_rate=out.sample_rate or rate, frame_ms=out.frame_ms or 60
    ),
    "pcm": lambda rate, out, _: PcmEncoder(rate, out_rate=out.sample_rate or rate),
    "mp3": lambda rate, out, kbps: Mp3ChunkEncoder(
        rate, out_rate=out.sample_rate, bitrate_kbps=kbps
    ),
}


def encoder_factory(
    output: OutputAudio, *, mp3_bitrate_kbps: int
) -> Callable[[int], ChunkEncoderType]:
    """The ``new_encoder`` of an answer in ``output``'s format: PCM rate -> encoder."""
    make = _MAKERS[output.format]
    return lambda sample_rate: make(sample_rate, output, mp3_bitrate_kbps)
