"""Realtime recognition over the task protocol (run-task with task ``asr``): paraformer, fun-asr, gummy,
qwen-audio-3.1-asr-flash-streaming; exactly the models :data:`.models.MODELS` serves on ``Endpoint.TASK_ASR``.

Binary audio frames are timed as they arrive (:mod:`.audio`); partial results (``sentence_end: false``,
``end_time: null``, ``usage: null``) follow the transcript as the received duration grows, a sentence becomes
final (``sentence_end: true``, ``end_time``, ``usage.duration``) once the audio is past it, and ``finish-task``
finalises the rest before ``task-finished`` (``dashscope-protocols.md`` §6).
"""

from __future__ import annotations

from typing import Any

from .audio import make_clock
from .faults import Fault
from .models import ASR_RATES, Endpoint, base_name, serves
from .records import AsrSessionRecord, ConnectionRecord
from .taskproto import Task, TaskError, TaskHost, task_event
from .transcripts import RecognitionUpdate, StreamingRecognition

__all__ = ["AsrTask"]

FORMATS = frozenset({"pcm", "wav", "mp3", "opus", "speex", "aac", "amr"})
#: The recognition + translation models (``TranslationRecognizerRealtime`` / ``...Chat`` in the SDK).
GUMMY = frozenset({"gummy-realtime-v1", "gummy-chat-v1"})


class AsrTask(Task):
    """One recognition task on an inference socket."""

    kind = "asr"
    rec: AsrSessionRecord

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
        params = payload.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise TaskError("InvalidParameter", "'payload.parameters' must be an object.")
        if not serves(Endpoint.TASK_ASR, model):
            # A file model (paraformer-v2), a realtime-protocol model (qwen3-asr-flash-realtime) or an unknown
            # name: DashScope fails the task at run-task ([U] message wording; code as §0.3's ModelNotFound).
            raise TaskError("ModelNotFound", f"Model not found ({model})!")
        fmt = params.get("format")
        if not isinstance(fmt, str) or not fmt:
            raise TaskError(
                "InvalidParameter",
                "Missing required parameter 'payload.parameters.format'! Please follow the protocol!",
            )
        if fmt.lower() not in FORMATS:
            raise TaskError("InvalidParameter", f"Unsupported audio format: {fmt}.")
        rate = params.get("sample_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise TaskError(
                "InvalidParameter",
                "Missing required parameter 'payload.parameters.sample_rate'! Please follow the protocol!",
            )
        rates = ASR_RATES.get(base_name(model))
        if rates is not None and rate not in rates:
            allowed = ", ".join(str(r) for r in sorted(rates))
            raise TaskError(
                "InvalidParameter", f"Model {model} only supports sample_rate {allowed}."
            )
        cfg = host.state.config
        super().__init__(host, task_id, model, faults, idle_since=0.0)
        #: gummy answers in ``output.transcription`` (and ``translations``), the others in ``output.sentence``
        self.gummy = base_name(model) in GUMMY
        self.results_sent = 0
        silence = params.get("max_sentence_silence")
        self.recognition = StreamingRecognition(
            host.state.registry,
            make_clock(fmt, rate),
            default_text=cfg.asr_default_text,
            format=fmt.lower(),
            sample_rate=rate,
            chars_per_second=cfg.asr_chars_per_second,
            silence=silence / 1000
            if isinstance(silence, int) and 200 <= silence <= 6000
            else cfg.asr_sentence_silence,
        )
        self.rec = AsrSessionRecord(task_id, conn, model, dict(params), message)
        host.state.log.asr_sessions.append(self.rec)

    async def started(self) -> None:
        """Called once ``task-started`` is queued."""

    async def on_audio(self, data: bytes) -> None:
        self.rec.audio += data
        self.rec.frames += 1
        self.host.state.log.touch()
        for update in self.recognition.feed(data):
            if not await self._result(update):
                return

    async def on_continue(self, payload: Any) -> None:
        """continue-task carries nothing for recognition; tolerated."""

    async def on_finish(self) -> None:
        self.rec.finish_received = True
        for update in self.recognition.finish():
            if not await self._result(update):
                return
        self.rec.transcript = self.recognition.transcript
        self.done = True
        self.rec.finished = True
        await self.host.writer.put(
            task_event(self.task_id, "task-finished", {"output": {}, "usage": None})
        )
        self.host.state.log.touch()

    async def _result(self, update: RecognitionUpdate) -> bool:
        """Queue one result-generated event; False when a fault ended the connection."""
        if not await self._faults_at(self.results_sent):
            return False
        payload = self._payload(update)
        self.rec.results.append(payload)
        self.results_sent += 1
        await self.host.writer.put(task_event(self.task_id, "result-generated", payload))
        return True

    def _payload(self, update: RecognitionUpdate) -> dict[str, Any]:
        sentence = update.sentence
        final = update.final
        words = [w.as_json() for w in sentence.words[: update.nwords]]
        if final:
            end_time: int | None = round(sentence.end * 1000)
        elif self.host.state.config.asr_partial_end_time:
            end_time = round(update.audio_seconds * 1000)
        else:
            end_time = None
        usage = {"duration": update.billed_seconds} if final else None
        if self.gummy:
            transcription = {
                "sentence_id": sentence.id,
                "begin_time": round(sentence.begin * 1000),
                "end_time": end_time,
                "text": update.text,
                # gummy's words say whether they can still change (the SDK's WordObj requires "fixed"); the
                # simulator only reveals words the audio is already past, which do not.
                "words": [w | {"fixed": True} for w in words],
                "sentence_end": final,
            }
            if end_time is None:
                # The SDK's TranscriptionResult reads current_time when end_time is null [C SDK parser].
                transcription["current_time"] = round(update.audio_seconds * 1000)
            return {"output": {"transcription": transcription}, "usage": usage}
        return {
            "output": {
                "sentence": {
                    "begin_time": round(sentence.begin * 1000),
                    "end_time": end_time,
                    "text": update.text,
                    "heartbeat": False,
                    "sentence_end": final,
                    "sentence_id": sentence.id,
                    "words": words,
                }
            },
            "usage": usage,
        }
