"""What an uploaded audio file is, from its first bytes, and how long it lasts.

The recogniser must be told the upload's container and sample rate, and a client's file name or MIME type is not
to be trusted: :func:`sniff` reads the bytes. Accepted, as DashScope's recognisers take them:

* ``mp3``: MPEG-1/2/2.5 Layer III, bare or behind ID3v2 tags;
* ``wav``: RIFF/WAVE holding integer PCM (``WAVE_FORMAT_PCM`` or the PCM sub-format of ``EXTENSIBLE``);
* ``opus`` / ``speex``: Ogg-encapsulated, as the recognisers require;
* ``pcm``: raw 16-bit little-endian PCM, only when the client declares it with its rate
  (``declared="pcm;rate=16000"``), since raw samples cannot be recognised from their bytes.

Anything else raises :class:`UnknownAudioFormat` (``code = "unsupported_audio_format"``) before any upstream call;
containers that are recognised but not accepted (WebM, MP4/AAC, FLAC, Ogg/Vorbis, float or ADPCM WAV ...) are
named in its message.

Also: :func:`mp3_duration`, :func:`wav_duration`, :func:`ogg_duration` and :func:`audio_duration`, for the
``audio_complete.duration`` the seed reports. Everything here is pure: bytes in, values out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = [
    "SNIFF_BYTES",
    "AudioFormatInfo",
    "SniffedFormat",
    "UnknownAudioFormat",
    "audio_duration",
    "mp3_duration",
    "ogg_duration",
    "parse_declared",
    "sniff",
    "wav_duration",
]

#: How many leading bytes :func:`sniff` wants: enough for an MP3 frame plus the next frame's header
#: (two frames are checked), a WAV ``fmt`` chunk behind ``LIST``/``bext`` chunks, and an Ogg first page.
#: Shorter input is fine when the upload itself is shorter. Only an ID3v2 tag larger than this (cover art)
#: hides the first MP3 frame; the tag alone then identifies the file and the rate is reported as unknown.
SNIFF_BYTES = 4096

SniffedFormat = Literal["mp3", "wav", "opus", "speex", "pcm"]


class UnknownAudioFormat(ValueError):
    """The bytes are not audio the gateway accepts. Raised before any upstream call.

    Attributes:
        code: ``"unsupported_audio_format"``, for the ``error`` event.
        detected: what the bytes were recognised as when that is known (``"webm"``, ``"flac"``,
            ``"wav/ieee-float"`` ...), else None.
    """

    code: ClassVar[str] = "unsupported_audio_format"

    def __init__(self, message: str, *, detected: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detected = detected


@dataclass(frozen=True, slots=True)
class AudioFormatInfo:
    """The format of an upload as the recogniser must be told it.

    Attributes:
        format: container/codec name in DashScope's terms.
        sample_rate: Hz, None when the header could not be reached (an ID3 tag larger than the head). For Opus
            this is the encoder's input rate from ``OpusHead`` (48000 when it says 0); Opus always decodes
            at 48 kHz.
        channels: channel count, None when unknown (as for ``sample_rate``).
        bits_per_sample: for ``wav`` and ``pcm``; None for compressed formats.
    """

    format: SniffedFormat
    sample_rate: int | None
    channels: int | None
    bits_per_sample: int | None = None


# --------------------------------------------------------------------------------------------------
# declared formats
# --------------------------------------------------------------------------------------------------

_PCM_NAMES = frozenset({"pcm", "pcm16", "pcm_s16le", "s16le", "raw", "audio/pcm"})
_CONTAINER_NAMES = frozenset(
    {
        "mp3",
        "mpeg",
        "audio/mpeg",
        "audio/mp3",
        "wav",
        "wave",
        "audio/wav",
        "audio/wave",
        "audio/x-wav",
        "opus",
        "ogg",
        "audio/ogg",
        "audio/opus",
        "speex",
        "audio/speex",
        "audio/ogg; codecs=opus",
    }
)
_PCM_RATE_RANGE = (8000, 48000)


def parse_declared(declared: str | None) -> AudioFormatInfo | None:
    """Parse a client's declared format: an :class:`AudioFormatInfo` for raw PCM, None for anything to sniff.

    Raw PCM: ``pcm;rate=16000`` (also ``sample_rate=``/``sr=``; ``channels=``/``ch=`` 1 or 2, default 1),
    16-bit little-endian. Container names (``mp3``, ``wav``, ``opus``, ``audio/mpeg`` ...) and None/empty mean
    "sniff the bytes".

    Raises:
        UnknownAudioFormat: an unknown name, or PCM without a valid rate.
    """
    if declared is None or not declared.strip():
        return None
    text = declared.strip().lower()
    if text in _CONTAINER_NAMES:
        return None
    name, _, rest = text.partition(";")
    name = name.strip()
    if name in _CONTAINER_NAMES:
        return None
    if name not in _PCM_NAMES:
        raise UnknownAudioFormat(
            f"declared format {declared!r} is not supported; send mp3, wav, ogg/opus or ogg/speex, "
            "or declare raw PCM as 'pcm;rate=16000'"
        )
    params: dict[str, str] = {}
    for part in rest.split(";"):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq:
            raise UnknownAudioFormat(f"declared format {declared!r}: expected key=value after ';'")
        params[key.strip()] = value.strip()
    rate_text = params.get("rate") or params.get("sample_rate") or params.get("sr")
    if rate_text is None:
        raise UnknownAudioFormat(
            f"declared format {declared!r}: raw PCM needs its sample rate, e.g. 'pcm;rate=16000'"
        )
    channels_text = params.get("channels") or params.get("ch") or "1"
    if not rate_text.isdigit() or not _PCM_RATE_RANGE[0] <= int(rate_text) <= _PCM_RATE_RANGE[1]:
        raise UnknownAudioFormat(
            f"declared format {declared!r}: rate must be an integer from "
            f"{_PCM_RATE_RANGE[0]} to {_PCM_RATE_RANGE[1]} Hz"
        )
    if channels_text not in ("1", "2"):
        raise UnknownAudioFormat(f"declared format {declared!r}: channels must be 1 or 2")
    return AudioFormatInfo("pcm", int(rate_text), int(channels_text), 16)


# --------------------------------------------------------------------------------------------------
# sniffing
# --------------------------------------------------------------------------------------------------


def sniff(head: bytes | bytearray | memoryview, declared: str | None = None) -> AudioFormatInfo:
    """Identify an upload from its first bytes (at least :data:`SNIFF_BYTES` of them, or all if shorter).

    Args:
        head: the upload's first bytes.
        declared: the client's declared format, if any (see :func:`parse_declared`). Raw PCM is accepted only
            when declared; a RIFF/WAVE, Ogg or ID3-tagged upload declared as PCM is reported as what it is,
            since sending its header as samples would only add noise.

    Returns:
        The format, rate and channel count to pass to the recogniser.

    Raises:
        UnknownAudioFormat: not an accepted format (the message says what it is when known). Never anything
            else, whatever the bytes.
    """
    data = bytes(head[:SNIFF_BYTES]) if len(head) > SNIFF_BYTES else bytes(head)
    pcm = parse_declared(declared)
    if pcm is not None:
        if data[:4] in (b"RIFF", b"OggS") or _id3_size(data) is not None:
            return _sniff_container(data)
        return pcm
    return _sniff_container(data)


def _sniff_container(data: bytes) -> AudioFormatInfo:
    if not data:
        raise UnknownAudioFormat("the upload is empty")
    if data[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return _sniff_wav(data)
    if data[:4] == b"OggS":
        return _sniff_ogg(data)
    id3 = _id3_size(data)
    if id3 is not None or _frame_at(data, 0) is not None:
        return _sniff_mp3(data, id3)
    raise UnknownAudioFormat(_describe_unknown(data), detected=_identify_other(data))


def _identify_other(data: bytes) -> str | None:
    """A name for common containers we do not accept (for the error message)."""
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:9] == b"#!AMR-WB\n":
        return "amr-wb"
    if data[:6] == b"#!AMR\n":
        return "amr"
    if data[:4] in (b"FORM",):
        return "aiff"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "aac"
    if data[:4] == b".snd":
        return "au"
    return None


def _describe_unknown(data: bytes) -> str:
    detected = _identify_other(data)
    accepted = "send MP3, PCM WAV, Ogg/Opus or Ogg/Speex, or declare raw PCM as 'pcm;rate=16000'"
    if detected is not None:
        names = {
            "webm": "WebM/Matroska",
            "mp4": "MP4/M4A",
            "flac": "FLAC",
            "amr-wb": "AMR-WB",
            "amr": "AMR",
            "aiff": "AIFF",
            "aac": "ADTS AAC",
            "au": "Sun AU",
        }
        return f"{names[detected]} audio is not supported; {accepted}"
    return f"unrecognised audio format (first bytes {data[:8].hex(' ')}); {accepted}"


# --- ID3v2 / MPEG audio ---------------------------------------------------------------------------

_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class _Frame:
    """A parsed MPEG Layer III frame header."""

    version: int  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
    sample_rate: int
    channels: int
    length: int  # bytes, header included
    samples: int  # per channel
    crc: bool


def _parse_frame_header(b0: int, b1: int, b2: int, b3: int) -> _Frame | None:
    if b0 != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version = (b1 >> 3) & 3
    layer = (b1 >> 1) & 3
    if version == 1 or layer != 1:  # reserved version; only Layer III is MP3
        return None
    bitrate_index = b2 >> 4
    rate_index = (b2 >> 2) & 3
    if bitrate_index in (0, 15) or rate_index == 3 or b3 & 3 == 2:  # free/bad bitrate, reserved
        return None
    rate = _MPEG_RATES[version][rate_index]
    padding = (b2 >> 1) & 1
    if version == 3:
        kbps = _MPEG1_L3_KBPS[bitrate_index]
        length = 144 * kbps * 1000 // rate + padding
        samples = 1152
    else:
        kbps = _MPEG2_L3_KBPS[bitrate_index]
        length = 72 * kbps * 1000 // rate + padding
        samples = 576
    channels = 1 if b3 >> 6 == 3 else 2
    return _Frame(version, rate, channels, length, samples, crc=not b1 & 1)


def _frame_at(data: bytes, pos: int) -> _Frame | None:
    if pos < 0 or pos + 4 > len(data):
        return None
    return _parse_frame_header(data[pos], data[pos + 1], data[pos + 2], data[pos + 3])


def _same_stream(a: _Frame, b: _Frame) -> bool:
    return a.version == b.version and a.sample_rate == b.sample_rate


def _id3_size(data: bytes) -> int | None:
    """Total bytes of the ID3v2 tag at the start of ``data`` (header, body, footer), None if there is none."""
    if len(data) < 10 or data[:3] != b"ID3":
        return None
    major, revision, flags = data[3], data[4], data[5]
    size_bytes = data[6:10]
    if major not in (2, 3, 4) or revision == 0xFF or any(b & 0x80 for b in size_bytes):
        return None
    size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
    footer = 10 if major == 4 and flags & 0x10 else 0
    return 10 + size + footer


def _audio_start(data: bytes) -> int:
    """Offset of the first byte after any ID3v2 tags (and the zero padding some writers add after them)."""
    pos = 0
    while True:
        size = _id3_size(data[pos : pos + 10])
        if size is None:
            break
        pos += size
    while pos < len(data) and data[pos] == 0:
        pos += 1
    return pos


def _sniff_mp3(data: bytes, id3: int | None) -> AudioFormatInfo:
    start = _audio_start(data) if id3 is not None else 0
    if start >= len(data):
        # The tag reaches past the head: it is a valid ID3v2 tag, and its frames are out of sight.
        return AudioFormatInfo("mp3", None, None)
    frame = _frame_at(data, start)
    if frame is None:
        detected = _identify_other(data[start:])
        what = f"{detected} data" if detected else "no MPEG audio frame"
        raise UnknownAudioFormat(
            f"an ID3 tag followed by {what}; only MP3 is accepted behind ID3 tags",
            detected=detected,
        )
    # A frame is at most 1441 bytes, so within SNIFF_BYTES the next header is in sight unless the upload
    # itself ends first (a one-frame upload is still MP3).
    nxt = start + frame.length
    if nxt + 4 <= len(data):
        second = _frame_at(data, nxt)
        if second is None or not _same_stream(frame, second):
            raise UnknownAudioFormat(
                "bytes look like an MPEG audio frame header but the next frame does not follow; "
                "not an MP3 stream"
            )
    return AudioFormatInfo("mp3", frame.sample_rate, frame.channels)


def _xing_offset(frame: _Frame) -> int:
    """Offset of a Xing/Info header in a frame: after the header, CRC and side information."""
    if frame.version == 3:
        side = 17 if frame.channels == 1 else 32
    else:
        side = 9 if frame.channels == 1 else 17
    return 4 + (2 if frame.crc else 0) + side


def _vbr_header_samples(data: bytes, pos: int, frame: _Frame) -> int | None:
    """Samples of the stream per a Xing/Info (with LAME gapless info) or VBRI header in the first frame."""
    body = data[pos : pos + frame.length]
    off = _xing_offset(frame)
    if body[off : off + 4] in (b"Xing", b"Info") and len(body) >= off + 8:
        flags = struct.unpack_from(">I", body, off + 4)[0]
        cursor = off + 8
        if not flags & 1 or len(body) < cursor + 4:
            return None
        frames = struct.unpack_from(">I", body, cursor)[0]
        cursor += 4
        cursor += 4 if flags & 2 else 0
        cursor += 100 if flags & 4 else 0
        cursor += 4 if flags & 8 else 0
        samples = frames * frame.samples
        tag = body[cursor : cursor + 24]
        if len(tag) == 24 and tag[:4] in (b"LAME", b"Lavf", b"Lavc", b"GOGO"):
            delay = (tag[21] << 4) | (tag[22] >> 4)
            padding = ((tag[22] & 0x0F) << 8) | tag[23]
            if delay + padding < samples:
                samples -= delay + padding
        return int(samples)
    if body[36:40] == b"VBRI" and len(body) >= 36 + 18:
        frames = struct.unpack_from(">I", body, 36 + 14)[0]
        return int(frames * frame.samples)
    return None


def _resync(data: bytes, pos: int, first: _Frame | None) -> int | None:
    """The next offset after ``pos`` where a frame starts (of the same stream as ``first``, when given)
    and either another one follows or the data ends with it."""
    while True:
        pos = data.find(b"\xff", pos + 1)
        if pos < 0:
            return None
        frame = _frame_at(data, pos)
        if frame is None or (first is not None and not _same_stream(first, frame)):
            continue
        nxt = pos + frame.length
        if nxt == len(data):
            return pos
        second = _frame_at(data, nxt)
        if second is not None and _same_stream(frame, second):
            return pos


def mp3_duration(data: bytes | bytearray | memoryview) -> float:
    """Seconds of audio in a complete MP3 upload.

    Uses the Xing/Info header's frame count (minus LAME's recorded delay and padding) or a VBRI header when the
    first frame carries one, else sums the frames: skips ID3v2 tags, stops at ID3v1/APE tags, resynchronises
    over junk between frames, and ignores a truncated last frame.

    Raises:
        UnknownAudioFormat: no MPEG Layer III frame was found.
    """
    buf = bytes(data)
    pos = _audio_start(buf)
    first = _frame_at(buf, pos)
    if first is None:
        found = _resync(buf, pos - 1, None)
        first = _frame_at(buf, found) if found is not None else None
        if found is None or first is None:
            raise UnknownAudioFormat("no MPEG audio frame found; not an MP3 stream")
        pos = found
    if pos + first.length <= len(buf):
        vbr_samples = _vbr_header_samples(buf, pos, first)
        if vbr_samples is not None:
            return vbr_samples / first.sample_rate
    samples = 0
    size = len(buf)
    # A stream repeats a handful of distinct headers: parse each once.
    known: dict[bytes, _Frame | None] = {}
    while pos + 4 <= size:
        header = buf[pos : pos + 4]
        if header in known:
            frame = known[header]
        else:
            frame = _frame_at(header, 0)
            known[header] = frame if frame is not None and _same_stream(first, frame) else None
            frame = known[header]
        if frame is not None:
            if pos + frame.length > size:
                break
            samples += frame.samples
            pos += frame.length
            continue
        if buf[pos : pos + 3] == b"TAG" or buf[pos : pos + 8] == b"APETAGEX":
            break
        nxt = _resync(buf, pos, first)
        if nxt is None:
            break
        pos = nxt
    return samples / first.sample_rate


# --- RIFF/WAVE ------------------------------------------------------------------------------------

_WAVE_FORMAT_NAMES = {
    0x0002: "MS ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x00FF: "AAC",
}
_KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


@dataclass(frozen=True, slots=True)
class _Wav:
    sample_rate: int
    channels: int
    bits: int
    block_align: int
    data_offset: int | None  # offset of the data chunk's payload, when seen
    data_size: int | None  # as declared in the data chunk header


def _parse_wav(data: bytes) -> _Wav:
    if data[:4] == b"RIFX":
        raise UnknownAudioFormat("big-endian WAV (RIFX) is not supported", detected="wav/rifx")
    if data[:4] == b"RF64":
        raise UnknownAudioFormat("RF64 (64-bit WAV) is not supported", detected="wav/rf64")
    if len(data) < 12 or data[8:12] != b"WAVE":
        raise UnknownAudioFormat("a RIFF file that is not WAVE audio", detected="riff")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[body : body + size], size)
        elif chunk_id == b"data":
            if fmt is None:
                raise UnknownAudioFormat("WAV data chunk before its fmt chunk", detected="wav")
            rate, channels, bits, align = fmt
            return _Wav(rate, channels, bits, align, body, size)
        pos = body + size + (size & 1)
    if fmt is None:
        raise UnknownAudioFormat(
            "a WAV file whose fmt chunk is missing or beyond the bytes given", detected="wav"
        )
    rate, channels, bits, align = fmt
    return _Wav(rate, channels, bits, align, None, None)


def _parse_fmt(body: bytes, size: int) -> tuple[int, int, int, int]:
    if size < 16 or len(body) < 16:
        raise UnknownAudioFormat("a WAV fmt chunk that is too short or truncated", detected="wav")
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the real format is the sub-format GUID
        if size < 40 or len(body) < 40:
            raise UnknownAudioFormat("a truncated WAVE_FORMAT_EXTENSIBLE fmt chunk", detected="wav")
        sub = body[24:40]
        if sub[2:] != _KSDATAFORMAT_TAIL:
            raise UnknownAudioFormat("WAV with an unknown sub-format", detected="wav/extensible")
        tag = struct.unpack_from("<H", sub)[0]
    if tag != 1:
        name = _WAVE_FORMAT_NAMES.get(tag, f"format 0x{tag:04x}")
        raise UnknownAudioFormat(
            f"WAV holding {name} audio is not supported; only PCM WAV is",
            detected=f"wav/{name.lower().replace(' ', '-')}",
        )
    if not 1 <= channels <= 8:
        raise UnknownAudioFormat(f"WAV with {channels} channels", detected="wav")
    if bits not in (8, 16, 24, 32):
        raise UnknownAudioFormat(f"PCM WAV with {bits} bits per sample", detected="wav")
    if not 1000 <= rate <= 384000:
        raise UnknownAudioFormat(f"PCM WAV at {rate} Hz", detected="wav")
    if align != channels * bits // 8 or byte_rate != rate * align:
        raise UnknownAudioFormat("a PCM WAV whose fmt fields contradict each other", detected="wav")
    return rate, channels, bits, align


def _sniff_wav(data: bytes) -> AudioFormatInfo:
    wav = _parse_wav(data)
    return AudioFormatInfo("wav", wav.sample_rate, wav.channels, wav.bits)


def wav_duration(data: bytes | bytearray | memoryview) -> float:
    """Seconds of audio in a PCM WAV upload: its data chunk's size (or the bytes present, if fewer).

    A data size of 0 or 0xFFFFFFFF (written by streaming recorders) means "to the end of the file".

    Raises:
        UnknownAudioFormat: not a PCM WAV, or no data chunk.
    """
    buf = bytes(data)
    if buf[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        raise UnknownAudioFormat("not a WAV file")
    wav = _parse_wav(buf)
    if wav.data_offset is None or wav.data_size is None:
        raise UnknownAudioFormat("a WAV file without a data chunk", detected="wav")
    present = len(buf) - wav.data_offset
    size = present if wav.data_size in (0, 0xFFFFFFFF) else min(wav.data_size, present)
    return (size // wav.block_align) / wav.sample_rate


# --- Ogg ------------------------------------------------------------------------------------------

_OGG_HEADER = struct.Struct(
    "<4sBBqIIIB"
)  # capture, version, flags, granule, serial, seq, crc, segments


def _first_ogg_packet(data: bytes) -> bytes:
    if len(data) < _OGG_HEADER.size:
        raise UnknownAudioFormat("a truncated Ogg page", detected="ogg")
    _, version, flags, _, _, _, _, nsegs = _OGG_HEADER.unpack_from(data)
    if version != 0 or not flags & 0x02:
        raise UnknownAudioFormat(
            "an Ogg stream that does not start with a first page", detected="ogg"
        )
    table = data[_OGG_HEADER.size : _OGG_HEADER.size + nsegs]
    if len(table) < nsegs:
        raise UnknownAudioFormat("a truncated Ogg page", detected="ogg")
    length = 0
    for lacing in table:
        length += lacing
        if lacing < 255:
            break
    start = _OGG_HEADER.size + nsegs
    return data[start : start + length]


def _sniff_ogg(data: bytes) -> AudioFormatInfo:
    packet = _first_ogg_packet(data)
    if packet[:8] == b"OpusHead":
        if len(packet) < 19:
            raise UnknownAudioFormat("a truncated OpusHead", detected="ogg/opus")
        version, channels, _pre_skip, input_rate = struct.unpack_from("<BBHI", packet, 8)
        if version >> 4 != 0 or channels == 0:
            raise UnknownAudioFormat("an invalid OpusHead", detected="ogg/opus")
        return AudioFormatInfo("opus", input_rate or 48000, channels)
    if packet[:8] == b"Speex   ":
        if len(packet) < 52:
            raise UnknownAudioFormat("a truncated Speex header", detected="ogg/speex")
        (rate,) = struct.unpack_from("<I", packet, 36)
        (channels,) = struct.unpack_from("<I", packet, 48)
        if not 1 <= channels <= 2 or not 1000 <= rate <= 48000:
            raise UnknownAudioFormat("an invalid Speex header", detected="ogg/speex")
        return AudioFormatInfo("speex", rate, channels)
    names = {b"\x01vorbis": "Vorbis", b"\x7fFLAC": "FLAC", b"\x80theora": "Theora"}
    for magic, name in names.items():
        if packet.startswith(magic):
            raise UnknownAudioFormat(
                f"Ogg/{name} is not supported; send Ogg/Opus, Ogg/Speex, MP3 or PCM WAV",
                detected=f"ogg/{name.lower()}",
            )
    raise UnknownAudioFormat("an Ogg stream with an unknown codec", detected="ogg")


def ogg_duration(data: bytes | bytearray | memoryview) -> float:
    """Seconds of audio in a complete Ogg/Opus or Ogg/Speex upload, from the last page's granule position.

    Raises:
        UnknownAudioFormat: not Ogg/Opus or Ogg/Speex.
    """
    buf = bytes(data)
    if buf[:4] != b"OggS":
        raise UnknownAudioFormat("not an Ogg stream")
    info = _sniff_ogg(buf)
    packet = _first_ogg_packet(buf)
    serial = _OGG_HEADER.unpack_from(buf)[4]
    granule = 0
    pos = 0
    while pos + _OGG_HEADER.size <= len(buf):
        if buf[pos : pos + 4] != b"OggS":
            pos = buf.find(b"OggS", pos + 1)  # junk between pages: resynchronise
            if pos < 0:
                break
            continue
        _, _, _, page_granule, page_serial, _, _, nsegs = _OGG_HEADER.unpack_from(buf, pos)
        table = buf[pos + _OGG_HEADER.size : pos + _OGG_HEADER.size + nsegs]
        end = pos + _OGG_HEADER.size + nsegs + sum(table)
        if len(table) < nsegs or end > len(buf):
            break  # a truncated last page: its granule position is not reached
        if page_serial == serial and page_granule > granule:
            granule = page_granule
        pos = end
    rate = 48000 if info.format == "opus" else info.sample_rate or 48000
    skip = struct.unpack_from("<H", packet, 10)[0] if info.format == "opus" else 0
    return max(granule - skip, 0) / rate


def audio_duration(data: bytes | bytearray | memoryview, info: AudioFormatInfo) -> float:
    """Seconds of audio in a complete upload of the (sniffed) format ``info``.

    Raises:
        UnknownAudioFormat: the bytes do not parse as ``info.format``.
    """
    if info.format == "mp3":
        return mp3_duration(data)
    if info.format == "wav":
        return wav_duration(data)
    if info.format in ("opus", "speex"):
        return ogg_duration(data)
    if not info.sample_rate or not info.channels:
        raise UnknownAudioFormat("raw PCM needs a sample rate and a channel count")
    return (len(data) // (2 * info.channels)) / info.sample_rate
