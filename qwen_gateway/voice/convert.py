"""PLACEHOLDER of the shared audio converters (``/work/ref/briefs/API.md``), built by the "rtaudio" helper.

This file exists on ``h/omni`` only so that the Omni bridge and its tests run before rtaudio's module lands on
main; at the merge, rtaudio's version replaces it as a whole (same names and signatures). soxr resamples; the
standard library's ``audioop`` (present in Python 3.11) does G.711.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "BETA_FORMATS",
    "WIRE_FORMATS",
    "InputConverter",
    "OutputConverter",
    "Resampler",
    "WireFormat",
    "wire_bytes",
    "wire_format",
    "wire_ms",
]


@dataclass(frozen=True, slots=True)
class WireFormat:
    name: str
    sample_rate: int
    sample_width: int


WIRE_FORMATS: Mapping[str, WireFormat] = {
    "audio/pcm": WireFormat("audio/pcm", 24000, 2),
    "audio/pcmu": WireFormat("audio/pcmu", 8000, 1),
    "audio/pcma": WireFormat("audio/pcma", 8000, 1),
}
BETA_FORMATS: Mapping[str, str] = {
    "pcm16": "audio/pcm",
    "g711_ulaw": "audio/pcmu",
    "g711_alaw": "audio/pcma",
}


def wire_format(name: str, rate: int | None = None) -> WireFormat:
    fmt = WIRE_FORMATS.get(BETA_FORMATS.get(name, name))
    if fmt is None:
        raise ValueError(f"unknown audio format {name!r}")
    if rate is not None and rate != fmt.sample_rate:
        if fmt.sample_width == 1 or rate not in (8000, 16000, 24000, 48000):
            raise ValueError(f"{name} does not take {rate} Hz")
        fmt = WireFormat(fmt.name, rate, fmt.sample_width)
    return fmt


def wire_ms(fmt: WireFormat, nbytes: int) -> int:
    return nbytes // fmt.sample_width * 1000 // fmt.sample_rate


def wire_bytes(fmt: WireFormat, ms: int) -> int:
    return fmt.sample_rate * ms // 1000 * fmt.sample_width


class Resampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._odd = b""
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")
        )

    def process(self, pcm: bytes) -> bytes:
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        if self._stream is None:
            return data[:cut]
        samples = np.frombuffer(data[:cut], dtype=np.int16)
        return bytes(self._stream.resample_chunk(samples).tobytes())

    def flush(self) -> bytes:
        self._odd = b""
        if self._stream is None:
            return b""
        out = bytes(self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).tobytes())
        self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="int16")
        return out


_DECODE = {"audio/pcmu": audioop.ulaw2lin, "audio/pcma": audioop.alaw2lin}
_ENCODE = {"audio/pcmu": audioop.lin2ulaw, "audio/pcma": audioop.lin2alaw}


class InputConverter:
    def __init__(self, fmt: WireFormat, out_rate: int) -> None:
        self._fmt = fmt
        self._resampler = Resampler(fmt.sample_rate, out_rate)

    def feed(self, data: bytes) -> bytes:
        decode = _DECODE.get(self._fmt.name)
        pcm = decode(data, 2) if decode is not None else data
        return self._resampler.process(pcm)

    def flush(self) -> bytes:
        return self._resampler.flush()


class OutputConverter:
    def __init__(self, fmt: WireFormat) -> None:
        self._fmt = fmt
        self._resampler: Resampler | None = None

    def _encode(self, pcm: bytes) -> bytes:
        encode = _ENCODE.get(self._fmt.name)
        return encode(pcm, 2) if encode is not None else pcm

    def feed(self, pcm: bytes, sample_rate: int) -> bytes:
        out = b""
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            if self._resampler is not None:
                out = self._resampler.flush()
            self._resampler = Resampler(sample_rate, self._fmt.sample_rate)
        return self._encode(out + self._resampler.process(pcm))

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return self._encode(self._resampler.flush())
