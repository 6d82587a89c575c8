"""Synthesis over the task protocol (run-task with task ``tts``), ``dashscope-protocols.md`` §4 and §10: the
CosyVoice models and the qwen-audio TTS models (:data:`~.models.MODELS` ``[Endpoint.TASK_TTS]``).

Text arrives in ``continue-task`` messages and is spoken sentence by sentence: ``sentence-begin``, then pairs of a
``sentence-synthesis`` event and exactly one binary audio frame, then ``sentence-end`` with the cumulative
``usage.characters`` (a Chinese character counts 2). ``finish-task`` speaks the remainder, then
``task-finished``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from .audio import synthesize, wav_header
from .faults import Fault
from .models import TTS_RATES, Endpoint, base_name, serves
from .records import ConnectionRecord, CosyVoiceSessionRecord
from .taskproto import Task, TaskError, TaskHost, task_event
from .wsconn import Pacer

__all__ = ["CosyVoiceTask", "billed_characters"]

#: What the SDK's ``AudioFormat.DEFAULT`` (``"format": "Default", "sample_rate": 0``) gets: MP3 at 22050 Hz.
DEFAULT_FORMAT = "mp3"
DEFAULT_RATE = 22050
_SENTENCE_END = re.compile(r"[。！？!?；;\n]|\.(?=\s)")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_MAX_TEXT = 20_000
_MAX_TOTAL = 200_000


def billed_characters(text: str) -> int:
    """CosyVoice's character count: a Chinese character counts 2, anything else 1."""
    return len(text) + len(_CJK.findall(text))


class CosyVoiceTask(Task):
    """One synthesis task on an inference socket (a CosyVoice or qwen-audio TTS model)."""

    kind = "tts_cosyvoice"
    rec: CosyVoiceSessionRecord

    def __init__(
        self,
        host: TaskHost,
        conn: ConnectionRecord,
        task_id: str,
        message: dict[str, Any],
        faults: dict[str, Fault],
    ) -> None:
        payload: dict[str, Any] = message["payload"]
        model = str(payload["model"])
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise TaskError("InvalidParameter", "'payload.parameters' must be an object.")
        if not serves(Endpoint.TASK_TTS, model):
            raise TaskError("ModelNotFound", f"Model not found ({model})!")
        voice = params.get("voice")
        if not isinstance(voice, str) or not voice:
            raise TaskError("InvalidParameter", "Request voice is invalid!")
        cfg = host.state.config
        if cfg.cosyvoice_voice_check and not voice.startswith("cosyvoice-"):
            v2_voice = voice.endswith("_v2")
            if (model == "cosyvoice-v2") != v2_voice and model in ("cosyvoice-v1", "cosyvoice-v2"):
                raise TaskError("InvalidParameter", "[tts:]Engine return error code: 418")
        fmt = params.get("format", DEFAULT_FORMAT)
        if fmt == "Default":
            fmt = DEFAULT_FORMAT
        if fmt == "opus":
            raise TaskError(
                "InvalidParameter", "The simulator does not produce opus; use pcm, wav or mp3."
            )
        if fmt not in ("pcm", "wav", "mp3"):
            raise TaskError("InvalidParameter", f"Unsupported format: {fmt}.")
        rate = params.get("sample_rate", DEFAULT_RATE)
        if rate == 0:
            rate = DEFAULT_RATE
        if not isinstance(rate, int) or rate not in TTS_RATES[base_name(model)]:
            raise TaskError("InvalidParameter", f"Unsupported sample_rate: {rate}.")
        speed = params.get("rate", 1.0)
        if not isinstance(speed, (int, float)) or not 0.5 <= speed <= 2.0:
            raise TaskError("InvalidParameter", f"rate should be in [0.5, 2.0], got {speed}.")
        volume = params.get("volume", 50)
        if not isinstance(volume, (int, float)) or not 0 <= volume <= 100:
            raise TaskError("InvalidParameter", f"volume should be in [0, 100], got {volume}.")
        pitch = params.get("pitch", 1.0)
        if not isinstance(pitch, (int, float)) or not 0.5 <= pitch <= 2.0:
            raise TaskError("InvalidParameter", f"pitch should be in [0.5, 2.0], got {pitch}.")
        super().__init__(host, task_id, model, faults, idle_since=asyncio.get_running_loop().time())
        self.format = str(fmt)
        self.rate = int(rate)
        self.speed = float(speed)
        self.buffer = ""
        self.received_chars = 0
        self.characters = 0
        self.frames = 0
        self.sentence_index = 0
        self.header_sent = False
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()  # never blocks the reader
        self.worker: asyncio.Task[None] | None = None
        slow = faults.get("slow_audio")
        bursty = faults.get("bursty_audio")
        self.pacer = Pacer(
            realtime_factor=slow.factor if slow is not None else cfg.tts_realtime_factor,
            first_delay=cfg.tts_first_audio_delay,
            burst=bursty.burst if bursty is not None else 0,
            burst_pause=(bursty.seconds or 0.0) if bursty is not None else 0.0,
        )
        self.rec = CosyVoiceSessionRecord(task_id, conn, model, dict(params), message)
        host.state.log.cosyvoice_sessions.append(self.rec)
        initial = payload.get("input", {})
        self._initial = initial.get("text") if isinstance(initial, dict) else None

    async def started(self, tg: asyncio.TaskGroup) -> None:
        """Start speaking (``task-started`` is queued)."""
        self.worker = tg.create_task(self._work())
        if isinstance(self._initial, str) and self._initial:
            await self._add_text(self._initial)

    async def on_audio(self, data: bytes) -> None:
        """Audio sent to a synthesis task is ignored [U]."""

    async def on_continue(self, payload: Any) -> None:
        source = payload.get("input") if isinstance(payload, dict) else None
        text = source.get("text") if isinstance(source, dict) else None
        if text is None:
            return  # e.g. the SDK's {"flush": true}; [U] server semantics
        if not isinstance(text, str):
            await self.host.fail(self.task_id, "InvalidParameter", "'input.text' must be a string.")
            return
        await self._add_text(text)

    async def _add_text(self, text: str) -> None:
        size = billed_characters(text)
        if size > _MAX_TEXT or self.received_chars + size > _MAX_TOTAL:
            await self.host.fail(
                self.task_id, "InvalidParameter", "Text request limit violated, text too long."
            )
            return
        self.received_chars += size
        self.rec.texts.append(text)
        self.host.state.log.touch()
        self.buffer += text
        last_end = -1
        for m in _SENTENCE_END.finditer(self.buffer):
            last_end = m.end()
        if last_end > 0:
            ready, self.buffer = self.buffer[:last_end], self.buffer[last_end:]
            for sentence in _split(ready):
                self.busy = True
                await self.sentences.put(sentence)

    async def on_finish(self) -> None:
        self.rec.finish_received = True
        if self.buffer.strip():
            self.busy = True
            await self.sentences.put(self.buffer)
        self.buffer = ""
        self.busy = True
        await self.sentences.put(None)

    async def abort(self) -> None:
        """A new run-task replaced this one: stop speaking."""
        await super().abort()
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.wait([self.worker])

    def failed(self, code: str, message: str) -> None:
        super().failed(code, message)
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()

    async def _work(self) -> None:
        while True:
            sentence = await self.sentences.get()
            if sentence is None:
                if self.received_chars == 0:
                    await self.host.fail(
                        self.task_id, "InvalidParameter", "Please ensure input text is valid."
                    )
                    return
                self.done = True
                self.rec.finished = True
                await self.host.writer.put(
                    task_event(
                        self.task_id,
                        "task-finished",
                        {
                            "output": {"sentence": {"words": []}},
                            "usage": {"characters": self.characters},
                        },
                        {"request_uuid": str(uuid.uuid4())},
                    )
                )
                self.host.state.log.touch()
                return
            if not await self._speak(sentence):
                return
            if self.sentences.empty():
                self.busy = False
                self.idle_since = asyncio.get_running_loop().time()

    async def _speak(self, text: str) -> bool:
        """Speak one sentence; False when a fault ended the connection."""
        host, index = self.host, self.sentence_index
        self.sentence_index += 1
        self.pacer.restart()
        self.rec.sentences.append(text)
        sentence = {"index": index, "words": []}
        await host.writer.put(
            task_event(
                self.task_id,
                "result-generated",
                {"output": {"sentence": sentence, "type": "sentence-begin", "original_text": text}},
            )
        )
        pcm = synthesize(text, self.rate, self.speed)
        step = max(2, self.rate * host.state.config.tts_chunk_ms // 1000 * 2)
        pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        encoded = self._encode(pieces)
        for piece_pcm, data in zip(pieces, encoded, strict=True):
            if not await self._faults_at(self.frames):
                return False
            await host.writer.backpressure()
            await self.pacer.wait(len(piece_pcm) / (2 * self.rate))
            await host.writer.put(
                task_event(
                    self.task_id,
                    "result-generated",
                    {"output": {"sentence": sentence, "type": "sentence-synthesis"}},
                )
            )
            await host.writer.put(data)
            self.frames += 1
            self.rec.audio_bytes += len(data)
        self.characters += billed_characters(text)
        self.rec.characters = self.characters
        await host.writer.put(
            task_event(
                self.task_id,
                "result-generated",
                {
                    "output": {"sentence": sentence, "type": "sentence-end", "original_text": text},
                    "usage": {"characters": self.characters},
                },
            )
        )
        host.state.log.touch()
        return True

    def _encode(self, pieces: list[bytes]) -> list[bytes]:
        if not pieces:
            return []
        if self.format == "pcm":
            return pieces
        if self.format == "wav":
            out = list(pieces)
            if not self.header_sent:
                out[0] = wav_header(self.rate) + out[0]
                self.header_sent = True
            return out
        import lameenc  # type: ignore[import-not-found]

        encoder = lameenc.Encoder()
        encoder.set_bit_rate(64)
        encoder.set_in_sample_rate(self.rate)
        encoder.set_channels(1)
        encoder.set_quality(7)
        mp3 = bytes(encoder.encode(b"".join(pieces))) + bytes(encoder.flush())
        # Split the MP3 bytes in as many frames as PCM pieces (clients concatenate them in order).
        n = len(pieces)
        bounds = [len(mp3) * i // n for i in range(n + 1)]
        return [mp3[bounds[i] : bounds[i + 1]] for i in range(n)]


def _split(text: str) -> list[str]:
    """Sentences of ``text`` (each keeps its closing punctuation); blank ones dropped."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start : m.end()]
        start = m.end()
        if piece.strip():
            out.append(piece)
    if text[start:].strip():
        out.append(text[start:])
    return out
