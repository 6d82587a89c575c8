"""Audio conversion for /v1/realtime: the client's wire formats to and from the engines' PCM.

The Realtime API carries audio as base64 of one of three wire formats (GA names, with the beta / DashScope names
as aliases): ``audio/pcm`` (16-bit little-endian mono PCM, 24 kHz unless the client asks for another rate),
``audio/pcmu`` and ``audio/pcma`` (G.711 mu-law / A-law, 8 kHz, one byte a sample). The recogniser wants 16 kHz
PCM; TTS and Omni speak at their own rate (24 kHz, sometimes 16 or 22.05 kHz) and the client wants its format.

* Resampling is `soxr <https://github.com/dofuuz/python-soxr>`_'s streaming resampler (libsoxr, "HQ"), pcm16
  in and out. It runs soxr in float32: soxr's int16 mode rounds differently depending on where chunks end (up
  to 2 LSB apart), float32 gives the same samples for any chunking, at ~20 instead of ~9 us per 20 ms chunk.
  The tail soxr holds back comes out on :meth:`Resampler.flush`.
* G.711 is FFmpeg's ``pcm_mulaw`` / ``pcm_alaw`` codecs through PyAV, not hand-written tables. PyAV's per-call
  overhead measured about 12 us per 20 ms chunk each way (bench/bench_realtime_audio.py), far below the audio's
  own duration, so no faster path is needed.
* Everything is synchronous CPU work on the caller's thread: a 20 ms chunk costs tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import av
import numpy as np
import soxr  # type: ignore[import-untyped]
from av.audio.codeccontext import AudioCodecContext

__all__ = [
    "BETA_FORMATS",
    "PCM_RATES",
    "WIRE_FORMATS",
    "G711Decoder",
    "G711Encoder",
    "InputConverter",
    "OutputConverter",
    "Resampler",
    "WireEncoder",
    "WireFormat",
    "wire_bytes",
    "wire_format",
    "wire_ms",
]


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One audio format as the client sends or receives it."""

    name: str  # "audio/pcm" | "audio/pcmu" | "audio/pcma"
    sample_rate: int  # 24000 for audio/pcm by default; 8000 for G.711
    sample_width: int  # bytes per sample on the wire: 2 (pcm16 LE mono) or 1 (G.711)


#: The GA names and their default formats.
WIRE_FORMATS: Final[Mapping[str, WireFormat]] = MappingProxyType(
    {
        "audio/pcm": WireFormat("audio/pcm", 24000, 2),
        "audio/pcmu": WireFormat("audio/pcmu", 8000, 1),
        "audio/pcma": WireFormat("audio/pcma", 8000, 1),
    }
)

#: Beta Realtime / DashScope names -> GA name. DashScope's ``pcm24`` (its Omni output) is 24 kHz pcm16.
BETA_FORMATS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "pcm16": "audio/pcm",
        "pcm24": "audio/pcm",
        "g711_ulaw": "audio/pcmu",
        "g711_alaw": "audio/pcma",
    }
)

#: Rates a client may ask for with ``audio/pcm`` (G.711 is 8 kHz only).
PCM_RATES: Final = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})

#: FFmpeg's codec for each G.711 wire format.
_G711_CODECS: Final[Mapping[str, str]] = MappingProxyType(
    {"audio/pcmu": "pcm_mulaw", "audio/pcma": "pcm_alaw"}
)


def wire_format(name: str, rate: int | None = None) -> WireFormat:
    """The format called ``name`` (GA or beta name) at ``rate`` (None: the format's default).

    Raises:
        ValueError: an unknown name, or a rate the format cannot have.
    """
    ga = BETA_FORMATS.get(name, name)
    base = WIRE_FORMATS.get(ga)
    if base is None:
        known = sorted({*WIRE_FORMATS, *BETA_FORMATS})
        raise ValueError(f"unknown audio format {name!r}; expected one of {known}")
    if rate is None or rate == base.sample_rate:
        return base
    if ga != "audio/pcm":
        raise ValueError(f"{ga} is {base.sample_rate} Hz only, not {rate} Hz")
    if rate not in PCM_RATES:
        raise ValueError(f"audio/pcm cannot be {rate} Hz; expected one of {sorted(PCM_RATES)}")
    return WireFormat(ga, rate, base.sample_width)


def wire_ms(fmt: WireFormat, nbytes: int) -> int:
    """Whole milliseconds of audio in ``nbytes`` of ``fmt`` (a trailing partial sample does not count)."""
    return (nbytes // fmt.sample_width) * 1000 // fmt.sample_rate


def wire_bytes(fmt: WireFormat, ms: int) -> int:
    """Bytes of ``fmt`` for ``ms`` milliseconds, rounded down to whole samples."""
    return (ms * fmt.sample_rate // 1000) * fmt.sample_width


def _check_rate(rate: int) -> None:
    if not isinstance(rate, int) or isinstance(rate, bool) or not 1000 <= rate <= 384000:
        raise ValueError(f"sample rate must be an integer from 1000 to 384000 Hz, not {rate!r}")


_FROM_INT16: Final = np.float32(1 / 32768)


def _whole_samples(carry: bytes, pcm: bytes) -> tuple[bytes, bytes]:
    """``carry + pcm`` cut to whole 16-bit samples, and the odd byte left over for the next call."""
    data = carry + pcm if carry else pcm
    cut = len(data) - len(data) % 2
    return data[:cut], data[cut:]


def _to_int16(samples: np.ndarray) -> bytes:
    """float32 samples in [-1, 1) -> pcm16 LE bytes, rounded and clipped."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class Resampler:
    """A streaming resampler of 16-bit little-endian mono PCM (soxr, HQ); identity when the rates are equal.

    :meth:`process` takes any number of bytes (an odd trailing byte waits for the next call) and returns what
    soxr can give so far; :meth:`flush` returns the held-back tail and makes the resampler ready for a new
    stream. The concatenation of all outputs is the input resampled as one piece, within soxr's streaming
    semantics (identical samples; the total length is ``n * out_rate / in_rate`` within a sample or two).
    """

    __slots__ = ("_odd", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        _check_rate(in_rate)
        _check_rate(out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._odd = b""
        self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream | None:
        if self.in_rate == self.out_rate:
            return None
        return soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def process(self, pcm: bytes) -> bytes:
        """Resample the next piece of the stream."""
        pcm, self._odd = _whole_samples(self._odd, pcm)
        if self._stream is None or not pcm:
            return bytes(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * _FROM_INT16
        return _to_int16(self._stream.resample_chunk(samples, last=False))

    def flush(self) -> bytes:
        """The tail soxr held back (an odd byte left over is half a sample and is dropped)."""
        self._odd = b""
        if self._stream is None:
            return b""
        tail = _to_int16(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self._stream = self._new_stream()
        return tail


class G711Encoder:
    """pcm16 mono LE at 8 kHz -> G.711 bytes (``audio/pcmu`` or ``audio/pcma``) with FFmpeg's codec."""

    __slots__ = ("_ctx", "_odd")

    def __init__(self, fmt: WireFormat) -> None:
        codec = _G711_CODECS.get(fmt.name)
        if codec is None:
            raise ValueError(f"{fmt.name} is not a G.711 format")
        ctx = av.CodecContext.create(codec, "w")
        assert isinstance(ctx, AudioCodecContext)
        ctx.sample_rate = fmt.sample_rate
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx
        self._odd = b""

    def encode(self, pcm: bytes) -> bytes:
        """One G.711 byte per whole input sample (an odd trailing byte waits for the next call)."""
        pcm, self._odd = _whole_samples(self._odd, pcm)
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self._ctx.sample_rate
        return b"".join(bytes(packet) for packet in self._ctx.encode(frame))


class G711Decoder:
    """G.711 bytes (``audio/pcmu`` or ``audio/pcma``) -> pcm16 mono LE at 8 kHz with FFmpeg's codec."""

    __slots__ = ("_ctx",)

    def __init__(self, fmt: WireFormat) -> None:
        codec = _G711_CODECS.get(fmt.name)
        if codec is None:
            raise ValueError(f"{fmt.name} is not a G.711 format")
        ctx = av.CodecContext.create(codec, "r")
        assert isinstance(ctx, AudioCodecContext)
        ctx.sample_rate = fmt.sample_rate
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx

    def decode(self, data: bytes) -> bytes:
        """Two bytes of PCM for every G.711 byte."""
        if not data:
            return b""
        frames = self._ctx.decode(av.Packet(data))
        return b"".join(frame.to_ndarray().astype("<i2", copy=False).tobytes() for frame in frames)


class InputConverter:
    """Client wire audio -> pcm16 mono LE at ``out_rate`` (G.711 decoded by FFmpeg, then resampled)."""

    __slots__ = ("_decoder", "_resampler", "fmt", "out_rate")

    def __init__(self, fmt: WireFormat, out_rate: int) -> None:
        self.fmt = fmt
        self.out_rate = out_rate
        self._decoder = G711Decoder(fmt) if fmt.name in _G711_CODECS else None
        self._resampler = Resampler(fmt.sample_rate, out_rate)

    def feed(self, data: bytes) -> bytes:
        """Convert the next piece of the client's audio."""
        pcm = self._decoder.decode(data) if self._decoder is not None else data
        return self._resampler.process(pcm)

    def flush(self) -> bytes:
        """The resampler's tail (call at the end of the input, e.g. on a commit)."""
        return self._resampler.flush()


class OutputConverter:
    """pcm16 mono LE at any rate (TTS / Omni output) -> the client's wire bytes in ``fmt``.

    A change of input rate between calls flushes the old resampler (its tail is converted and returned first)
    and starts a new one, so no audio is lost or stretched.
    """

    __slots__ = ("_encoder", "_resampler", "fmt")

    def __init__(self, fmt: WireFormat) -> None:
        self.fmt = fmt
        self._encoder = G711Encoder(fmt) if fmt.name in _G711_CODECS else None
        self._resampler: Resampler | None = None

    def feed(self, pcm: bytes, sample_rate: int) -> bytes:
        """Convert the next piece of PCM at ``sample_rate``."""
        head = b""
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            if self._resampler is not None:
                head = self._resampler.flush()
            self._resampler = Resampler(sample_rate, self.fmt.sample_rate)
        return self._encode(head + self._resampler.process(pcm))

    def flush(self) -> bytes:
        """The resampler's tail in wire bytes (call at the end of an answer)."""
        if self._resampler is None:
            return b""
        return self._encode(self._resampler.flush())

    def _encode(self, pcm: bytes) -> bytes:
        if self._encoder is None or not pcm:
            return pcm
        return self._encoder.encode(pcm)


class WireEncoder:
    """PCM at one rate -> the client's wire bytes, shaped as the answer stage's ``AudioEncoder``.

    The same duck type as :class:`~qwen_gateway.voice.mp3.Mp3Encoder` (``sample_rate``, ``samples_in``,
    ``finished``, ``encode``, ``flush``), so the realtime endpoint can pass
    ``lambda rate: WireEncoder(fmt, rate)`` as ``new_encoder``. One encoder per answer (and per TTS rate).
    """

    __slots__ = ("_bytes_in", "_converter", "_finished", "_sample_rate", "bytes_out")

    def __init__(self, fmt: WireFormat, sample_rate: int) -> None:
        _check_rate(sample_rate)
        self._converter = OutputConverter(fmt)
        self._sample_rate = sample_rate
        self._bytes_in = 0
        self._finished = False
        self.bytes_out = 0

    @property
    def sample_rate(self) -> int:
        """The PCM's rate (the wire's rate is ``fmt.sample_rate``)."""
        return self._sample_rate

    @property
    def samples_in(self) -> int:
        """Whole PCM samples accepted so far."""
        return self._bytes_in // 2

    @property
    def finished(self) -> bool:
        """True once :meth:`flush` was called."""
        return self._finished

    def encode(self, pcm: bytes) -> bytes:
        """Convert more PCM; the wire bytes ready so far (possibly empty).

        Raises:
            RuntimeError: called after :meth:`flush`.
        """
        if self._finished:
            raise RuntimeError("WireEncoder.encode() after flush()")
        self._bytes_in += len(pcm)
        out = self._converter.feed(pcm, self._sample_rate)
        self.bytes_out += len(out)
        return out

    def flush(self) -> bytes:
        """End the stream: the last wire bytes; ``b""`` when called again."""
        if self._finished:
            return b""
        self._finished = True
        out = self._converter.flush()
        self.bytes_out += len(out)
        return out
