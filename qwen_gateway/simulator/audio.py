"""Audio arithmetic for the simulator: how long received audio lasts, and speech-like PCM for synthesis.

* :func:`make_clock` returns an incremental duration counter for a DashScope recogniser ``format``: PCM and WAV
  from the byte count, MP3 and AAC (ADTS) from their frame headers, Ogg Opus/Speex from page granule positions,
  AMR-NB from its frame types; anything else is estimated at 16 kbit/s.
* :func:`synthesize` renders text as 16-bit mono little-endian PCM whose length follows the text: about 4 Chinese
  characters or 12 Latin letters a second, with pauses at punctuation. It is a voiced buzz with a pitch per
  syllable, not words, but it has the shape of speech (energy, silences) for encoders and players.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
import sys
from array import array

__all__ = [
    "AudioClock",
    "audio_digest",
    "duration_of",
    "make_clock",
    "sniff_format",
    "speech_seconds",
    "synthesize",
    "wav_header",
]

# ------------------------------------------------------------------ durations


class AudioClock:
    """Counts the seconds of audio fed so far. Feed bytes in order; read :attr:`seconds`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.nbytes = 0

    def feed(self, data: bytes) -> float:
        """Account for ``data``; returns the total seconds so far."""
        self.nbytes += len(data)
        self._feed(data)
        return self.seconds

    def _feed(self, data: bytes) -> None:
        raise NotImplementedError


class _PcmClock(AudioClock):
    def __init__(self, sample_rate: int, channels: int = 1, width: int = 2) -> None:
        super().__init__()
        self._rate = max(1, sample_rate * channels * width)

    def _feed(self, data: bytes) -> None:
        self.seconds = self.nbytes / self._rate


class _BitrateClock(AudioClock):
    def __init__(self, bytes_per_second: float) -> None:
        super().__init__()
        self._rate = bytes_per_second

    def _feed(self, data: bytes) -> None:
        self.seconds = self.nbytes / self._rate


class _WavClock(AudioClock):
    """RIFF/WAVE: the ``fmt `` chunk gives the byte rate; bytes after the ``data`` header are audio."""

    def __init__(self, fallback_rate: int) -> None:
        super().__init__()
        self._head = bytearray()
        self._byte_rate = 0
        self._data_bytes = 0
        self._in_data = False
        self._fallback = max(1, fallback_rate * 2)

    def _feed(self, data: bytes) -> None:
        if self._in_data:
            self._data_bytes += len(data)
        else:
            self._head += data
            self._parse_head()
        rate = self._byte_rate or self._fallback
        self.seconds = self._data_bytes / rate

    def _parse_head(self) -> None:
        head = self._head
        if len(head) < 12:
            return
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            # Not a WAV file after all: treat everything as PCM at the declared rate.
            self._in_data = True
            self._data_bytes = len(head)
            self._head = bytearray()
            return
        pos = 12
        while pos + 8 <= len(head):
            chunk_id = bytes(head[pos : pos + 4])
            (size,) = struct.unpack_from("<I", head, pos + 4)
            if chunk_id == b"data":
                self._in_data = True
                self._data_bytes = len(head) - (pos + 8)
                self._head = bytearray()
                return
            if pos + 8 + size > len(head):
                return
            if chunk_id == b"fmt " and size >= 16:
                _fmt, _channels, _rate, byte_rate = struct.unpack_from("<HHII", head, pos + 8)
                self._byte_rate = byte_rate
            pos += 8 + size + (size & 1)


_MP3_BITRATES = {
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame(header: bytes | bytearray, pos: int = 0) -> tuple[int, int, int] | None:
    """Parse the MPEG audio frame header at ``pos``: ``(frame_bytes, samples, sample_rate)`` or None."""
    if len(header) < pos + 4:
        return None
    b1, b2 = header[pos + 1], header[pos + 2]
    if header[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
        return None
    version = (b1 >> 3) & 3  # 3: MPEG1, 2: MPEG2, 0: MPEG2.5, 1: reserved
    layer = (b1 >> 1) & 3  # 3: I, 2: II, 1: III
    bitrate_index = b2 >> 4
    rate_index = (b2 >> 2) & 3
    if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    table = _MP3_BITRATES[(3 if version == 3 else 2, layer)]
    bitrate = table[bitrate_index] * 1000
    sample_rate = _MP3_RATES[version][rate_index]
    padding = (b2 >> 1) & 1
    if layer == 3:
        samples = 384
        size = (12 * bitrate // sample_rate + padding) * 4
    else:
        samples = 1152 if (layer == 2 or version == 3) else 576
        size = samples // 8 * bitrate // sample_rate + padding
    return size, samples, sample_rate


class _Mp3Clock(AudioClock):
    """Sums the samples of every complete MPEG audio frame; skips an ID3v2 tag and garbage."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()
        self._skip = 0
        self._started = False

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._started:
            if len(buf) < 10:
                return
            self._started = True
            if buf[:3] == b"ID3":
                size = (buf[6] << 21) | (buf[7] << 14) | (buf[8] << 7) | buf[9]
                self._skip = 10 + size + (10 if buf[5] & 0x10 else 0)
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
        pos = 0
        seconds = self.seconds
        while pos + 4 <= len(buf):
            frame = mp3_frame(buf, pos)
            if frame is None:
                pos += 1
                continue
            size, samples, rate = frame
            if pos + size > len(buf):
                break
            seconds += samples / rate
            pos += size
        del buf[:pos]
        self.seconds = seconds


_ADTS_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


class _AdtsClock(AudioClock):
    """AAC in ADTS frames: 1024 samples per raw data block."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while pos + 7 <= len(buf):
            if buf[pos] != 0xFF or (buf[pos + 1] & 0xF0) != 0xF0:
                pos += 1
                continue
            rate_index = (buf[pos + 2] >> 2) & 0xF
            size = ((buf[pos + 3] & 3) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
            if rate_index >= len(_ADTS_RATES) or size < 7:
                pos += 1
                continue
            if pos + size > len(buf):
                break
            blocks = (buf[pos + 6] & 3) + 1
            self.seconds += 1024 * blocks / _ADTS_RATES[rate_index]
            pos += size
        del buf[:pos]


_AMR_SIZES = (13, 14, 16, 18, 20, 21, 27, 32, 6, 7, 6, 6, 1, 1, 1, 1)


class _AmrClock(AudioClock):
    """AMR-NB storage format: 20 ms per frame, frame size from the frame type."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()
        self._header_done = False

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._header_done:
            if len(buf) < 6:
                return
            if buf[:6] == b"#!AMR\n":
                del buf[:6]
            self._header_done = True
        pos = 0
        while pos < len(buf):
            size = _AMR_SIZES[(buf[pos] >> 3) & 0xF]
            if pos + size > len(buf):
                break
            self.seconds += 0.02
            pos += size
        del buf[:pos]


class _OggClock(AudioClock):
    """Ogg Opus / Ogg Speex: the granule position of the last complete page gives the duration."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()
        self._rate = 48000
        self._pre_skip = 0
        self._first = True

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while True:
            start = buf.find(b"OggS", pos)
            if start < 0:
                pos = max(pos, len(buf) - 3)
                break
            if start + 27 > len(buf):
                pos = start
                break
            nseg = buf[start + 26]
            if start + 27 + nseg > len(buf):
                pos = start
                break
            body = sum(buf[start + 27 : start + 27 + nseg])
            end = start + 27 + nseg + body
            if end > len(buf):
                pos = start
                break
            (granule,) = struct.unpack_from("<q", buf, start + 6)
            payload = bytes(buf[start + 27 + nseg : end])
            if self._first:
                self._first = False
                if payload.startswith(b"OpusHead") and len(payload) >= 12:
                    (self._pre_skip,) = struct.unpack_from("<H", payload, 10)
                    self._rate = 48000
                elif payload.startswith(b"Speex   ") and len(payload) >= 40:
                    (self._rate,) = struct.unpack_from("<i", payload, 36)
            elif granule >= 0:
                self.seconds = max(0.0, (granule - self._pre_skip) / max(1, self._rate))
            pos = end
        del buf[:pos]


def make_clock(format: str, sample_rate: int) -> AudioClock:
    """A duration counter for audio declared as ``format`` at ``sample_rate`` (DashScope's names)."""
    fmt = format.lower()
    if fmt in ("pcm", "s16le", "pcm16"):
        return _PcmClock(sample_rate)
    if fmt == "wav":
        return _WavClock(sample_rate)
    if fmt == "mp3":
        return _Mp3Clock()
    if fmt in ("opus", "speex", "ogg"):
        return _OggClock()
    if fmt == "aac":
        return _AdtsClock()
    if fmt == "amr":
        return _AmrClock()
    return _BitrateClock(2000.0)


def sniff_format(data: bytes) -> str:
    """Guess the container of a whole file from its first bytes (``pcm`` when nothing matches)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "speex" if b"Speex   " in data[:200] else "opus"
    if data[:6] == b"#!AMR\n":
        return "amr"
    if data[:3] == b"ID3" or mp3_frame(data) is not None:
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xF6) == 0xF0:
        return "aac"
    return "pcm"


def duration_of(data: bytes, format: str | None = None, sample_rate: int = 16000) -> float:
    """Seconds of audio in the complete file ``data`` (format sniffed when None)."""
    clock = make_clock(format or sniff_format(data), sample_rate)
    return clock.feed(data)


def audio_digest(data: bytes) -> str:
    """The registry key of some audio: SHA-256 of its bytes, hex."""
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ synthesis

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z0-9\u00c0-\u024f]")
_MAJOR_PAUSE = set("。！？!?；;…\n")
_MINOR_PAUSE = set("，、,:：.")

#: Seconds per unit at speed 1.0.
CJK_SECONDS = 0.25
LETTER_SECONDS = 1 / 12
MAJOR_PAUSE_SECONDS = 0.25
MINOR_PAUSE_SECONDS = 0.15


def char_seconds(ch: str) -> float:
    """Speaking time of one character at speed 1.0 (0 for symbols that are not spoken)."""
    if _CJK.match(ch):
        return CJK_SECONDS
    if _LATIN.match(ch):
        return LETTER_SECONDS
    if ch in _MAJOR_PAUSE:
        return MAJOR_PAUSE_SECONDS
    if ch in _MINOR_PAUSE:
        return MINOR_PAUSE_SECONDS
    return 0.0


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long :func:`synthesize` speaks ``text`` at ``speed`` (before rounding to samples)."""
    return sum(char_seconds(ch) for ch in text) / speed


_PITCHES = (118.0, 132.0, 146.0, 160.0, 176.0, 194.0, 212.0, 236.0)


def _voiced(sample_rate: int, seconds: float, pitch: float) -> bytes:
    n = max(1, round(sample_rate * seconds))
    amp = 0.28 * 32767
    w = 2 * math.pi * pitch / sample_rate
    env_w = math.pi / n
    samples = array(
        "h",
        (
            int(
                amp
                * math.sin(env_w * i)
                * (0.62 * math.sin(w * i) + 0.28 * math.sin(2 * w * i) + 0.1 * math.sin(3 * w * i))
            )
            for i in range(n)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


@functools.lru_cache(maxsize=32)
def _units(
    sample_rate: int, speed: float
) -> tuple[tuple[bytes, ...], tuple[bytes, ...], bytes, bytes]:
    syllables = tuple(_voiced(sample_rate, CJK_SECONDS / speed, p) for p in _PITCHES)
    letters = tuple(_voiced(sample_rate, LETTER_SECONDS / speed, p) for p in _PITCHES)
    major = bytes(2 * round(sample_rate * MAJOR_PAUSE_SECONDS / speed))
    minor = bytes(2 * round(sample_rate * MINOR_PAUSE_SECONDS / speed))
    return syllables, letters, major, minor


def synthesize(text: str, sample_rate: int, speed: float = 1.0) -> bytes:
    """Speech-shaped 16-bit mono little-endian PCM for ``text`` at ``sample_rate``."""
    syllables, letters, major, minor = _units(sample_rate, round(speed, 3))
    parts: list[bytes] = []
    for ch in text:
        if _CJK.match(ch):
            parts.append(syllables[ord(ch) % len(syllables)])
        elif _LATIN.match(ch):
            parts.append(letters[ord(ch) % len(letters)])
        elif ch in _MAJOR_PAUSE:
            parts.append(major)
        elif ch in _MINOR_PAUSE:
            parts.append(minor)
    return b"".join(parts)


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM (streaming size by default)."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        (36 + data_bytes) & 0xFFFFFFFF,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        data_bytes & 0xFFFFFFFF,
    )
