"""Upload format sniffing and durations, on real files made here (wave, lameenc, PyAV/libmp3lame/libopus)."""

from __future__ import annotations

import array
import contextlib
import io
import math
import struct
import wave

import av
import lameenc  # type: ignore[import-not-found]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_gateway.voice.formats import (
    SNIFF_BYTES,
    AudioFormatInfo,
    UnknownAudioFormat,
    audio_duration,
    mp3_duration,
    ogg_duration,
    parse_declared,
    sniff,
    wav_duration,
)

# --------------------------------------------------------------------------------------------------
# makers
# --------------------------------------------------------------------------------------------------


def pcm16(n: int, channels: int = 1) -> bytes:
    return array.array(
        "h", [int(8000 * math.sin(i / 9)) for i in range(n) for _ in range(channels)]
    ).tobytes()


def make_wav(rate: int, channels: int = 1, bits: int = 16, n: int = 1000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(bits // 8)
        w.setframerate(rate)
        w.writeframes(b"\x01" * (n * channels * bits // 8))
    return buf.getvalue()


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE"
    for cid, data in chunks:
        body += cid + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_chunk(tag: int, channels: int, rate: int, bits: int, extra: bytes = b"") -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits) + extra


def extensible(sub_tag: int, channels: int, rate: int, bits: int) -> bytes:
    guid = struct.pack("<H", sub_tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return fmt_chunk(0xFFFE, channels, rate, bits, struct.pack("<HHI", 22, bits, 4) + guid)


def make_mp3(rate: int, n: int, channels: int = 1, kbps: int = 64) -> bytes:
    enc = lameenc.Encoder()
    enc.set_channels(channels)
    enc.set_in_sample_rate(rate)
    enc.set_out_sample_rate(rate)
    enc.set_bit_rate(kbps)
    return bytes(enc.encode(pcm16(n, channels))) + bytes(enc.flush())


def id3v2(payload_size: int = 40, *, major: int = 3, footer: bool = False) -> bytes:
    """An ID3v2 tag with a TIT2 frame and zero padding, ``payload_size`` bytes of body at least."""
    title = b"\x00Recorded by a test"
    frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    body = frame + b"\x00" * max(0, payload_size - len(frame))
    size = len(body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    flags = 0x10 if footer else 0
    tag = b"ID3" + bytes([major, 0, flags]) + syncsafe + body
    if footer:
        tag += b"3DI" + bytes([major, 0, flags]) + syncsafe
    return tag


def av_encode(codec: str, container: str, rate: int, n: int, channels: int = 1) -> bytes:
    """Encode ``n`` samples with PyAV (ffmpeg) into ``container`` in memory."""
    layout = "mono" if channels == 1 else "stereo"
    data = pcm16(n, channels)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        pts = 0
        for i in range(0, n, 960):
            m = min(960, n - i)
            frame = av.AudioFrame(format="s16", layout=layout, samples=m)
            frame.planes[0].update(data[i * 2 * channels : (i + m) * 2 * channels])
            frame.sample_rate = rate
            frame.pts = pts
            pts += m
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def av_duration(data: bytes, container: str) -> float:
    """The duration ffmpeg decodes (after any gapless trimming it applies)."""
    samples = 0
    rate = 0
    with av.open(io.BytesIO(data), mode="r", format=container) as inp:
        for frame in inp.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


def ogg_page(packet: bytes, *, bos: bool = True, granule: int = 0, seq: int = 0) -> bytes:
    """One Ogg page holding ``packet`` (CRC not computed: the sniffer does not check it)."""
    lacing = b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    flags = 2 if bos else 0
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 1234, seq, 0, len(lacing))
    return header + lacing + packet


def speex_header(rate: int, channels: int) -> bytes:
    head = b"Speex   " + b"1.2.0".ljust(20, b"\x00")
    # version id, header size, rate, mode, mode bitstream version, channels, bitrate, frame size, vbr,
    # frames per packet, extra headers, reserved x2
    head += struct.pack("<13i", 1, 80, rate, 1, 4, channels, -1, 320, 0, 1, 0, 0, 0)
    return head


# --------------------------------------------------------------------------------------------------
# WAV
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "bits"),
    [(16000, 1, 16), (8000, 1, 8), (44100, 2, 16), (48000, 1, 24), (24000, 2, 32)],
)
def test_wav(rate: int, channels: int, bits: int) -> None:
    data = make_wav(rate, channels, bits, n=rate // 2 + 7)
    assert sniff(data[:SNIFF_BYTES]) == AudioFormatInfo("wav", rate, channels, bits)
    assert wav_duration(data) == pytest.approx((rate // 2 + 7) / rate)
    assert audio_duration(data, sniff(data)) == wav_duration(data)


def test_wav_with_chunks_before_fmt_and_extensible_pcm() -> None:
    data = riff(
        (b"JUNK", b"\x00" * 27),
        (b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"test\x00"),
        (b"fmt ", extensible(1, 1, 16000, 16)),
        (b"data", b"\x00\x01" * 16000),
    )
    assert sniff(data) == AudioFormatInfo("wav", 16000, 1, 16)
    assert wav_duration(data) == pytest.approx(1.0)


def test_wav_duration_with_unknown_or_truncated_data_size() -> None:
    streaming = riff((b"fmt ", fmt_chunk(1, 1, 8000, 16)), (b"data", b""))
    streaming += b"\x00\x00" * 4000  # a recorder that never went back to write the size
    assert wav_duration(streaming) == pytest.approx(0.5)
    whole = make_wav(16000, n=16000)
    assert wav_duration(whole[: len(whole) // 2]) < 0.51  # truncated upload: what is there
    assert wav_duration(whole[: len(whole) // 2]) > 0.49


@pytest.mark.parametrize(
    ("fmt", "detected"),
    [
        (fmt_chunk(3, 1, 16000, 32), "wav/ieee-float"),
        (fmt_chunk(7, 1, 8000, 8), "wav/mu-law"),
        (fmt_chunk(0x11, 1, 8000, 4), "wav/ima-adpcm"),
        (extensible(3, 2, 48000, 32), "wav/ieee-float"),
    ],
)
def test_non_pcm_wav_is_rejected_by_name(fmt: bytes, detected: str) -> None:
    data = riff((b"fmt ", fmt), (b"data", b"\x00" * 64))
    with pytest.raises(UnknownAudioFormat) as info:
        sniff(data)
    assert info.value.code == "unsupported_audio_format"
    assert info.value.detected == detected
    assert "only PCM WAV" in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b"RIFF\x10\x00\x00\x00AVI LIST",
        b"RIFF\x24\x00\x00\x00WAVE",
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00",
        riff((b"data", b"\x00" * 10), (b"fmt ", fmt_chunk(1, 1, 8000, 16))),
        riff((b"fmt ", fmt_chunk(1, 1, 8000, 12))),
        riff((b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 9999, 2, 16))),
        b"RIFX\x00\x00\x00\x24WAVE",
        b"RF64\xff\xff\xff\xffWAVEds64",
    ],
)
def test_bad_wav(data: bytes) -> None:
    with pytest.raises(UnknownAudioFormat):
        sniff(data)


def test_wav_without_data_chunk_has_no_duration() -> None:
    with pytest.raises(UnknownAudioFormat):
        wav_duration(riff((b"fmt ", fmt_chunk(1, 1, 8000, 16))))
    with pytest.raises(UnknownAudioFormat):
        wav_duration(b"not a wav")


# --------------------------------------------------------------------------------------------------
# MP3
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000])
def test_bare_mp3(rate: int) -> None:
    data = make_mp3(rate, rate + 3)
    assert sniff(data[:SNIFF_BYTES]) == AudioFormatInfo("mp3", rate, 1)
    # Without a Xing header the duration is every frame's, exactly what a decoder plays.
    assert mp3_duration(data) == pytest.approx(av_duration(data, "mp3"))


def test_stereo_mp3() -> None:
    data = make_mp3(44100, 44100, channels=2, kbps=128)
    assert sniff(data) == AudioFormatInfo("mp3", 44100, 2)


@pytest.mark.parametrize(
    "tag", [id3v2(), id3v2(500, major=4, footer=True), id3v2(10, major=2), id3v2() + id3v2()]
)
def test_mp3_behind_id3(tag: bytes) -> None:
    data = tag + make_mp3(16000, 16000)
    assert sniff(data[:SNIFF_BYTES]) == AudioFormatInfo("mp3", 16000, 1)
    assert mp3_duration(data) == pytest.approx(av_duration(data, "mp3"))


def test_id3_larger_than_the_head_is_still_mp3() -> None:
    data = id3v2(SNIFF_BYTES * 2) + make_mp3(24000, 24000)
    assert sniff(data[:SNIFF_BYTES]) == AudioFormatInfo("mp3", None, None)
    assert sniff(data[: SNIFF_BYTES * 3]) == AudioFormatInfo(
        "mp3", None, None
    )  # sniff reads SNIFF_BYTES
    assert mp3_duration(data) == pytest.approx(av_duration(data, "mp3"))


def test_id3_followed_by_something_else() -> None:
    with pytest.raises(UnknownAudioFormat) as info:
        sniff(id3v2() + b"fLaC" + b"\x00" * 100)
    assert info.value.detected == "flac"
    with pytest.raises(UnknownAudioFormat):
        sniff(id3v2() + b"hello world" * 20)


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_mp3_with_xing_lame_header_gives_the_gapless_duration(rate: int) -> None:
    n = rate * 2 + 100
    data = av_encode("libmp3lame", "mp3", rate, n)  # ffmpeg writes ID3 + an Info/LAME frame
    assert sniff(data) == AudioFormatInfo("mp3", rate, 1)
    assert mp3_duration(data) == pytest.approx(n / rate)
    assert mp3_duration(data) == pytest.approx(av_duration(data, "mp3"))


def test_mp3_duration_resynchronises_over_junk_and_stops_at_id3v1() -> None:
    a = make_mp3(24000, 24000)
    b = make_mp3(24000, 12000)
    junk = b"\xff\x00garbage\xff\xfb" * 3
    id3v1 = b"TAG" + b"\x00" * 125
    assert mp3_duration(a + junk + b + id3v1) == pytest.approx(
        av_duration(a, "mp3") + av_duration(b, "mp3")
    )


def test_mp3_duration_ignores_a_truncated_last_frame() -> None:
    data = make_mp3(24000, 24000)
    whole = mp3_duration(data)
    assert mp3_duration(data[:-10]) == pytest.approx(whole - 576 / 24000)


def test_mp3_duration_of_non_mp3() -> None:
    for data in (b"", b"\x00" * 100, make_wav(8000)):
        with pytest.raises(UnknownAudioFormat):
            mp3_duration(data)


def test_false_frame_sync_is_rejected() -> None:
    # A plausible first header, then no second frame where it must be.
    header = bytes([0xFF, 0xF3, 0x84, 0xC4])  # MPEG-2 L3 64 kbps 24 kHz mono: 192-byte frames
    with pytest.raises(UnknownAudioFormat):
        sniff(header + b"\x00" * 400)
    # A lone frame that is the whole upload is accepted.
    assert sniff(header + b"\x00" * 188).format == "mp3"


@pytest.mark.parametrize(
    "header",
    [
        b"\xff\xfd\x84\xc4",  # layer I
        b"\xff\xf5\x84\xc4",  # layer II
        b"\xff\xeb\x84\xc4",  # reserved MPEG version
        b"\xff\xfb\xf4\xc4",  # bad bitrate index
        b"\xff\xfb\x0c\xc4",  # free format bitrate
        b"\xff\xfb\x8c\xc4",  # reserved sample rate
        b"\xff\xfb\x84\xc6",  # reserved emphasis
    ],
)
def test_not_layer3_or_reserved_fields(header: bytes) -> None:
    with pytest.raises(UnknownAudioFormat):
        sniff(header * 500)


# --------------------------------------------------------------------------------------------------
# Ogg
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (48000, 1), (24000, 2)])
def test_ogg_opus(rate: int, channels: int) -> None:
    n = rate * 2 + 100
    data = av_encode("libopus", "ogg", rate, n, channels)
    assert sniff(data[:SNIFF_BYTES]) == AudioFormatInfo("opus", rate, channels)
    assert ogg_duration(data) == pytest.approx(n / rate)
    assert ogg_duration(data) == pytest.approx(av_duration(data, "ogg"))
    assert audio_duration(data, sniff(data)) == ogg_duration(data)


def test_ogg_duration_of_a_truncated_upload_counts_complete_pages() -> None:
    data = av_encode("libopus", "ogg", 16000, 16000 * 5)
    half = ogg_duration(data[: len(data) // 2])
    assert 1.0 < half < 3.5


def test_ogg_speex() -> None:
    data = ogg_page(speex_header(16000, 1))
    assert sniff(data) == AudioFormatInfo("speex", 16000, 1)
    comment = ogg_page(b"speex comment", bos=False, seq=1)
    audio = [ogg_page(b"\x00" * 300, bos=False, granule=8000 * k, seq=1 + k) for k in (1, 2, 3)]
    whole = data + comment + b"".join(audio)
    assert ogg_duration(whole) == pytest.approx(1.5)
    assert ogg_duration(whole[:-1]) == pytest.approx(1.0)  # the cut last page does not count


def test_opus_head_with_zero_input_rate_reports_48k() -> None:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 0, 0, 0)
    assert sniff(ogg_page(head)) == AudioFormatInfo("opus", 48000, 1)


@pytest.mark.parametrize(
    ("packet", "detected"),
    [
        (b"\x01vorbis" + b"\x00" * 30, "ogg/vorbis"),
        (b"\x7fFLAC" + b"\x00" * 30, "ogg/flac"),
        (b"OpusHead" + struct.pack("<BBHIhB", 1, 0, 0, 0, 0, 0), "ogg/opus"),  # zero channels
        (b"OpusHead\x01", "ogg/opus"),
        (b"something else", "ogg"),
    ],
)
def test_other_ogg(packet: bytes, detected: str) -> None:
    with pytest.raises(UnknownAudioFormat) as info:
        sniff(ogg_page(packet))
    assert info.value.detected == detected


def test_ogg_not_starting_with_a_first_page() -> None:
    with pytest.raises(UnknownAudioFormat):
        sniff(ogg_page(b"OpusHead" + b"\x01\x01" + b"\x00" * 9, bos=False))


# --------------------------------------------------------------------------------------------------
# declared raw PCM
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("pcm;rate=16000", AudioFormatInfo("pcm", 16000, 1, 16)),
        ("PCM; rate=8000; channels=2", AudioFormatInfo("pcm", 8000, 2, 16)),
        ("pcm_s16le;sample_rate=24000", AudioFormatInfo("pcm", 24000, 1, 16)),
        ("s16le;sr=48000;ch=1", AudioFormatInfo("pcm", 48000, 1, 16)),
    ],
)
def test_declared_pcm(declared: str, expected: AudioFormatInfo) -> None:
    assert sniff(pcm16(1000), declared) == expected
    assert parse_declared(declared) == expected
    assert audio_duration(pcm16(expected.sample_rate or 0, expected.channels or 1), expected) == 1.0


@pytest.mark.parametrize(
    "declared",
    ["pcm", "pcm;rate=abc", "pcm;rate=96000", "pcm;rate=16000;channels=3", "pcm;16000", "flac"],
)
def test_bad_declarations(declared: str) -> None:
    with pytest.raises(UnknownAudioFormat):
        sniff(pcm16(100), declared)


def test_raw_pcm_is_not_guessed() -> None:
    with pytest.raises(UnknownAudioFormat) as info:
        sniff(pcm16(2000))
    assert "pcm;rate=16000" in str(info.value)


def test_declared_pcm_that_is_a_container_is_reported_as_the_container() -> None:
    assert sniff(make_wav(16000), "pcm;rate=8000") == AudioFormatInfo("wav", 16000, 1, 16)
    data = id3v2() + make_mp3(24000, 24000)
    assert sniff(data, "pcm;rate=8000") == AudioFormatInfo("mp3", 24000, 1)


@pytest.mark.parametrize(
    "declared", [None, "", "mp3", "audio/mpeg", "wav", "ogg", "opus", "audio/ogg"]
)
def test_container_declarations_defer_to_the_bytes(declared: str | None) -> None:
    assert sniff(make_wav(16000), declared).format == "wav"
    assert sniff(make_mp3(16000, 16000), declared).format == "mp3"


# --------------------------------------------------------------------------------------------------
# unknown and hostile input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + b"\x00" * 50, "webm"),
        (b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 50, "mp4"),
        (b"fLaC\x00\x00\x00\x22" + b"\x00" * 50, "flac"),
        (b"#!AMR\n" + b"\x00" * 50, "amr"),
        (b"#!AMR-WB\n" + b"\x00" * 50, "amr-wb"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 50, "aac"),
        (b"", None),
        (b"hello", None),
        (b"<html><body>not audio</body></html>", None),
    ],
)
def test_unknown_formats(data: bytes, detected: str | None) -> None:
    with pytest.raises(UnknownAudioFormat) as info:
        sniff(data)
    assert info.value.code == "unsupported_audio_format"
    assert info.value.detected == detected
    assert str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([None, "mp3", "pcm;rate=16000"]))
def test_any_bytes_give_a_format_or_the_typed_error(data: bytes, declared: str | None) -> None:
    try:
        info = sniff(data, declared)
    except UnknownAudioFormat:
        return
    assert info.format in ("mp3", "wav", "opus", "speex", "pcm")


prefixes = st.sampled_from(
    [
        b"",
        b"RIFF",
        b"RIFF\x00\x01\x00\x00WAVEfmt ",
        b"OggS\x00\x02",
        b"ID3\x03\x00\x00",
        b"\xff\xfb",
        b"\xff\xf3\x84\xc4",
        riff((b"fmt ", fmt_chunk(1, 1, 8000, 16)))[:30],
    ]
)


@settings(max_examples=300, deadline=None)
@given(prefixes, st.binary(max_size=2000))
def test_garbage_behind_real_magic_never_crashes(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    for fn in (sniff, mp3_duration, wav_duration, ogg_duration):
        with contextlib.suppress(UnknownAudioFormat):
            fn(data)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=6000))
def test_truncated_real_files_never_crash(cut: int) -> None:
    for data in (
        make_wav(16000, n=2000),
        id3v2() + make_mp3(24000, 4000),
        OPUS_FILE,
    ):
        for fn in (sniff, mp3_duration, wav_duration, ogg_duration):
            with contextlib.suppress(UnknownAudioFormat):
                fn(data[:cut])


OPUS_FILE = av_encode("libopus", "ogg", 16000, 8000)
