"""Audio for devices on the seed endpoints: the handshake options and the pacing rule, pure.

A device (an ESP32-class voice box) asks at the WebSocket handshake of ``/v1/chat/audio`` or ``/v1/chat/vlm``,
with query parameters, for what suits it; with none of them the seed's behaviour is unchanged (MP3 at the speech
engine's rate, sent as fast as it is made, uploads of a known ``total``):

================  ==========================================  =============================================
parameter         values                                      meaning
================  ==========================================  =============================================
``audio_format``  ``mp3`` | ``opus`` | ``ogg_opus`` | ``pcm``  the answer's audio: MP3 frames, raw Opus packets
                                                              (one per ``audio_stream`` data event), an Ogg
                                                              Opus stream (pages), 16-bit LE mono PCM
``sample_rate``   8000 | 16000 | 24000 | 48000                the audio's rate (default: :data:`DEFAULT_RATES`)
``frame_ms``      20 | 40 | 60 (Opus formats only)            the duration of every Opus packet (default 60)
``pace``          ``realtime`` | a lead in ms (0..5000)       audio leaves at playback speed, at most the lead
                                                              ahead of the client's playback (``realtime``:
                                                              :data:`DEFAULT_LEAD_MS`)
``mode``          ``stream``                                  open-microphone uploads (packets without
                                                              ``total``; the turn ends on ``{"type": "end"}``
                                                              or when the speech ends)
``silence_ms``    200..5000 (with ``mode=stream``)            trailing silence that ends the speech (default
                                                              :data:`DEFAULT_SILENCE_MS`)
================  ==========================================  =============================================

:func:`device_options` reads them (a bad value raises :class:`HandshakeError`, answered 400 before the upgrade).
:class:`PlaybackSchedule` is the pacing rule: when an event may leave, given the audio already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

import msgspec

__all__ = [
    "DEFAULT_FRAME_MS",
    "DEFAULT_LEAD_MS",
    "DEFAULT_RATES",
    "DEFAULT_SILENCE_MS",
    "HANDSHAKE_PARAMETERS",
    "MAX_LEAD_MS",
    "OPUS_FRAME_MS",
    "OUTPUT_RATES",
    "DeviceOptions",
    "HandshakeError",
    "OutputAudio",
    "OutputFormat",
    "PlaybackSchedule",
    "device_options",
]

#: The answer's audio formats a client may ask for.
OutputFormat = Literal["mp3", "opus", "ogg_opus", "pcm"]

#: Rates each format may be asked at.
OUTPUT_RATES: Mapping[str, frozenset[int]] = MappingProxyType(
    {
        "mp3": frozenset({8000, 16000, 24000, 48000}),
        "opus": frozenset({8000, 16000, 24000, 48000}),
        "ogg_opus": frozenset({8000, 16000, 24000, 48000}),
        "pcm": frozenset({8000, 16000, 24000, 48000}),
    }
)

#: The rate of each format when ``sample_rate`` is not given (None: the speech engine's own rate).
DEFAULT_RATES: Mapping[str, int | None] = MappingProxyType(
    {"mp3": None, "opus": 24000, "ogg_opus": 24000, "pcm": 24000}
)

#: Opus packet durations a client may ask for.
OPUS_FRAME_MS = (20, 40, 60)
#: The Opus packet duration when ``frame_ms`` is not given (what most device firmwares expect).
DEFAULT_FRAME_MS = 60
#: How far ahead of playback ``pace=realtime`` sends.
DEFAULT_LEAD_MS = 300
#: The largest lead ``pace=<ms>`` takes.
MAX_LEAD_MS = 5000
#: Trailing silence that ends an open-microphone utterance when ``silence_ms`` is not given.
DEFAULT_SILENCE_MS = 700
_SILENCE_RANGE = (200, 5000)

#: Every handshake parameter this module reads, with its description (for the published contract).
HANDSHAKE_PARAMETERS: Mapping[str, str] = MappingProxyType(
    {
        "audio_format": "The answer's audio: mp3 (default), opus (raw Opus packets, one per audio_stream "
        "data event), ogg_opus (an Ogg Opus stream, pages in order) or pcm (16-bit little-endian mono).",
        "sample_rate": "The answer audio's rate: 8000, 16000, 24000 or 48000 (default 24000; MP3: the "
        "speech engine's own).",
        "frame_ms": "Opus only: the duration of every Opus packet, 20, 40 or 60 (default 60).",
        "pace": "realtime (300 ms lead) or a lead in ms (0..5000): audio events leave at playback speed, at "
        "most the lead ahead of the client's playback; audio_stream finished leaves at the last frame's "
        "playback time minus the lead. Default: unpaced.",
        "mode": "stream: open-microphone uploads; packets may omit total (or send 0), and the utterance "
        'ends on {"type": "end"} or when the speech ends (audio endpoint).',
        "silence_ms": "With mode=stream: the trailing silence that ends the speech, 200..5000 (default 700).",
    }
)


class HandshakeError(ValueError):
    """A handshake parameter has a value the gateway does not take.

    Attributes:
        param: the parameter's name.
        message: what is wrong and what is allowed.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class OutputAudio(msgspec.Struct, frozen=True, kw_only=True):
    """The answer's audio as the client asked for it.

    Attributes:
        format: the encoding.
        sample_rate: the rate sent (None: the speech engine's own, MP3 only).
        frame_ms: the duration of every Opus packet (Opus formats), else None.
    """

    format: OutputFormat
    sample_rate: int | None = None
    frame_ms: int | None = None


class DeviceOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What a client asked for at the handshake (the defaults are the seed's behaviour).

    Attributes:
        output: the answer's audio (None: the seed's MP3, with no format fields in the events; with ``pace``
            alone, MP3 with them).
        pace_lead_ms: paced delivery with this lead (None: as fast as it is made).
        stream: open-microphone uploads (``mode=stream``).
        silence_ms: the trailing silence that ends an open-microphone utterance.
    """

    output: OutputAudio | None = None
    pace_lead_ms: int | None = None
    stream: bool = False
    silence_ms: int = DEFAULT_SILENCE_MS


def _int(args: Mapping[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise HandshakeError(name, f"{name}={raw!r}: expected a whole number")
    return int(raw)


def _output(args: Mapping[str, str]) -> OutputAudio | None:
    name = args.get("audio_format")
    rate = _int(args, "sample_rate")
    frame_ms = _int(args, "frame_ms")
    if name is None or name == "":
        if rate is not None or frame_ms is not None:
            raise HandshakeError(
                "audio_format",
                "sample_rate and frame_ms need audio_format (mp3, opus, ogg_opus, pcm)",
            )
        return None
    formats: tuple[str, ...] = get_args(OutputFormat)
    if name not in formats:
        raise HandshakeError(
            "audio_format", f"audio_format={name!r}: expected one of {', '.join(formats)}"
        )
    if rate is not None and rate not in OUTPUT_RATES[name]:
        allowed = ", ".join(map(str, sorted(OUTPUT_RATES[name])))
        raise HandshakeError("sample_rate", f"{name} at {rate} Hz: expected one of {allowed}")
    opus = name in ("opus", "ogg_opus")
    if frame_ms is not None and not opus:
        raise HandshakeError("frame_ms", f"frame_ms is for the Opus formats, not {name}")
    if frame_ms is not None and frame_ms not in OPUS_FRAME_MS:
        raise HandshakeError(
            "frame_ms", f"frame_ms={frame_ms}: expected one of {', '.join(map(str, OPUS_FRAME_MS))}"
        )
    return OutputAudio(
        format=name,  # type: ignore[arg-type]  # checked against OutputFormat above
        sample_rate=rate if rate is not None else DEFAULT_RATES[name],
        frame_ms=(frame_ms or DEFAULT_FRAME_MS) if opus else None,
    )


def _pace(args: Mapping[str, str]) -> int | None:
    raw = args.get("pace")
    if raw is None or raw == "" or raw == "off":
        return None
    if raw == "realtime":
        return DEFAULT_LEAD_MS
    lead = _int(args, "pace")
    if lead is None or lead > MAX_LEAD_MS:
        raise HandshakeError(
            "pace", f"pace={raw!r}: expected realtime or a lead of 0..{MAX_LEAD_MS} ms"
        )
    return lead


def device_options(args: Mapping[str, str]) -> DeviceOptions:
    """The device options of a handshake's query parameters (see the module docstring).

    Raises:
        HandshakeError: a parameter has a value the gateway does not take.
    """
    mode = args.get("mode") or "packets"
    if mode not in ("packets", "stream"):
        raise HandshakeError("mode", f"mode={mode!r}: expected stream (or packets, the default)")
    silence = _int(args, "silence_ms")
    if silence is not None and not _SILENCE_RANGE[0] <= silence <= _SILENCE_RANGE[1]:
        low, high = _SILENCE_RANGE
        raise HandshakeError("silence_ms", f"silence_ms={silence}: expected {low}..{high}")
    output, lead = _output(args), _pace(args)
    if lead is not None and output is None:
        output = OutputAudio(
            format="mp3"
        )  # pacing needs each event's duration: the format fields say it
    return DeviceOptions(
        output=output,
        pace_lead_ms=lead,
        stream=mode == "stream",
        silence_ms=silence if silence is not None else DEFAULT_SILENCE_MS,
    )


class PlaybackSchedule:
    """The pacing rule of one answer's audio: when each event may leave.

    The client's playback clock starts when the first audio event leaves; from then on the audio sent may be at
    most ``lead_ms`` ahead of what the client has played. So an audio event of ``d`` ms may leave once
    ``sent_ms - lead_ms <= elapsed``: the first ones (up to the lead) at once, then one per ``d`` ms. The end
    of the audio (``audio_stream`` ``finished``) may leave at the last frame's playback time minus the lead.
    Times are in seconds on the caller's clock.
    """

    def __init__(self, lead_ms: int) -> None:
        if lead_ms < 0:
            raise ValueError(f"lead_ms={lead_ms}: expected >= 0")
        self.lead_ms = lead_ms
        #: when the playback started (the first audio event left), or None
        self.started_at: float | None = None
        #: milliseconds of audio sent so far
        self.sent_ms = 0.0

    def audio_due(self, now: float) -> float:
        """When the next audio event may leave (``now`` or earlier: at once)."""
        if self.started_at is None:
            return now
        return self.started_at + max(self.sent_ms - self.lead_ms, 0.0) / 1000

    def sent(self, duration_ms: float, now: float) -> None:
        """An audio event of ``duration_ms`` left at ``now``."""
        if self.started_at is None:
            self.started_at = now
        self.sent_ms += duration_ms

    def end_due(self, now: float) -> float:
        """When the end of the audio may be announced: the last frame's playback time minus the lead (the
        same instant at which a next frame could have left)."""
        return self.audio_due(now)
