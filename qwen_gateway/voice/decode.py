"""Transcoding an upload for a recogniser that does not take it as it is.

Clients upload MP3, WAV, Ogg Opus/Speex or raw PCM at whatever rate their device records; some recognisers take
only some of that (``qwen3-asr-flash-realtime``: PCM or Opus at 16 or 8 kHz; ``paraformer-realtime-8k-v2``:
8 kHz). :func:`plan` asks the recogniser (:meth:`Recognizer.accepts`) and picks the PCM rate to decode to, and
:class:`PcmDecoder` turns the upload into 16-bit little-endian mono PCM at that rate with PyAV (FFmpeg's decoders
and resampler):

* streaming, chunk by chunk as the upload arrives, where the codec allows it: MP3 through FFmpeg's MP3 parser,
  WAV and raw PCM as sample data once the WAV header is past;
* after the upload is complete for the Ogg containers (Opus, Speex), which are demuxed as a whole.

Decoding is CPU work on the caller's thread for the small streamed chunks; the whole-file case runs in a worker
thread. A decoder error raises :class:`UndecodableAudio` (``unsupported_audio_format``).
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Callable, Iterable

import av
import av.error
from av.audio.codeccontext import AudioCodecContext

from ..audio_formats import AudioFormatInfo, UnknownAudioFormat

__all__ = ["PCM_RATES", "PcmDecoder", "UndecodableAudio", "plan"]

#: Rates tried, in order of preference after the upload's own, when the recogniser wants something else.
PCM_RATES = (16000, 8000, 24000, 48000, 22050, 44100, 32000, 11025)

#: FFmpeg's raw PCM decoder for each WAV/PCM sample width (bits).
_PCM_CODECS = {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}


#: FFmpeg's default channel layout for each channel count a PCM WAV may have (1 to 8).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class UndecodableAudio(UnknownAudioFormat):
    """The upload looked like audio but could not be decoded."""


def _audio_decoder(name: str) -> AudioCodecContext:
    ctx = av.CodecContext.create(name, "r")
    assert isinstance(ctx, AudioCodecContext)
    return ctx


def plan(info: AudioFormatInfo, accepts: Callable[[str, int], bool]) -> int | None:
    """None when the recogniser takes the upload as it is; else the PCM rate to decode it to.

    Mono 16-bit audio is sent as it is when accepted; stereo raw PCM never is (the recognisers want mono).
    The rate is the upload's own when the recogniser takes PCM at it, else the first of :data:`PCM_RATES` it
    takes (16 kHz if none: the recogniser then says what it refuses).
    """
    rate = info.sample_rate or 16000
    stereo_pcm = info.format == "pcm" and (info.channels or 1) > 1
    if not stereo_pcm and accepts(info.format, rate):
        return None
    for candidate in (rate, *PCM_RATES):
        if accepts("pcm", candidate):
            return candidate
    return 16000


class PcmDecoder:
    """An upload (described by ``info``) in, mono PCM16 at ``rate`` out.

    :meth:`feed` takes the upload's bytes in order and returns the PCM they made decodable (possibly ``b""``);
    :meth:`finish` returns the rest. ``streaming`` is False for containers: :meth:`feed` then only keeps the
    bytes and :meth:`finish` decodes them all (await :meth:`finish_async` to do it off the event loop).
    """

    def __init__(self, info: AudioFormatInfo, rate: int) -> None:
        self.info = info
        self.rate = rate
        self.streaming = info.format in ("mp3", "wav", "pcm")
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._buffer = bytearray()
        self._codec: AudioCodecContext | None = None
        self._parse = info.format == "mp3"
        self._align = 1
        self._header_done = info.format != "wav"
        if info.format == "mp3":
            # the float decoder: faster than the fixed-point one here, and the resampler takes either
            self._codec = _audio_decoder("mp3float")
        elif info.format == "pcm":
            self._open_pcm(16, info.sample_rate or 16000, info.channels or 1)
        self.decoded_bytes = 0

    def _open_pcm(self, bits: int, rate: int, channels: int) -> None:
        codec = _PCM_CODECS.get(bits)
        if codec is None:
            raise UndecodableAudio(f"PCM with {bits} bits per sample cannot be decoded")
        ctx = _audio_decoder(codec)
        ctx.sample_rate = rate
        ctx.layout = _LAYOUTS.get(channels, "mono")
        self._codec = ctx
        self._align = channels * bits // 8

    # ------------------------------------------------------------------ streaming
    def feed(self, data: bytes) -> bytes:
        """The PCM that ``data`` (the upload's next bytes) completes."""
        if not self.streaming:
            self._buffer += data
            return b""
        self._buffer += data
        if not self._header_done and not self._wav_header():
            return b""
        try:
            return self._drain(final=False)
        except av.error.FFmpegError as exc:
            raise UndecodableAudio(f"the audio could not be decoded ({exc})") from None

    def finish(self) -> bytes:
        """The rest of the PCM, once the upload is complete."""
        try:
            if not self.streaming:
                return self._decode_container(bytes(self._buffer))
            if not self._header_done:
                raise UndecodableAudio("a WAV upload that ends before its data chunk")
            return self._drain(final=True)
        except av.error.FFmpegError as exc:
            raise UndecodableAudio(f"the audio could not be decoded ({exc})") from None

    async def finish_async(self) -> bytes:
        """:meth:`finish`, in a worker thread when it decodes a whole container."""
        if self.streaming:
            return self.finish()
        return await asyncio.to_thread(self.finish)

    def _wav_header(self) -> bool:
        """Skip the RIFF header up to the ``data`` chunk's payload; False while more bytes are needed."""
        data = self._buffer
        pos = 12
        while pos + 8 <= len(data):
            chunk, size = bytes(data[pos : pos + 4]), struct.unpack_from("<I", data, pos + 4)[0]
            if chunk == b"data":
                del data[: pos + 8]
                info = self.info
                self._open_pcm(
                    info.bits_per_sample or 16, info.sample_rate or 16000, info.channels or 1
                )
                self._header_done = True
                return True
            pos += 8 + size + (size & 1)
        return False

    def _drain(self, *, final: bool) -> bytes:
        codec = self._codec
        assert codec is not None
        out = bytearray()
        if self._parse:
            packets = codec.parse(bytes(self._buffer))
            self._buffer.clear()
            for packet in packets:
                self._decode(codec.decode(packet), out)
            if final:
                for packet in codec.parse(b""):
                    self._decode(codec.decode(packet), out)
        else:
            usable = len(self._buffer) - len(self._buffer) % self._align
            if usable:
                packet = av.Packet(bytes(self._buffer[:usable]))
                del self._buffer[:usable]
                self._decode(codec.decode(packet), out)
        if final:
            self._decode(codec.decode(None), out)
            self._resample(None, out)
        self.decoded_bytes += len(out)
        return bytes(out)

    def _decode(self, frames: Iterable[av.AudioFrame], out: bytearray) -> None:
        for frame in frames:
            self._resample(frame, out)

    def _resample(self, frame: av.AudioFrame | None, out: bytearray) -> None:
        for piece in self._resampler.resample(frame):
            out += bytes(piece.planes[0])[: piece.samples * 2]

    def _decode_container(self, data: bytes) -> bytes:
        out = bytearray()
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the upload holds no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                self._resample(frame, out)
        self._resample(None, out)
        self.decoded_bytes += len(out)
        return bytes(out)
