"""The DashScope speech models the gateway knows, and the protocol each one speaks.

One table per direction, looked up by exact name, then by the name without a dated snapshot suffix
(``qwen3-tts-flash-realtime-2025-09-18`` is ``qwen3-tts-flash-realtime``), then by the longest matching family
prefix in :data:`ASR_FAMILIES` / :data:`TTS_FAMILIES`. Never by substring: ``qwen-audio-3.1-asr-flash-streaming``
has no "realtime" in its name and still streams over the task WebSocket, ``qwen3-asr-flash-realtime`` has one and
speaks the realtime protocol instead.

A model the table does not know yet can still be used by naming its protocol (``QG_ASR_PROTOCOL`` /
``QG_TTS_PROTOCOL``); it is then taken to accept any sample rate and the protocol's formats. Facts come from
``shared/dashscope-protocols.md`` §10 (checked against the official ``dashscope`` 2.0.2 SDK) unless a row says
otherwise. This module is pure: a table and its look-ups, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

__all__ = [
    "ASR_FAMILIES",
    "ASR_MODELS",
    "OMNI_FAMILIES",
    "OMNI_MODELS",
    "TTS_FAMILIES",
    "TTS_MODELS",
    "AsrModel",
    "AsrProtocol",
    "CatalogueError",
    "OmniModel",
    "TtsModel",
    "TtsProtocol",
    "asr_model",
    "omni_model",
    "tts_model",
]


class CatalogueError(ValueError):
    """A model, protocol, sample rate or format the catalogue refuses; the message names the variable."""


class AsrProtocol(StrEnum):
    """How a recognition model is reached."""

    #: ``run-task`` (task ``asr``) on ``/api-ws/v1/inference``; binary audio frames.
    TASK = "task"
    #: ``/api-ws/v1/realtime?model=``: ``session.update``, ``input_audio_buffer.append`` (base64), commit or VAD.
    REALTIME = "realtime"
    #: async HTTP task on ``/services/audio/asr/transcription`` with ``input.file_urls`` (a list).
    FILE_URLS = "file-urls"
    #: the same async task with ``input.file_url`` (one string), answered with ``output.result`` (one
    #: ``transcription_url``): the Qwen-ASR file-transcription models (qwen3-asr-flash-filetrans).
    FILE_URL = "file-url"

    @property
    def streaming(self) -> bool:
        """True when audio is streamed to the model while it arrives (else the stored file is sent by URL)."""
        return self in (AsrProtocol.TASK, AsrProtocol.REALTIME)


class TtsProtocol(StrEnum):
    """How a synthesis model is reached."""

    #: ``/api-ws/v1/realtime?model=``: ``session.update``, ``input_text_buffer.*``, ``response.audio.delta``.
    REALTIME = "realtime"
    #: ``run-task`` (task ``tts``) on ``/api-ws/v1/inference``; binary audio frames (CosyVoice, qwen-audio TTS).
    TASK = "task"
    #: HTTP POST to ``/services/aigc/multimodal-generation/generation``, streamed as SSE (``X-DashScope-SSE``).
    HTTP = "http"


#: Containers/codecs each recognition protocol takes (what the gateway may send it without transcoding).
ASR_FORMATS: Mapping[AsrProtocol, tuple[str, ...]] = {
    AsrProtocol.TASK: ("pcm", "wav", "mp3", "opus", "speex", "aac", "amr"),
    # DashScope also names "opus", without saying whether Ogg pages or raw frames: the gateway sends PCM.
    AsrProtocol.REALTIME: ("pcm",),
    AsrProtocol.FILE_URLS: (
        "pcm",
        "wav",
        "mp3",
        "opus",
        "speex",
        "aac",
        "amr",
        "webm",
        "ogg",
        "m4a",
        "flac",
    ),
    AsrProtocol.FILE_URL: (
        "pcm",
        "wav",
        "mp3",
        "opus",
        "speex",
        "aac",
        "amr",
        "webm",
        "ogg",
        "m4a",
        "flac",
    ),
}

#: Audio formats each synthesis protocol can be asked for (the gateway asks for PCM).
TTS_FORMATS: Mapping[TtsProtocol, tuple[str, ...]] = {
    TtsProtocol.REALTIME: ("pcm",),
    TtsProtocol.TASK: ("pcm", "wav", "mp3"),
    TtsProtocol.HTTP: ("pcm", "wav"),
}

_ANY_TASK_TTS_RATE = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
_QWEN3_TTS_RATES = frozenset({8000, 16000, 24000, 48000})


@dataclass(frozen=True, slots=True)
class AsrModel:
    """A recognition model: its protocol, and the sample rates it accepts (None: any)."""

    name: str
    protocol: AsrProtocol
    sample_rates: frozenset[int] | None = None
    formats: tuple[str, ...] = ()
    note: str = ""

    @property
    def streaming(self) -> bool:
        return self.protocol.streaming

    def accepts(self, fmt: str, sample_rate: int) -> bool:
        """True when the model takes ``fmt`` audio at ``sample_rate`` as it is (no transcoding)."""
        formats = self.formats or ASR_FORMATS[self.protocol]
        rate_ok = self.sample_rates is None or sample_rate in self.sample_rates
        return fmt in formats and rate_ok


@dataclass(frozen=True, slots=True)
class TtsModel:
    """A synthesis model: its protocol, accepted PCM rates, default rate and voice."""

    name: str
    protocol: TtsProtocol
    sample_rates: frozenset[int]
    default_sample_rate: int
    default_voice: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class OmniModel:
    """A Qwen-Omni realtime model (audio in, text and speech out on ``/api-ws/v1/realtime?model=``): the PCM it
    takes and gives, the names its ``session.update`` uses for them, and its default voice."""

    name: str
    default_voice: str
    #: ``output_audio_format`` of its ``session.update`` (the PCM is 16-bit mono at ``output_rate`` either way)
    output_format: str = "pcm24"
    input_format: str = "pcm16"
    input_rate: int = 16000
    output_rate: int = 24000
    note: str = ""


def _asr(*rows: AsrModel) -> dict[str, AsrModel]:
    return {row.name: row for row in rows}


def _tts(*rows: TtsModel) -> dict[str, TtsModel]:
    return {row.name: row for row in rows}


_T, _R, _FS, _F1 = (
    AsrProtocol.TASK,
    AsrProtocol.REALTIME,
    AsrProtocol.FILE_URLS,
    AsrProtocol.FILE_URL,
)
_16K = frozenset({16000})
_8K = frozenset({8000})

ASR_MODELS: Mapping[str, AsrModel] = _asr(
    AsrModel("paraformer-realtime-v1", _T, _16K),
    AsrModel("paraformer-realtime-v2", _T),
    AsrModel("paraformer-realtime-8k-v1", _T, _8K),
    AsrModel("paraformer-realtime-8k-v2", _T, _8K),
    AsrModel("fun-asr-realtime", _T),
    AsrModel("fun-asr-realtime-8k", _T, _8K),
    # Gummy's accepted rates are not documented ([U]); 16 kHz is the one every example uses.
    AsrModel("gummy-realtime-v1", _T, _16K, note="16 kHz assumed"),
    AsrModel("gummy-chat-v1", _T, _16K, note="16 kHz assumed"),
    AsrModel("qwen-audio-3.1-asr-flash-streaming", _T, frozenset({8000, 16000})),
    AsrModel("qwen3-asr-flash-realtime", _R, frozenset({8000, 16000})),
    AsrModel("paraformer-v1", _FS),
    AsrModel("paraformer-v2", _FS),
    AsrModel("paraformer-8k-v1", _FS, _8K),
    AsrModel("paraformer-8k-v2", _FS, _8K),
    AsrModel("paraformer-mtl-v1", _FS),
    AsrModel("fun-asr", _FS),
    AsrModel("sensevoice-v1", _FS),
    # Fun-ASR's file API, one URL in input.file_urls: the SDK 2.0.2's own default and example
    # (v2 client.audio.asr.jobs, examples/.../asr_file.py); the Qwen-ASR API's file_url is qwen3's only.
    AsrModel("qwen-audio-3.1-asr-flash-filetrans", _FS),
    AsrModel("qwen3-asr-flash-filetrans", _F1),
)

_TR, _TT, _TH = TtsProtocol.REALTIME, TtsProtocol.TASK, TtsProtocol.HTTP

TTS_MODELS: Mapping[str, TtsModel] = _tts(
    TtsModel("qwen-tts-realtime", _TR, frozenset({24000}), 24000, "Cherry"),
    TtsModel("qwen3-tts-flash-realtime", _TR, _QWEN3_TTS_RATES, 24000, "Cherry"),
    TtsModel("qwen3-tts-instruct-flash-realtime", _TR, _QWEN3_TTS_RATES, 24000, "Cherry"),
    TtsModel("cosyvoice-v1", _TT, _ANY_TASK_TTS_RATE, 24000, "longxiaochun"),
    TtsModel("cosyvoice-v2", _TT, _ANY_TASK_TTS_RATE, 24000, "longxiaochun_v2"),
    TtsModel("cosyvoice-v3-flash", _TT, _ANY_TASK_TTS_RATE, 24000, "longanyang"),
    TtsModel("cosyvoice-v3-plus", _TT, _ANY_TASK_TTS_RATE, 24000, "longanyang"),
    TtsModel("qwen-audio-3.0-tts-flash", _TT, _ANY_TASK_TTS_RATE, 24000, "longanhuan_v3.6"),
    TtsModel("qwen-audio-3.1-tts-flash", _TT, _ANY_TASK_TTS_RATE, 24000, "longanhuan_v3.1"),
    TtsModel("qwen3-tts-flash", _TH, frozenset({24000}), 24000, "Cherry"),
    TtsModel("qwen-tts", _TH, frozenset({24000}), 24000, "Cherry"),
)


def _omni(*rows: OmniModel) -> dict[str, OmniModel]:
    return {row.name: row for row in rows}


#: The Qwen-Omni realtime models (``dashscope-protocols.md`` §7, §10): input PCM16 at 16 kHz, output PCM16 at
#: 24 kHz, named ``pcm24`` by qwen3-omni-flash and ``pcm16`` by qwen-omni-turbo [C].
OMNI_MODELS: Mapping[str, OmniModel] = _omni(
    OmniModel("qwen3-omni-flash-realtime", "Cherry"),
    OmniModel("qwen-omni-turbo-realtime", "Chelsie", output_format="pcm16"),
    # The 3.5 family: default voice Tina [T], formats as qwen3-omni-flash [U]; the newest models may need the
    # workspace domain ({WorkspaceId}.cn-beijing.maas.aliyuncs.com) as the realtime URL [M].
    OmniModel("qwen3.5-omni-flash-realtime", "Tina", note="voice [T], formats [U]"),
    OmniModel("qwen3.5-omni-plus-realtime", "Tina", note="voice [T], formats [U]"),
)

#: Family prefixes for names the table does not list one by one (longest prefix wins).
ASR_FAMILIES: Mapping[str, str] = {
    "qwen3-asr-flash-realtime-": "qwen3-asr-flash-realtime",
    "qwen3-asr-flash-filetrans-": "qwen3-asr-flash-filetrans",
}
OMNI_FAMILIES: Mapping[str, str] = {
    "qwen3-omni-flash-realtime-": "qwen3-omni-flash-realtime",
    "qwen-omni-turbo-realtime-": "qwen-omni-turbo-realtime",
}
TTS_FAMILIES: Mapping[str, str] = {
    "cosyvoice-v3-": "cosyvoice-v3-flash",
    "qwen3-tts-flash-realtime-": "qwen3-tts-flash-realtime",
    "qwen-tts-realtime-": "qwen-tts-realtime",
}

#: A dated snapshot (``-2025-09-18``, ``-20250918``) or ``-latest`` names the same model.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


_M = TypeVar("_M")


def _find(name: str, table: Mapping[str, _M], families: Mapping[str, str]) -> _M | None:
    if name in table:
        return table[name]
    base = _SNAPSHOT.sub("", name)
    if base in table:
        return table[base]
    prefixes = [p for p in families if name.startswith(p)]
    if prefixes:
        return table[families[max(prefixes, key=len)]]
    return None


def _choices(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)


_P = TypeVar("_P", AsrProtocol, TtsProtocol)


def _forced(kind: type[_P], value: str, variable: str) -> _P | None:
    """The protocol an override variable names (None when unset)."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise CatalogueError(
            f"{variable}={value!r}: expected one of {_choices(p.value for p in kind)}"
        ) from None


def asr_model(name: str, protocol: str = "") -> AsrModel:
    """The recognition model ``name`` (``QWEN_AUDIO_RECOGNIZE_MODEL``), or with ``protocol`` (``QG_ASR_PROTOCOL``)
    an unknown one, or a known one sent down another protocol on purpose.

    Raises :class:`CatalogueError` naming the variable and the accepted values.
    """
    forced = _forced(AsrProtocol, protocol, "QG_ASR_PROTOCOL")
    found = _find(name, ASR_MODELS, ASR_FAMILIES)
    if found is None:
        if forced is None:
            raise CatalogueError(
                f"QWEN_AUDIO_RECOGNIZE_MODEL={name!r} is not in the model catalogue; use one of "
                f"{_choices(ASR_MODELS)}, or name its protocol with QG_ASR_PROTOCOL "
                f"({_choices(p.value for p in AsrProtocol)})"
            )
        return AsrModel(name, forced, note="protocol from QG_ASR_PROTOCOL")
    if found.name != name:
        found = replace(found, name=name)
    if forced is not None and forced is not found.protocol:
        found = replace(found, protocol=forced, note="protocol from QG_ASR_PROTOCOL")
    return found


def omni_model(name: str) -> OmniModel | None:
    """The Qwen-Omni realtime model ``name`` (a dated snapshot names its base model), or None when ``name`` is
    not one: the realtime endpoint's choice between its Omni pass-through and its cascade."""
    found = _find(name, OMNI_MODELS, OMNI_FAMILIES)
    if found is not None and found.name != name:
        found = replace(found, name=name)
    return found


def tts_model(name: str, protocol: str = "", *, sample_rate: int = 0) -> TtsModel:
    """The synthesis model ``name`` (``QG_TTS_MODEL`` or the ``model=`` of ``REAL_TIME_AUDIO_URL``), checked
    against ``sample_rate`` (``TTS_SAMPLE_RATE``; 0 = the model's default).

    Raises :class:`CatalogueError` naming the variable and the accepted values.
    """
    forced = _forced(TtsProtocol, protocol, "QG_TTS_PROTOCOL")
    found = _find(name, TTS_MODELS, TTS_FAMILIES)
    if found is None:
        if forced is None:
            raise CatalogueError(
                f"QG_TTS_MODEL={name!r} (or the model= of REAL_TIME_AUDIO_URL) is not in the model catalogue; "
                f"use one of {_choices(TTS_MODELS)}, or name its protocol with QG_TTS_PROTOCOL "
                f"({_choices(p.value for p in TtsProtocol)})"
            )
        rates = _ANY_TASK_TTS_RATE | _QWEN3_TTS_RATES
        found = TtsModel(name, forced, rates, 24000, "", note="protocol from QG_TTS_PROTOCOL")
    else:
        if found.name != name:
            found = replace(found, name=name)
        if forced is not None and forced is not found.protocol:
            found = replace(found, protocol=forced, note="protocol from QG_TTS_PROTOCOL")
    if sample_rate and sample_rate not in found.sample_rates:
        raise CatalogueError(
            f"TTS_SAMPLE_RATE={sample_rate}: {name} takes {_choices(sorted(found.sample_rates))}"
        )
    return found
