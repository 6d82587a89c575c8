"""One voice turn, streamed end to end, under one ``asyncio.TaskGroup``.

``/v1/chat/audio`` (:class:`AudioTurn`)::

    packets (feed/complete) --> upload buffer --+--> sniff format --> streaming recognition --> transcript
                                                +--> (complete) store upload --> transcription_started(oss_url)
    transcript --> chat_started --> AnswerSpeaker (chat_chunk*, tts_started, audio_stream data*, finished)
               --> store the spoken answer --> outbox (TurnRecord) --> chat_tts_complete --> audio_complete

The upload is recognised while it arrives: the bytes the session machine releases in order go to the recogniser at
once. Its format is read from its first bytes (or declared raw PCM); an unknown format is an ``error`` before any
upstream call. A recogniser that does not take that format at that rate (``Recognizer.accepts``) gets it decoded
to mono PCM at a rate it takes, on the way (:mod:`.decode`: streamed for MP3/WAV/PCM, at the end for Ogg). The upload is stored as soon as it is complete, while recognition finishes, and
``transcription_started`` carries the stored URL. File-recognition models (``paraformer-v1/v2``, ``fun-asr``)
recognise the stored file instead (``transcribe_url`` of a presigned URL).

``/v1/chat/vlm`` (:class:`VlmTurn`) starts with both uploads complete: it stores audio and image, recognises the
question, and asks the VLM about the image with the same answer stage.

Once the answer stage has returned, the MP3 it sent is stored as one object (kind ``tts``; see
``VoiceConfig.store_reply_audio``) and its key goes into the turn's record (``reply_audio_key``); a store failure or
timeout only leaves the key out. A cancelled turn stores no spoken answer: cancelled while the answer is spoken,
nothing is stored; cancelled while it is being stored, the record names none (a write already under way may still
leave an unnamed object).

Failures are typed ``error`` events and ``*_success: false`` in the completion events; the connection stays usable.
Cancelling a turn's task (barge-in, ``cancel``, the client leaving) closes every upstream connection the turn
opened; with a ``cancel_reason`` set (the connection lives on) the turn still sends ``audio_stream`` ``finished``,
and in every case a partial answer is saved as ``interrupted``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from msgspec import UNSET, UnsetType

import protocol
from protocol import (
    MSG_AUDIO_COMPLETE,
    MSG_CHAT_SKIPPED,
    MSG_CHAT_STARTED,
    MSG_CHAT_TTS_COMPLETE,
    MSG_TRANSCRIPTION_STARTED,
    MSG_VLM_CHAT_STARTED,
    MSG_VLM_CHAT_TTS_COMPLETE,
    MSG_VLM_COMPLETE,
    AudioComplete,
    AudioStreamFinished,
    ChatChunk,
    ChatStarted,
    ChatTtsComplete,
    DeviceOptions,
    ErrorCode,
    ErrorEvent,
    Event,
    Timings,
    TranscriptionStarted,
    VlmChatChunk,
    VlmChatStarted,
    VlmChatTtsComplete,
    VlmComplete,
)

from ..config import Settings
from ..errors import StorageError, UpstreamError
from ..metrics import Metrics
from ..providers.base import (
    AudioFormat,
    ChatModel,
    RecognitionResult,
    RecognitionSession,
    Recognizer,
    Synthesizer,
)
from ..storage.history import TurnRecord, TurnStatus
from ..storage.objects import CONTENT_TYPES, ObjectKind, ObjectStore, StoredObject
from ..storage.outbox import Outbox
from ..tasks import forget_frames
from .answer import (
    AnswerEvents,
    AnswerResult,
    AnswerSpeaker,
    AnswerTuning,
    AudioEncoder,
    DeviceAnswerEvents,
    Emit,
    SeedAnswerEvents,
    error_code_for,
    upstream_error_event,
)
from .decode import PcmDecoder, UndecodableAudio, plan
from .encoders import encoder_factory
from .formats import SNIFF_BYTES, AudioFormatInfo, UnknownAudioFormat, audio_duration, sniff
from .images import ImageFormat, UnknownImageFormat, sniff_image
from .memory import ConversationMemory
from .openmic import SpeechEndWatch
from .pacing import PacedEmit
from .recognition import collect_transcript

__all__ = [
    "AudioTurn",
    "SessionInfo",
    "TurnDeps",
    "VlmTurn",
    "VoiceConfig",
    "error_code",
]

log = logging.getLogger("qwen_gateway.voice.turn")

#: Stored extension of each recognised upload format.
_AUDIO_EXT = {"mp3": "mp3", "wav": "wav", "opus": "ogg", "speex": "ogg", "pcm": "pcm"}

#: The opt-in ``transcription_partial`` event, where the protocol defines it.
_PARTIAL_EVENT: Any = getattr(protocol, "TranscriptionPartial", None)


def error_code(name: str) -> ErrorCode | UnsetType:
    """``ErrorCode(name)`` when the contract has that code, else UNSET (the event then carries no code)."""
    try:
        return ErrorCode(name)
    except ValueError:
        return UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceConfig:
    """The knobs of the voice pipeline.

    Attributes:
        chat_model / vlm_model: models of the answer (text turns / image turns).
        system_prompt: first message of every chat request ("" for none).
        answer: the answer stage's tuning (timeouts, voice, bitrate, segmenting).
        read_timeout: longest wait for any single upstream step (store, a recognition result after the upload
            ended, a chat delta, a TTS chunk).
        recognition_timeout: longest file recognition (submit, poll, fetch).
        history_turns / history_tokens: chat context budget (previous turns, estimated tokens).
        max_audio_seconds: longest accepted utterance.
        audio_queue: upload chunks buffered ahead of the recogniser.
        presign_seconds: life of the presigned URL given to a file recogniser.
        cleanup_timeout: longest wait for the events of a cancelled turn.
        store_reply_audio: store the MP3 of the spoken answer (kind ``tts``) and put its key in the turn's record.
    """

    chat_model: str
    vlm_model: str
    system_prompt: str = ""
    answer: AnswerTuning = field(default_factory=AnswerTuning)
    read_timeout: float = 60.0
    recognition_timeout: float = 300.0
    history_turns: int = 10
    history_tokens: int = 4000
    max_audio_seconds: float = 300.0
    audio_queue: int = 32
    presign_seconds: int = 3600
    cleanup_timeout: float = 5.0
    store_reply_audio: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceConfig:
        """The pipeline configured by ``settings``."""
        answer = AnswerTuning(
            read_timeout=settings.read_timeout,
            voice=settings.tts_voice or None,
            bitrate_kbps=settings.mp3_bitrate_kbps,
        )
        return cls(
            chat_model=settings.chat_model,
            vlm_model=settings.vlm_model,
            system_prompt=settings.default_system_prompt,
            answer=answer,
            read_timeout=settings.read_timeout,
            history_turns=settings.history_turns,
            history_tokens=settings.history_tokens,
            max_audio_seconds=settings.max_audio_seconds,
            store_reply_audio=settings.store_reply_audio,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnDeps:
    """The services a turn uses."""

    chat: ChatModel
    vlm: ChatModel
    recognizer: Recognizer
    synthesizer: Synthesizer
    objects: ObjectStore
    outbox: Outbox
    config: VoiceConfig
    clock: Callable[[], float] = time.monotonic
    metrics: Metrics | None = None

    @classmethod
    def from_services(cls, services: Any, config: VoiceConfig | None = None) -> TurnDeps:
        """The dependencies from the app's ``Services``."""
        return cls(
            chat=services.providers.chat,
            vlm=services.providers.vlm,
            recognizer=services.providers.recognizer,
            synthesizer=services.providers.synthesizer,
            objects=services.storage.objects,
            outbox=services.storage.outbox,
            config=config or VoiceConfig.from_settings(services.settings),
            metrics=services.metrics if services.metrics.enabled else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What a turn knows about its connection.

    Attributes:
        session_id: the connection's id (``connected.session_id``), also in object keys.
        conversation_id: the conversation its turns extend.
        owner: who the conversation belongs to (``KeyChecker.owner`` of the caller's key).
        api_key: the key for upstream calls (None: the gateway's own); never in the repr.
        declared_format: the client's declared upload format (``?format=pcm;rate=16000``), if any.
        extended: the client opted in to events beyond the seed's (``?events=extended``).
        request_id: the handshake's request id (in stored turns).
        device: the answer's audio format, pacing and upload mode asked at the handshake (default: the seed's).
    """

    session_id: str
    conversation_id: str
    owner: str
    api_key: str | None = field(default=None, repr=False)
    declared_format: str | None = None
    extended: bool = False
    request_id: str = ""
    device: DeviceOptions = field(default_factory=DeviceOptions)


@dataclass(slots=True)
class _Progress:
    """What a turn has done so far (for its completion events, its record and a cancellation)."""

    completed_at: float | None = None  # the upload became complete (the user finished)
    transcript: str | None = None
    transcript_at: float | None = None
    stored_audio: StoredObject | None = None
    stored_image: StoredObject | None = None
    stored_reply: StoredObject | None = None  # the spoken answer's MP3
    #: the answer stage while the turn runs (dropped at its end: see _Turn._release)
    answer: AnswerSpeaker | None = None
    answer_result: AnswerResult | None = None  # the answer's figures (kept after the turn)
    answer_done: bool = False  # the answer stage returned (its ``finished`` was sent)
    chat_started_at: float | None = None
    saved: bool = False  # the turn's record went to the outbox (or is being sent there)
    audio_seconds: float = 0.0  # the audio recognition ran on


class _Turn:
    """What both kinds of turn share: emitting, the answer stage, saving, cancellation."""

    channel: Literal["audio", "vlm"]

    def __init__(
        self,
        deps: TurnDeps,
        session: SessionInfo,
        memory: ConversationMemory,
        turn_id: int,
        emit: Emit,
        *,
        flushed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.turn_id = turn_id
        self._flushed = flushed
        self._deps = deps
        self._cfg = deps.config
        self._session = session
        self._memory = memory
        self._emit = emit
        self._clock = deps.clock
        self._p = _Progress()
        #: set before cancelling the turn's task when the connection lives on (barge-in, cancel, timeout)
        self.cancel_reason: str | None = None
        #: when the first audio frame was handed to the server (set by the runner, for metrics)
        self.first_audio_sent_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Run the turn to its end. Upstream failures become events; cancelling ends it at once."""
        try:
            await self._body()
            self._observe_stages()
        except asyncio.CancelledError:
            self._save_interrupted()
            answering = self._p.answer is not None and not self._p.answer_done
            if self.cancel_reason is not None and answering:
                # The client is still there: its player must learn that this answer's audio ended.
                try:
                    async with asyncio.timeout(self._cfg.cleanup_timeout):
                        await self._emit(AudioStreamFinished(turn_id=self.turn_id))
                except TimeoutError:
                    pass
            raise
        finally:
            self._release()

    def _release(self) -> None:
        """The turn has ended: let go of its buffers (upload, spoken answer, encoder) at once.

        A finished turn may stay reachable for a while from a reference cycle (a traceback's frames) until the
        garbage collector's next full pass; without this, each such turn kept its audio and LAME's state. The
        speaker itself is dropped too: it holds the turn's emitters, closures over the turn, so keeping it made
        every turn a reference cycle left to the collector (tests/voice_ws/test_turn_garbage.py).
        """
        if self._p.answer is not None:
            self._p.answer.release()
            self._p.answer = None

    async def _body(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ metrics (the `timings` clock readings)
    def _observe_stages(self) -> None:
        """Record the stages of a finished turn, from the end of the upload (as the ``timings`` event)."""
        metrics, p = self._deps.metrics, self._p
        if metrics is None or p.completed_at is None:
            return
        r = p.answer_result
        for stage, at in (
            ("recognition", p.transcript_at),
            ("first_token", r.first_token_at if r else None),
            ("first_tts_audio", r.first_pcm_at if r else None),
            ("total", self._clock()),
        ):
            metrics.turn_stage(self.channel, stage, None if at is None else at - p.completed_at)

    def audio_sent(self) -> None:
        """The first audio frame was handed to the server: its stage, and the gateway's share of the time to it:
        the three stretches of the way to the first audio where no upstream is waited for (final transcript ->
        chat request sent, first sentence cut -> handed to TTS, first PCM -> first audio frame written). The middle
        one also holds what is left of the TTS handshake when the first sentence is ready (it normally ended while
        the chat was waiting for its first token)."""
        self.first_audio_sent_at = now = self._clock()
        metrics, p = self._deps.metrics, self._p
        if metrics is None or p.completed_at is None:
            return
        metrics.turn_stage(self.channel, "first_audio_sent", now - p.completed_at)
        r = p.answer_result
        if r is None or None in (
            p.transcript_at,
            p.chat_started_at,
            r.first_segment_at,
            r.first_tts_text_at,
            r.first_pcm_at,
        ):
            return
        share = (
            (p.chat_started_at - p.transcript_at)  # type: ignore[operator]
            + (r.first_tts_text_at - r.first_segment_at)  # type: ignore[operator]
            + (now - r.first_pcm_at)  # type: ignore[operator]
        )
        metrics.turn_gateway_share(self.channel, share)

    def usage(self) -> dict[str, float]:
        """What the turn spent so far: chat ``tokens``, ``tts_chars`` spoken, ``audio_seconds`` recognised."""
        result = self._p.answer_result
        usage = result.usage if result is not None else None
        return {
            "tokens": usage.total_tokens if usage is not None else 0,
            "tts_chars": result.tts_chars if result is not None else 0,
            "audio_seconds": round(self._p.audio_seconds, 3),
        }

    # ------------------------------------------------------------------ shared steps
    def _held_answer_events(self) -> tuple[asyncio.Event, Emit]:
        """A gate and an emitter that holds the answer's events until the gate is set.

        The answer starts as soon as the transcript is known; its events wait until ``chat_started`` /
        ``vlm_chat_started`` went out (the seed's order), which is when the caller sets the gate.
        """
        gate = asyncio.Event()

        async def emit(event: Event) -> None:
            await gate.wait()
            await self._emit(event)

        return gate, emit

    async def _store_question_audio(self, data: bytes, ext: str) -> None:
        """Store the spoken question, then send ``transcription_started`` with its URL."""
        stored = await self._store("audio", data, ext)
        self._p.stored_audio = stored
        await self._emit(
            TranscriptionStarted(
                message=MSG_TRANSCRIPTION_STARTED,
                oss_url=stored.url if stored else None,
                turn_id=self.turn_id,
            )
        )

    async def _store(self, kind: ObjectKind, data: bytes, ext: str) -> StoredObject | None:
        """Store ``data``; None (logged) when the object store fails: the turn goes on without it."""
        key = self._deps.objects.new_key(kind, self._session.session_id, ext)
        try:
            async with asyncio.timeout(self._cfg.read_timeout):
                return await self._deps.objects.put(key, data, CONTENT_TYPES[ext])
        except (StorageError, TimeoutError) as exc:
            log.warning(
                "object not stored: %s",
                type(exc).__name__,
                extra={"fields": {"turn_id": self.turn_id, "kind": kind}},
            )
            return None

    async def _recognise_file(self, stored: StoredObject | None) -> str | None:
        """File recognition of the stored upload; None (after an ``error`` event) when it failed."""
        if stored is None:
            await self._emit(
                ErrorEvent(
                    message="recognition failed: the upload could not be stored for the file recogniser",
                    code=error_code("storage_error"),
                    turn_id=self.turn_id,
                )
            )
            return None
        url = self._deps.objects.presigned_url(stored.key, self._cfg.presign_seconds)
        try:
            async with asyncio.timeout(self._cfg.recognition_timeout):
                text = await self._deps.recognizer.transcribe_url(
                    url, api_key=self._session.api_key
                )
        except (UpstreamError, TimeoutError) as exc:
            await self._emit(upstream_error_event("recognition", exc, self.turn_id))
            return None
        return text.strip()

    async def _collect(self, rec: RecognitionSession) -> str:
        """Read ``rec``'s results to their end; send opt-in partial events; return the final transcript."""
        if not (self._session.extended and _PARTIAL_EVENT is not None):
            return await collect_transcript(rec)

        async def partial(text: str, result: RecognitionResult) -> None:
            await self._emit(
                _PARTIAL_EVENT(text=text, is_final=result.is_final, turn_id=self.turn_id)
            )

        return await collect_transcript(rec, partial)

    def _chat_messages(self, context: list[dict[str, str]], user: Any) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if self._cfg.system_prompt:
            messages.append({"role": "system", "content": self._cfg.system_prompt})
        messages.extend(context)
        messages.append({"role": "user", "content": user})
        return messages

    async def _answer(
        self,
        chat: ChatModel,
        model: str,
        user: Any,
        chunk_event: Callable[[str, str], Event],
        *,
        emit: Emit | None = None,
    ) -> AnswerResult:
        """Generate and speak the answer to ``user`` (text, or VLM content parts) with the conversation.

        ``emit`` replaces the turn's own (to hold the answer's events back until they may go out).
        """
        context = await self._memory.context()
        body = {
            "model": model,
            "messages": self._chat_messages(context, user),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        device = self._session.device
        seed = SeedAnswerEvents(chunk_event, self.turn_id)
        events: AnswerEvents = seed
        new_encoder: Callable[[int], AudioEncoder] | None = None
        keep = self._cfg.store_reply_audio
        if device.output is not None:
            output = device.output
            rate = output.sample_rate or self._deps.synthesizer.sample_rate
            events = DeviceAnswerEvents(seed, output, rate)
            new_encoder = encoder_factory(output, mp3_bitrate_kbps=self._cfg.answer.bitrate_kbps)
            keep = keep and output.format == "mp3"  # the stored answer is an MP3 file
        answer_emit = emit or self._emit
        if device.pace_lead_ms is not None:
            # Only the answer's own events are paced: a cancelled turn's ``finished`` leaves at once.
            answer_emit = PacedEmit(
                answer_emit, device.pace_lead_ms, clock=self._clock, flushed=self._flushed
            )
        speaker = AnswerSpeaker(
            chat=chat,
            synthesizer=self._deps.synthesizer,
            emit=answer_emit,
            events=events,
            turn_id=self.turn_id,
            tuning=self._cfg.answer,
            api_key=self._session.api_key,
            clock=self._clock,
            keep_audio=keep,
            new_encoder=new_encoder,
        )
        self._p.answer = speaker
        self._p.answer_result = speaker.result
        self._p.chat_started_at = self._clock()
        result = await speaker.run(body)
        self._p.answer_done = True
        self._memory.add(self._p.transcript or "", result.text)
        return result

    async def _store_reply(self) -> None:
        """Store the MP3 the answer sent (when kept), for the record's ``reply_audio_key``."""
        audio = self._p.answer.spoken_audio if self._p.answer is not None else b""
        if audio:
            self._p.stored_reply = await self._store("tts", audio, "mp3")

    def _timings(self, result: AnswerResult | None) -> Timings:
        p, now = self._p, self._clock()
        start = p.completed_at if p.completed_at is not None else now

        def ms(at: float | None, since: float | None = start) -> float | UnsetType:
            if at is None or since is None:
                return UNSET
            return round(max(at - since, 0.0) * 1000, 2)

        return Timings(
            recognition_ms=ms(p.transcript_at),
            first_token_ms=ms(result.first_token_at if result else None),
            first_audio_ms=ms(result.first_audio_at if result else None),
            total_ms=ms(now),
        )

    def _record(
        self, model: str, result: AnswerResult | None, status: TurnStatus, code: str | None
    ) -> TurnRecord:
        p = self._p

        def ms(at: float | None, since: float | None) -> float | None:
            return max(at - since, 0.0) * 1000 if at is not None and since is not None else None

        usage = result.usage if result else None
        return TurnRecord.new(
            owner=self._session.owner,
            conversation_id=self._session.conversation_id,
            channel=self.channel,
            model=model,
            user_content=p.transcript or "",
            assistant_content=result.text if result else "",
            status=status,
            error_code=code,
            request_id=self._session.request_id,
            session_id=self._session.session_id,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            recognition_ms=ms(p.transcript_at, p.completed_at),
            first_token_ms=ms(result.first_token_at if result else None, p.chat_started_at),
            first_audio_ms=ms(result.first_audio_at if result else None, p.completed_at),
            total_ms=ms(self._clock(), p.completed_at),
            audio_key=p.stored_audio.key if p.stored_audio else None,
            image_key=p.stored_image.key if p.stored_image else None,
            reply_audio_key=p.stored_reply.key if p.stored_reply else None,
        )

    async def _save(self, result: AnswerResult) -> bool:
        """Store the spoken answer (when kept), then write the finished turn through the outbox; True once the
        turn is durably journaled (a failed store only leaves ``reply_audio_key`` out)."""
        await self._store_reply()
        self._p.saved = True
        status, code = _outcome(result)
        try:
            record = self._record(self._model, result, status, code)
            async with asyncio.timeout(self._cfg.read_timeout):
                await self._deps.outbox.submit(record)
        except (StorageError, ValueError, RuntimeError, TimeoutError) as exc:
            log.error(
                "turn not saved: %s",
                type(exc).__name__,
                extra={"fields": {"turn_id": self.turn_id}},
            )
            return False
        return True

    def _save_interrupted(self) -> None:
        """On cancellation: remember and journal (without waiting) what was answered so far.

        A turn cancelled after its answer ended (while the spoken answer was being stored) is journaled as its
        answer ended, without the spoken answer unless that was already stored.
        """
        p = self._p
        if p.saved or not p.transcript:
            return
        p.saved = True
        result = p.answer_result
        if result is not None and p.answer_done:
            status, code = _outcome(result)
        else:
            # What the user said was heard: the turn is kept even when no word of the answer came yet.
            self._memory.add(p.transcript, result.text if result is not None else "")
            status, code = "interrupted", self.cancel_reason or "client_gone"
        try:
            record = self._record(self._model, result, status, code)
            self._deps.outbox.submit_nowait(record)
        except (StorageError, ValueError, RuntimeError) as exc:
            log.error(
                "interrupted turn not saved: %s",
                type(exc).__name__,
                extra={"fields": {"turn_id": self.turn_id}},
            )

    @property
    def _model(self) -> str:
        return self._cfg.vlm_model if self.channel == "vlm" else self._cfg.chat_model

    def _too_long(self, duration: float) -> ErrorEvent | None:
        limit = self._cfg.max_audio_seconds
        if duration <= limit:
            return None
        return ErrorEvent(
            message=f"the utterance lasts {duration:.1f} s, longer than the {limit:g} s allowed",
            code=ErrorCode.UPLOAD_TOO_LARGE,
            turn_id=self.turn_id,
        )


def _outcome(result: AnswerResult) -> tuple[TurnStatus, str | None]:
    """The stored status and error code of a turn whose answer stage returned ``result``."""
    if result.chat_ok:
        status: TurnStatus = "completed"
    else:
        status = "interrupted" if result.text else "failed"
    code: str | None = None
    if result.error is not None:
        code = getattr(result.error, "code", None) or str(error_code_for(result.error))
    return status, code


def _duration(data: bytes | bytearray, info: AudioFormatInfo | None) -> float:
    if info is None:
        return 0.0
    try:
        return round(audio_duration(bytes(data), info), 3)
    except (UnknownAudioFormat, ValueError):
        return 0.0


def _filename(stored: StoredObject | None) -> str:
    return posixpath.basename(stored.key) if stored else ""


# ---------------------------------------------------------------------------------------------------- audio


class AudioTurn(_Turn):
    """One utterance on ``/v1/chat/audio``: its audio arrives with :meth:`feed` while the turn already runs.

    The caller (the connection's runner) feeds the bytes the session machine releases, in order, then calls
    :meth:`complete`; both wait while the recogniser is slower than the client (backpressure on the reader).
    """

    channel = "audio"

    def __init__(
        self,
        deps: TurnDeps,
        session: SessionInfo,
        memory: ConversationMemory,
        turn_id: int,
        emit: Emit,
        *,
        flushed: Callable[[], Awaitable[None]] | None = None,
        speech_ended: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(deps, session, memory, turn_id, emit, flushed=flushed)
        # Open-microphone uploads: the VAD watches the upload and calls this once the speech ended.
        self._speech_ended = speech_ended
        self._watch: SpeechEndWatch | None = None
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=self._cfg.audio_queue)
        self._upload = bytearray()
        self._packets = 0
        self._head = asyncio.Event()  # enough bytes to tell the format (or the whole upload)
        self._complete = asyncio.Event()
        self._format_decided = asyncio.Event()
        self._format: AudioFormatInfo | None = None
        self._deadline: asyncio.Timeout | None = None
        self._closed = False
        self._transcript: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def feed(self, data: bytes) -> None:
        """The next bytes of the upload, in order (dropped once the turn has ended)."""
        if not self._closed:
            await self._inbox.put(data)

    async def complete(self, size: int, packets: int) -> None:
        """The upload is complete (``size`` bytes in ``packets`` packets)."""
        self._packets = packets
        if not self._closed:
            await self._inbox.put(None)

    def close_inbox(self) -> None:
        """The turn has ended: later feeds are dropped, and a feed waiting for room returns."""
        self._closed = True
        while not self._inbox.empty():
            self._inbox.get_nowait()

    def _release(self) -> None:
        super()._release()
        self._upload = bytearray()

    async def _body(self) -> None:
        to_recogniser = _Chunks(self._cfg.audio_queue)
        p = self._p
        answer: asyncio.Task[AnswerResult] | None = None
        # The answer's events also wait for transcription_started (which waits for the stored upload's URL).
        gate, after_chat_started = self._held_answer_events()

        async with asyncio.TaskGroup() as group:
            group.create_task(self._memory.load(), name="turn-history")
            group.create_task(self._receive(to_recogniser), name="turn-upload")
            store = group.create_task(self._store_upload(), name="turn-store")
            group.create_task(self._recognise(to_recogniser, store), name="turn-recognise")
            transcript = await self._transcript
            duration = _duration(self._upload, self._format)
            if transcript is not None:
                p.audio_seconds = duration
            too_long = self._too_long(duration) if transcript else None
            if too_long is not None:
                transcript = None
            p.transcript = transcript or None
            if transcript:
                answer = group.create_task(
                    self._answer(
                        self._deps.chat,
                        self._cfg.chat_model,
                        transcript,
                        lambda chunk, full: ChatChunk(
                            chunk=chunk, full_response=full, turn_id=self.turn_id
                        ),
                        emit=after_chat_started,
                    ),
                    name="turn-answer",
                )
            await store
            if too_long is not None:
                await self._emit(too_long)
            if transcript:
                await self._emit(
                    ChatStarted(
                        message=MSG_CHAT_STARTED, user_message=transcript, turn_id=self.turn_id
                    )
                )
            else:
                await self._emit(ChatStarted(message=MSG_CHAT_SKIPPED, turn_id=self.turn_id))
            gate.set()
        result: AnswerResult | None = answer.result() if answer is not None else None
        db_saved = False
        if result is not None:
            db_saved = await self._save(result)
            await self._emit(
                ChatTtsComplete(
                    message=MSG_CHAT_TTS_COMPLETE,
                    assistant_response=result.text,
                    tts_success=result.spoken,
                    segments_count=result.segments_sent,
                    total_segments=result.segments_total,
                    db_saved=db_saved,
                    turn_id=self.turn_id,
                    timings=self._timings(result),
                )
            )
        stored = p.stored_audio
        await self._emit(
            AudioComplete(
                message=MSG_AUDIO_COMPLETE,
                filename=_filename(stored),
                filepath=stored.key if stored else "",
                size=len(self._upload),
                packets=self._packets,
                duration=duration,
                oss_uploaded=stored is not None,
                oss_url=stored.url if stored else None,
                transcription_success=bool(transcript),
                transcription_text=transcript or "",
                chat_success=bool(result and result.chat_ok),
                assistant_response=result.text if result else "",
                tts_success=bool(result and result.spoken),
                turn_id=self.turn_id,
                timings=self._timings(result),
            )
        )

    async def _receive(self, to_recogniser: _Chunks) -> None:
        """Take the upload as it arrives: keep it, and pass it on to the recogniser stage."""
        while (chunk := await self._inbox.get()) is not None:
            self._upload += chunk
            if len(self._upload) >= SNIFF_BYTES:
                self._head.set()
            if self._speech_ended is not None:
                self._watch_speech(chunk)
            await to_recogniser.put(chunk)
        self._p.completed_at = self._clock()
        self._head.set()
        self._complete.set()
        if self._deadline is not None:
            # From now on the recogniser only has to finish: bound that.
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._cfg.read_timeout)
        await to_recogniser.put(None)

    def _watch_speech(self, chunk: bytes) -> None:
        """Open microphone: run the VAD over the upload (from its first :data:`SNIFF_BYTES` on)."""
        watch = self._watch
        if watch is None:
            if len(self._upload) < SNIFF_BYTES:
                return
            try:
                info = sniff(self._upload[:SNIFF_BYTES], self._session.declared_format)
                watch = self._watch = SpeechEndWatch(info, self._session.device.silence_ms)
            except UnknownAudioFormat:
                self._speech_ended = None  # the recogniser's path reports it
                return
            chunk = bytes(self._upload)
        if watch.feed(chunk) and self._speech_ended is not None:
            log.info(
                "end of speech heard",
                extra={"fields": {"turn_id": self.turn_id, "at_ms": watch.ended_at_ms}},
            )
            self._speech_ended()

    async def _store_upload(self) -> None:
        """Once the upload is complete (and its format known), store it and send ``transcription_started``."""
        await self._complete.wait()
        await self._format_decided.wait()
        if self._format is None:
            return
        await self._store_question_audio(bytes(self._upload), _AUDIO_EXT[self._format.format])

    async def _recognise(self, to_recogniser: _Chunks, store: asyncio.Task[None]) -> str | None:
        """The transcript ("" when nothing was heard), or None after an ``error`` event.

        Whatever happens, the rest of the upload is then taken from ``to_recogniser`` (so that it is still
        received, stored and acknowledged); a cancellation ends at once.
        """
        await self._head.wait()
        try:
            self._format = sniff(self._upload[:SNIFF_BYTES], self._session.declared_format)
        except UnknownAudioFormat as exc:
            await self._emit(
                ErrorEvent(message=exc.message, code=error_code(exc.code), turn_id=self.turn_id)
            )
            transcript = None
        else:
            if self._deps.recognizer.streaming:
                transcript = await self._recognise_stream(self._format, to_recogniser)
            else:
                await to_recogniser.drain()
                self._format_decided.set()
                await store
                transcript = await self._recognise_file(self._p.stored_audio)
        finally:
            self._format_decided.set()
        await to_recogniser.drain()
        self._publish(transcript)
        return transcript

    def _publish(self, transcript: str | None) -> None:
        """The transcript is known: the answer may start (the recogniser may still be closing)."""
        if self._transcript.done():
            return
        if transcript is not None:
            self._p.transcript_at = self._clock()
        self._transcript.set_result(transcript)

    async def _recognise_stream(self, info: AudioFormatInfo, to_recogniser: _Chunks) -> str | None:
        recognizer = self._deps.recognizer
        fmt, rate, decoder = _recogniser_input(recognizer, info)
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                if self._complete.is_set():
                    deadline.reschedule(asyncio.get_running_loop().time() + self._cfg.read_timeout)
                async with (
                    recognizer.session(
                        format=fmt, sample_rate=rate, api_key=self._session.api_key
                    ) as rec,
                    asyncio.TaskGroup() as group,
                ):
                    group.create_task(
                        _feed(rec, to_recogniser, decoder), name="turn-recognise-feed"
                    )
                    transcript = await self._collect(rec)
                    self._publish(transcript)  # before the upstream's closing handshake
                    return transcript
        except* UndecodableAudio as eg:
            await self._emit(_undecodable_event(eg.exceptions[0], self.turn_id))
            forget_frames(eg)
        except* (UpstreamError, TimeoutError) as eg:
            await self._emit(upstream_error_event("recognition", eg.exceptions[0], self.turn_id))
            forget_frames(eg)
        finally:
            self._deadline = None
        return None


class _Chunks:
    """A bounded, ordered stream of upload chunks ending with an end marker (the upload's completion)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=maxsize)
        self.ended = False

    async def put(self, chunk: bytes | None) -> None:
        await self._queue.put(chunk)

    async def get(self) -> bytes | None:
        """The next chunk, or None at the end (and from then on)."""
        if self.ended:
            return None
        chunk = await self._queue.get()
        self.ended = chunk is None
        return chunk

    async def drain(self) -> None:
        """Take (and drop) the rest, up to the end marker."""
        while await self.get() is not None:
            pass


def _recogniser_input(
    recognizer: Recognizer, info: AudioFormatInfo
) -> tuple[AudioFormat, int, PcmDecoder | None]:
    """The format and rate the recogniser is told, and the decoder that makes the upload so (None: as it is)."""
    pcm_rate = plan(info, recognizer.accepts)
    if pcm_rate is None:
        return info.format, info.sample_rate or 16000, None
    return "pcm", pcm_rate, PcmDecoder(info, pcm_rate)


def _undecodable_event(exc: BaseException, turn_id: int) -> ErrorEvent:
    assert isinstance(exc, UndecodableAudio)
    return ErrorEvent(message=exc.message, code=error_code(exc.code), turn_id=turn_id)


async def _feed(
    rec: RecognitionSession, chunks: _Chunks, decoder: PcmDecoder | None = None
) -> None:
    """The upload's chunks to the recogniser, decoded on the way when ``decoder`` is given."""
    while (chunk := await chunks.get()) is not None:
        data = decoder.feed(chunk) if decoder is not None else chunk
        if data:
            await rec.feed(data)
    if decoder is not None and (rest := await decoder.finish_async()):
        await rec.feed(rest)
    await rec.finish()


# ---------------------------------------------------------------------------------------------------- VLM


class VlmTurn(_Turn):
    """One question about an image on ``/v1/chat/vlm``; both uploads are complete when it starts."""

    channel = "vlm"

    def __init__(
        self,
        deps: TurnDeps,
        session: SessionInfo,
        memory: ConversationMemory,
        turn_id: int,
        emit: Emit,
        *,
        audio: bytes,
        image: bytes,
        flushed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(deps, session, memory, turn_id, emit, flushed=flushed)
        self._audio = audio
        self._image = image

    def _release(self) -> None:
        super()._release()
        self._audio = self._image = b""

    async def _body(self) -> None:
        p = self._p
        p.completed_at = self._clock()
        info, image_format = await self._formats()
        transcript: str | None = None
        answer: asyncio.Task[AnswerResult] | None = None
        gate, after_chat_started = self._held_answer_events()

        duration = _duration(self._audio, info)
        if info is not None and image_format is not None:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._memory.load(), name="turn-history")
                audio_stored = group.create_task(
                    self._store_question_audio(self._audio, _AUDIO_EXT[info.format]),
                    name="turn-store",
                )
                image_stored = group.create_task(
                    self._store("image", self._image, image_format.ext), name="turn-store-image"
                )
                # Recognition runs while the uploads are stored (a file recogniser needs the stored file).
                transcript = await self._recognise_bytes(info, audio_stored)
                if transcript is not None:
                    p.transcript_at = self._clock()
                    p.audio_seconds = duration
                too_long = self._too_long(duration) if transcript else None
                if too_long is not None:
                    transcript = None
                p.transcript = transcript or None
                if transcript:
                    answer = group.create_task(
                        self._vlm_answer(
                            transcript, image_format, image_stored, after_chat_started
                        ),
                        name="turn-answer",
                    )
                await audio_stored
                p.stored_image = await image_stored
                if too_long is not None:
                    await self._emit(too_long)
                elif transcript == "":
                    await self._emit(
                        ErrorEvent(
                            message=MSG_CHAT_SKIPPED,
                            code=error_code("empty_transcript"),
                            turn_id=self.turn_id,
                        )
                    )
                if transcript:
                    await self._emit(
                        VlmChatStarted(
                            message=MSG_VLM_CHAT_STARTED,
                            user_message=transcript,
                            image_url=p.stored_image.url if p.stored_image else "",
                            turn_id=self.turn_id,
                        )
                    )
                gate.set()
        result: AnswerResult | None = answer.result() if answer is not None else None
        if result is not None and transcript:
            await self._save(result)
            await self._emit(
                VlmChatTtsComplete(
                    message=MSG_VLM_CHAT_TTS_COMPLETE,
                    user_message=transcript,
                    assistant_response=result.text,
                    audio_chunks=result.audio_chunks,
                    turn_id=self.turn_id,
                    timings=self._timings(result),
                )
            )
        await self._emit(
            VlmComplete(
                message=MSG_VLM_COMPLETE,
                audio_file=_filename(p.stored_audio),
                image_file=_filename(p.stored_image),
                audio_size=len(self._audio),
                image_size=len(self._image),
                duration=duration,
                transcription=transcript or "",
                vlm_response=result.text if result else "",
                turn_id=self.turn_id,
                timings=self._timings(result),
            )
        )

    async def _vlm_answer(
        self,
        transcript: str,
        image_format: ImageFormat,
        image_stored: asyncio.Task[StoredObject | None],
        emit: Emit,
    ) -> AnswerResult:
        if self._deps.objects.engine == "oss":
            stored = await image_stored  # the model fetches the image from the bucket
            image_ref = stored.url if stored else None
        else:
            image_ref = None
        if image_ref is None:
            encoded = base64.b64encode(self._image).decode("ascii")
            image_ref = f"data:{image_format.mime};base64,{encoded}"
        content = [
            {"type": "image_url", "image_url": {"url": image_ref}},
            {"type": "text", "text": transcript},
        ]
        return await self._answer(
            self._deps.vlm,
            self._cfg.vlm_model,
            content,
            lambda chunk, full: VlmChatChunk(chunk=chunk, full_response=full, turn_id=self.turn_id),
            emit=emit,
        )

    async def _formats(self) -> tuple[AudioFormatInfo | None, ImageFormat | None]:
        """The audio and image formats; an ``error`` event for the first that is not accepted."""
        try:
            info = sniff(self._audio[:SNIFF_BYTES], self._session.declared_format)
        except UnknownAudioFormat as exc:
            await self._emit(
                ErrorEvent(message=exc.message, code=error_code(exc.code), turn_id=self.turn_id)
            )
            return None, None
        try:
            image_format = sniff_image(self._image)
        except UnknownImageFormat as exc:
            await self._emit(
                ErrorEvent(message=str(exc), code=error_code(exc.code), turn_id=self.turn_id)
            )
            return info, None
        return info, image_format

    async def _recognise_bytes(
        self, info: AudioFormatInfo, audio_stored: asyncio.Task[None]
    ) -> str | None:
        recognizer = self._deps.recognizer
        if not recognizer.streaming:
            await audio_stored
            return await self._recognise_file(self._p.stored_audio)
        fmt, rate, decoder = _recogniser_input(recognizer, info)
        try:
            async with asyncio.timeout(self._cfg.read_timeout):
                async with (
                    recognizer.session(
                        format=fmt, sample_rate=rate, api_key=self._session.api_key
                    ) as rec,
                    asyncio.TaskGroup() as group,
                ):
                    group.create_task(
                        _feed_all(rec, self._audio, decoder), name="turn-recognise-feed"
                    )
                    return await self._collect(rec)
        except* UndecodableAudio as eg:
            await self._emit(_undecodable_event(eg.exceptions[0], self.turn_id))
            forget_frames(eg)
        except* (UpstreamError, TimeoutError) as eg:
            await self._emit(upstream_error_event("recognition", eg.exceptions[0], self.turn_id))
            forget_frames(eg)
        return None


async def _feed_all(rec: RecognitionSession, audio: bytes, decoder: PcmDecoder | None) -> None:
    step = 32 * 1024
    for start in range(0, len(audio), step):
        piece = audio[start : start + step]
        data = decoder.feed(piece) if decoder is not None else piece
        if data:
            await rec.feed(data)
    if decoder is not None and (rest := await decoder.finish_async()):
        await rec.feed(rest)
    await rec.finish()
