"""The cascaded backend of ``/v1/realtime``: one connection's session, read top to bottom as a line of stages.

::

    client frames --decode--> [handlers: one per client event type, in _HANDLERS]
    input_audio_buffer.append --> InputAudio (to 16 kHz pcm16, server VAD, prefix padding)
        speech_started --> Utterance: a streaming recognition session opened at once, fed the padding and the
                           speech while it arrives (bounded queue) --> transcription deltas
                           (barge-in: a running response is cancelled first, when interrupt_response)
        speech_stopped --> committed, conversation.item.added (user) --> the transcript completes
                           --> conversation.item.done --> a response (create_response)
    input_audio_buffer.commit (manual mode) --> the buffer becomes an Utterance the same way
    response.create --> ResponseRun (see .response): waits for the transcripts it needs, then chat -> TTS
                        -> events; response.done; a history row (channel realtime) through the outbox

Everything the session starts runs in the connection's task group (:class:`~qwen_gateway.ws.WsConnection`):
the client leaving cancels it all and closes every upstream. The reader hands audio to a recognition session
through a bounded queue, so a recogniser slower than the client slows the client's frames down (nothing is
dropped). Each upstream wait has a deadline owned by the code that waits: a recognition's results after its
audio ended (``read_timeout``), the answer stage's own reads, the closing events of a cancelled response
(``cleanup_timeout``).

The stages live in small modules: :mod:`.listen` (the input buffer and VAD), :mod:`.utterance` (one utterance's
recognition), :mod:`.response` (one response and its events), :mod:`.ledger` (quotas, history rows, metrics: the
voice endpoints' books, with the ``realtime`` label). This module is the session that joins them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from protocol import realtime as rt
from protocol.realtime_session import Conversation, SessionState, item_text

from ..errors import UpstreamError
from ..lifecycle import Lifecycle
from ..metrics import Metrics
from ..providers.base import RecognitionResult, Recognizer
from ..providers.dashscope.catalogue import CatalogueError
from ..quota import Limits as QuotaLimits
from ..quota import Quotas, Refusal
from ..storage.history import HistoryStore
from ..storage.outbox import Outbox
from ..voice.convert import InputConverter
from ..voice.memory import ConversationMemory
from ..voice.turn import SessionInfo
from ..ws import WsConnection
from .audio import wire_of
from .ledger import Ledger
from .listen import Audio, BufferFull, InputAudio, Started, Stopped
from .response import ResponseDeps, ResponseRun, model_not_found
from .utterance import (
    RECOGNITION_RATE,
    Utterance,
    recognise,
    recogniser_rate,
    with_transcript,
)

__all__ = ["RECOGNITION_RATE", "CascadeConfig", "CascadeSession"]

log = logging.getLogger("qwen_gateway.realtime.cascade")

#: Largest piece of buffered audio handed to the recogniser at once (manual commits).
_FEED_BYTES = 32 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CascadeConfig:
    """What a cascade session uses (built by the route from the app's services).

    Attributes:
        response: the engines and tuning of the answer stage.
        recognizer_for: the recogniser of a catalogue model (None: the configured one); raises CatalogueError.
        outbox: where the history rows go.
        read_timeout: the longest wait for a recognition's results after its audio ended.
        cleanup_timeout: the longest the closing events of a cancelled response may take.
        max_audio_seconds: the longest utterance (server VAD commits it there) or manual buffer.
        max_frame_bytes: the largest client frame.
        system_prompt: the instructions of a new session.
        max_turns: responses one connection may have (``QG_MAX_TURNS``); beyond: ``too_many_turns``, close 1008.
        history / history_turns / history_tokens: a resumed conversation (``?conversation_id=``) starts with
            its recent turns as items (the chat context budget of the voice endpoints).
    """

    response: ResponseDeps
    recognizer_for: Callable[[str | None], Recognizer]
    outbox: Outbox | None
    read_timeout: float = 60.0
    cleanup_timeout: float = 5.0
    max_audio_seconds: float = 300.0
    max_frame_bytes: int = 1024 * 1024
    system_prompt: str = ""
    max_turns: int = 200
    history: HistoryStore | None = None
    history_turns: int = 10
    history_tokens: int = 4000


# ---------------------------------------------------------------------------------------------- the session


@dataclass(slots=True)
class _Active:
    """The response running now."""

    run: ResponseRun
    task: asyncio.Task[None]
    cancel_reason: Literal["turn_detected", "client_cancelled"] | None = None
    first_audio_at: float | None = None
    #: why the response is cut short when the connection itself ends (stored as the row's error code)
    end_code: str = "client_gone"
    #: the answer has ended and its closing events are being sent: nothing left to cancel
    closing: bool = False


class CascadeSession:
    """One ``/v1/realtime`` connection on the cascade (see the module docstring)."""

    def __init__(
        self,
        conn: WsConnection,
        config: CascadeConfig,
        info: SessionInfo,
        *,
        model: str,
        quotas: Quotas | None = None,
        quota_limits: QuotaLimits | None = None,
        metrics: Metrics | None = None,
        lifecycle: Lifecycle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conn = conn
        self._cfg = config
        self._info = info
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._clock = clock
        self._ledger = Ledger(
            info,
            quotas=quotas,
            quota_limits=quota_limits or QuotaLimits(),
            metrics=metrics,
            outbox=config.outbox,
            clock=clock,
        )
        prefix = info.session_id.replace("-", "")[:12]
        self.state = SessionState(
            id=f"sess_{prefix}", model=model, instructions=config.system_prompt
        )
        self.conversation = Conversation(prefix)
        self._limits = rt.RealtimeLimits(max_frame_bytes=config.max_frame_bytes)
        self._input = InputAudio(
            wire_of(self.state.input_format),
            self.state.turn_detection,
            rate=RECOGNITION_RATE,
            max_ms=int(config.max_audio_seconds * 1000),
        )
        self._recognizer = config.recognizer_for(None)
        self._utterance: Utterance | None = None  # the one receiving audio now (VAD mode)
        self._pending: list[Utterance] = []  # committed, transcript not known yet
        self._active: _Active | None = None
        self._turns = 0
        self._events = 0
        self._last_user_text = ""

    # ------------------------------------------------------------------ sending
    async def send(self, events: Any) -> None:
        """Queue one server event, or a list of them in order (waits while the client is slow)."""
        if events is None:
            return
        for event in events if isinstance(events, list) else (events,):
            self._events += 1
            await self._conn.send(rt.encode_server_event(event, f"event_{self._events}"))
            if isinstance(event, rt.ResponseOutputAudioDelta):
                active = self._active
                if active is not None and active.first_audio_at is None:
                    active.first_audio_at = 0.0  # marked; the writer sets the time
                    await self._conn.after_sent(self._audio_sent)
            elif isinstance(event, rt.RealtimeErrorEvent) and self._metrics is not None:
                self._metrics.error("ws", event.error.code or "error")

    async def error(self, error: rt.RealtimeError) -> None:
        await self.send(rt.error_event(error))

    # ------------------------------------------------------------------ the connection's callbacks
    async def on_open(self) -> None:
        """A resumed conversation's recent turns; ``session.created``; the drain watch."""
        if self._lifecycle is not None:
            self._conn.spawn(self._drain_watch(self._lifecycle), name="realtime-drain")
        await self._resume()
        await self.send(rt.SessionCreated(session=self.state.view()))

    async def _resume(self) -> None:
        """A conversation the client named (``?conversation_id=``) goes on: its recent turns (the caller's own,
        within the voice endpoints' context budget) become the first items, without events."""
        info, cfg = self._info, self._cfg
        if cfg.history is None or info.conversation_id == f"conv-{info.session_id}":
            return
        memory = ConversationMemory(
            cfg.history,
            info.conversation_id,
            owner=info.owner,
            max_turns=cfg.history_turns,
            max_tokens=cfg.history_tokens,
        )
        for message in await memory.context():
            part = rt.ContentPart(
                type="input_text" if message["role"] == "user" else "output_text",
                text=message["content"],
            )
            self.conversation.add(rt.MessageItem(role=message["role"], content=[part]))  # type: ignore[arg-type]
            if message["role"] == "user":
                self._last_user_text = message["content"]

    async def on_frame(self, frame: str | bytes) -> None:
        """Decode one client frame and handle it; a bad one gets an ``error`` event, the connection stays."""
        if self._conn.closing:
            return
        event = rt.decode_client_event(frame, self._limits)
        if isinstance(event, rt.RealtimeError):
            await self.error(event)
            return
        handler = _HANDLERS[type(event)]
        refused = await handler(self, event)
        if refused is not None:
            await self.error(refused.with_event(event.event_id))

    # ------------------------------------------------------------------ session.update
    async def _session_update(self, event: rt.SessionUpdate) -> rt.RealtimeError | None:
        state = self.state.apply(event.session)
        if isinstance(state, rt.RealtimeError):
            return state
        if state.transcription_model != self.state.transcription_model:
            try:
                recognizer = self._cfg.recognizer_for(state.transcription_model)
            except CatalogueError as exc:
                return rt.RealtimeError(
                    "invalid_value", str(exc), param="session.audio.input.transcription.model"
                )
            if not recognizer.streaming or recogniser_rate(recognizer) is None:
                return rt.RealtimeError(
                    "invalid_value",
                    f"{recognizer.model} does not recognise a live stream of 8 or 16 kHz PCM "
                    "(a file-recognition model?): choose a streaming model",
                    param="session.audio.input.transcription.model",
                )
            self._recognizer = recognizer
        if state.turn_detection != self.state.turn_detection and self._utterance is not None:
            await self._commit_utterance()  # the speech so far becomes an item
        self.state = state
        self._input.reconfigure(wire_of(state.input_format), state.turn_detection)
        await self.send(rt.SessionUpdated(session=state.view()))
        return None

    # ------------------------------------------------------------------ input audio
    async def _append(self, event: rt.InputAudioBufferAppend) -> rt.RealtimeError | None:
        try:
            steps = self._input.feed(event.audio)
        except BufferFull as exc:
            return rt.RealtimeError("input_audio_buffer_full", str(exc), param="audio")
        for step in steps:
            if isinstance(step, Started):
                await self._speech_started(step)
            elif isinstance(step, Audio):
                if self._utterance is not None:
                    await self._utterance.put(step.audio)
            elif isinstance(step, Stopped):
                await self._speech_stopped(step.audio_end_ms)
        utterance = self._utterance
        if utterance is not None and self._input.utterance_ms > self._input.max_ms:
            # longer than an utterance may be: what was said so far becomes an item
            await self._speech_stopped(self._input.position_ms)
            self._input.reset()
        return None

    async def _speech_started(self, step: Started) -> None:
        item_id = self.conversation.new_id()
        utterance = self._new_utterance(item_id)
        self._utterance = utterance
        await self.send(
            rt.InputAudioBufferSpeechStarted(audio_start_ms=step.audio_start_ms, item_id=item_id)
        )
        vad = self.state.turn_detection
        if self._active is not None and vad is not None and vad.interrupt_response:
            await self._cancel_response("turn_detected")  # barge-in
        await utterance.put(step.audio)

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        utterance = self._utterance
        if utterance is None:
            return
        await self.send(
            rt.InputAudioBufferSpeechStopped(audio_end_ms=audio_end_ms, item_id=utterance.item_id)
        )
        await self._commit_utterance()
        vad = self.state.turn_detection
        if vad is not None and vad.create_response:
            self._start_response(rt.ResponseParams(), wait_for=[utterance], skip_if_silent=True)

    async def _commit_utterance(self) -> None:
        """The audio of the current utterance is complete: commit it as a user item."""
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            return
        await self._committed(utterance)
        await utterance.put(None)

    async def _committed(self, utterance: Utterance) -> None:
        item = rt.MessageItem(
            role="user",
            content=[rt.ContentPart(type="input_audio", transcript=None)],
            id=utterance.item_id,
        )
        added = self.conversation.add(item)
        assert not isinstance(added, rt.RealtimeError)
        stored, previous = added
        utterance.committed = True
        utterance.committed_at = self._clock()
        utterance.extend_deadline()  # from now on the recogniser only has to finish
        self._pending.append(utterance)
        await self.send(
            [
                rt.InputAudioBufferCommitted(item_id=utterance.item_id, previous_item_id=previous),
                rt.ConversationItemAdded(item=stored, previous_item_id=previous),
            ]
        )
        if utterance.text_so_far:
            await self._transcript_delta(utterance)

    async def _commit(self, event: rt.InputAudioBufferCommit) -> rt.RealtimeError | None:
        if self._utterance is not None:  # server VAD, speech in progress: commit it now
            await self._commit_utterance()
            self._input.reset()
            return None
        if self.state.turn_detection is not None or self._input.buffered_ms == 0:
            return rt.RealtimeError(
                "input_audio_buffer_commit_empty",
                "the input audio buffer is empty: nothing to commit",
            )
        audio = self._input.take()
        utterance = self._new_utterance(self.conversation.new_id())
        await self._committed(utterance)
        for start in range(0, len(audio), _FEED_BYTES):
            await utterance.put(audio[start : start + _FEED_BYTES])
        await utterance.put(None)
        return None

    async def _clear(self, event: rt.InputAudioBufferClear) -> rt.RealtimeError | None:
        utterance, self._utterance = self._utterance, None
        if utterance is not None and utterance.task is not None:
            utterance.task.cancel()
            utterance.settle(None)
        self._input.clear()
        await self.send(rt.InputAudioBufferCleared())
        return None

    # ------------------------------------------------------------------ recognition
    def _new_utterance(self, item_id: str) -> Utterance:
        """An utterance whose recognition starts now (the session opens while the user still speaks)."""
        utterance = Utterance.new(item_id, self._cfg.read_timeout)
        utterance.task = self._conn.spawn(
            self._recognise(utterance, self._recognizer), name=f"realtime-asr-{item_id}"
        )
        return utterance

    async def _recognise(self, utterance: Utterance, recognizer: Recognizer) -> None:
        """Recognise the utterance while its audio arrives; send its transcript; settle its future."""

        async def update(text: str, result: RecognitionResult) -> None:
            utterance.text_so_far = text
            if utterance.committed:
                await self._transcript_delta(utterance)

        transcript, failure = await recognise(
            utterance, recognizer, api_key=self._info.api_key, on_update=update
        )
        utterance.transcript_at = self._clock()
        self._ledger.heard(utterance)
        if not utterance.committed:  # cleared, or the session is ending
            utterance.settle(None)
            return
        await self._transcribed(utterance, transcript, failure)

    async def _transcript_delta(self, utterance: Utterance) -> None:
        delta = utterance.delta()
        if delta:
            await self.send(
                rt.InputAudioTranscriptionDelta(
                    item_id=utterance.item_id, content_index=0, delta=delta
                )
            )

    async def _transcribed(
        self, utterance: Utterance, transcript: str | None, failure: BaseException | None
    ) -> None:
        if utterance in self._pending:
            self._pending.remove(utterance)
        item = with_transcript(self.conversation.get(utterance.item_id), transcript)
        events: list[Any] = []
        if failure is not None:
            detail = failure.message if isinstance(failure, UpstreamError) else "no result in time"
            events.append(
                rt.InputAudioTranscriptionFailed(
                    item_id=utterance.item_id,
                    content_index=0,
                    error=rt.ErrorDetail(
                        type="server_error",
                        code="upstream_error",
                        message=f"recognition failed: {detail}",
                    ),
                )
            )
        else:
            events.append(
                rt.InputAudioTranscriptionCompleted(
                    item_id=utterance.item_id,
                    content_index=0,
                    transcript=transcript or "",
                    usage=rt.TranscriptionUsage(seconds=utterance.seconds),
                )
            )
        if item is not None:  # (not deleted meanwhile)
            self.conversation.update(item)
            events.append(
                rt.ConversationItemDone(
                    item=item, previous_item_id=self.conversation.previous_id(utterance.item_id)
                )
            )
            if transcript:
                self._last_user_text = transcript
        await self.send(events)
        utterance.settle(transcript)

    # ------------------------------------------------------------------ conversation items
    async def _item_create(self, event: rt.ConversationItemCreate) -> rt.RealtimeError | None:
        item = event.item
        audio = b""
        if isinstance(item, rt.MessageItem):
            parts: list[rt.ContentPart] = []
            for p in item.content:
                if item.role == "assistant" and p.type in ("text", "audio"):
                    p = msgspec.structs.replace(p, type="output_" + p.type)  # beta names
                if p.type == "input_audio" and isinstance(p.audio, str) and p.audio:
                    if not isinstance(p.transcript, str) or not p.transcript:
                        try:
                            audio += base64.b64decode(p.audio, validate=True)
                        except binascii.Error:
                            return rt.RealtimeError(
                                "invalid_base64",
                                "the audio of an input_audio part is not base64",
                                param="item.content",
                            )
                    p = msgspec.structs.replace(p, audio=msgspec.UNSET)  # not kept, not echoed
                parts.append(p)
            item = msgspec.structs.replace(item, content=parts)
        added = self.conversation.add(item, event.previous_item_id)
        if isinstance(added, rt.RealtimeError):
            return added
        stored, previous = added
        if audio:
            # user audio in an item: recognised like a committed buffer, its transcript in .completed
            await self.send(rt.ConversationItemAdded(item=stored, previous_item_id=previous))
            await self._recognise_item(str(stored.id), audio)
            return None
        if isinstance(stored, rt.MessageItem) and stored.role == "user":
            self._last_user_text = item_text(stored)
        await self.send(
            [
                rt.ConversationItemAdded(item=stored, previous_item_id=previous),
                rt.ConversationItemDone(item=stored, previous_item_id=previous),
            ]
        )
        return None

    async def _recognise_item(self, item_id: str, audio: bytes) -> None:
        """Recognise the audio of an item the client created (in the session's input format)."""
        converter = InputConverter(wire_of(self.state.input_format), RECOGNITION_RATE)
        pcm = converter.feed(audio) + converter.flush()
        utterance = self._new_utterance(item_id)
        utterance.committed = True
        utterance.committed_at = self._clock()
        self._pending.append(utterance)
        for start in range(0, len(pcm), _FEED_BYTES):
            await utterance.put(pcm[start : start + _FEED_BYTES])
        await utterance.put(None)

    async def _item_truncate(self, event: rt.ConversationItemTruncate) -> rt.RealtimeError | None:
        active = self._active
        message = active.run.message if active is not None else None
        if message is not None and message.item_id == event.item_id:
            await self._cancel_response("client_cancelled")  # the client stopped playing it
        item = self.conversation.truncate(event.item_id, event.content_index, event.audio_end_ms)
        if isinstance(item, rt.RealtimeError):
            return item
        await self.send(
            rt.ConversationItemTruncated(
                item_id=event.item_id,
                content_index=event.content_index,
                audio_end_ms=event.audio_end_ms,
            )
        )
        return None

    async def _item_delete(self, event: rt.ConversationItemDelete) -> rt.RealtimeError | None:
        refused = self.conversation.delete(event.item_id)
        if refused is not None:
            return refused
        await self.send(rt.ConversationItemDeleted(item_id=event.item_id))
        return None

    async def _item_retrieve(self, event: rt.ConversationItemRetrieve) -> rt.RealtimeError | None:
        item = self.conversation.get(event.item_id)
        if item is None:
            return rt.RealtimeError(
                "item_not_found", f"no item {event.item_id!r} in the conversation", param="item_id"
            )
        await self.send(rt.ConversationItemRetrieved(item=item))
        return None

    async def _image(self, event: rt.InputImageBufferAppend) -> rt.RealtimeError | None:
        return rt.RealtimeError(
            "unsupported_event",
            "input_image_buffer.append is Qwen-Omni's: the cascade takes no images "
            "(connect with an Omni realtime model)",
            param="type",
        )

    # ------------------------------------------------------------------ responses
    async def _response_create(self, event: rt.ResponseCreate) -> rt.RealtimeError | None:
        active = self._active
        if active is not None and active.closing:
            # Its response.done is out (the client may answer it at once), its bookkeeping is not: the history
            # row, the rate limits (bounded by cleanup_timeout). The new response starts after it.
            await asyncio.wait([active.task])
        if self._active is not None:
            return rt.RealtimeError(
                "conversation_already_has_active_response",
                "a response is in progress: cancel it first or wait for response.done",
            )
        if isinstance(event.response.conversation, str) and event.response.conversation == "none":
            return rt.RealtimeError(
                "invalid_value",
                "out-of-band responses (conversation: none) are not supported",
                param="response.conversation",
            )
        self._start_response(event.response, wait_for=list(self._pending))
        return None

    async def _response_cancel(self, event: rt.ResponseCancel) -> rt.RealtimeError | None:
        active = self._active
        if active is None or (
            isinstance(event.response_id, str) and event.response_id != active.run.id
        ):
            return rt.RealtimeError(
                "response_cancel_not_active", "there is no active response to cancel"
            )
        await self._cancel_response("client_cancelled")
        return None

    def _start_response(
        self,
        params: rt.ResponseParams,
        *,
        wait_for: list[Utterance],
        skip_if_silent: bool = False,
    ) -> None:
        if self._active is not None:
            return  # (server VAD with interrupt_response off: the running response goes on)
        if self._lifecycle is not None and self._lifecycle.draining:
            self._conn.spawn(self._shut_down(), name="realtime-refuse")
            return
        if self._turns >= self._cfg.max_turns:
            self._conn.spawn(self._too_many_turns(), name="realtime-refuse")
            return
        self._turns += 1
        run = ResponseRun(
            id=self.conversation.new_id("resp"),
            session=self.state,
            conversation=self.conversation,
            params=params,
            deps=self._cfg.response,
            send=self.send,
            turn_id=self._turns,
        )
        task = self._conn.spawn(
            self._respond(run, wait_for, skip_if_silent), name=f"realtime-response-{self._turns}"
        )
        self._active = _Active(run, task)

    async def _cancel_response(self, reason: Literal["turn_detected", "client_cancelled"]) -> None:
        """Stop the running response at once and wait until it has sent its ``response.done``."""
        active = self._active
        if active is None or active.task.done() or active.closing:
            return
        active.cancel_reason = reason
        if reason == "turn_detected":
            self._ledger.barge_in()
        log.info(
            "response cancelled",
            extra={"fields": {"turn_id": active.run.turn_id, "reason": reason}},
        )
        active.task.cancel()
        await asyncio.wait([active.task])
        if self._active is active:  # cancelled before it began: its own cleanup never ran
            self._active = None

    async def _respond(
        self, run: ResponseRun, wait_for: list[Utterance], skip_if_silent: bool
    ) -> None:
        """One response: the transcripts it needs, admission, the answer (cancellable at once), its closing
        events, its books."""
        active = self._active
        assert active is not None and active.run is run
        ledger = self._ledger
        slot = None
        started = False
        outcome = "failed"
        asked_at = self._clock()
        try:
            transcripts = [await u.transcript for u in wait_for]
            if skip_if_silent and not any(transcripts):
                return  # nothing was heard: no answer
            got = await ledger.admit()
            if isinstance(got, Refusal):
                await self.error(ledger.refusal(got))
                return
            slot, started = got, True
            ledger.started()
            if self._lifecycle is not None:
                self._lifecycle.turn_started()
            reason: Literal["turn_detected", "client_cancelled"] | None = None
            try:
                await run.answer()
                outcome = "completed"
            except asyncio.CancelledError:
                reason = active.cancel_reason
                if reason is None:  # the connection is going away: journal what was said, no events
                    ledger.journal_interrupted(run, active.end_code, run.heard(), **self._row())
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                outcome = "cancelled"
            active.closing = True
            async with asyncio.timeout(self._cfg.cleanup_timeout):
                response = await run.close(reason)
                if reason is not None:
                    ledger.journal_interrupted(run, reason, run.assistant_text(), **self._row())
                else:
                    await ledger.save(run, response, **self._row())
                await self.send(await ledger.rate_limits())
            if model_not_found(run.failure):
                # the session's model does not exist upstream: no response can ever succeed
                self._conn.close(1008, "unknown model")
            ledger.observe(run, asked_at, wait_for, active.first_audio_at or None)
        except TimeoutError:
            log.warning(
                "closing events of a response took too long",
                extra={"fields": {"turn_id": run.turn_id}},
            )
        finally:
            if self._active is active:
                self._active = None
            if started:
                ledger.ended(outcome)
                if self._lifecycle is not None:
                    self._lifecycle.turn_ended()
                ledger.spent(run, slot)
            run.release()
            if run.result is not None and run.result.tts_started and not self.state.spoken:
                self.state = dataclasses.replace(self.state, spoken=True)  # the voice is fixed now

    def _row(self) -> dict[str, str]:
        """What a history row takes from the session: its model, the user's last words."""
        return {"model": self.state.model, "user_text": self._last_user_text}

    def _audio_sent(self) -> None:
        active = self._active
        if active is not None:
            active.first_audio_at = self._clock()

    # ------------------------------------------------------------------ server drain
    async def _drain_watch(self, lifecycle: Lifecycle) -> None:
        """When the server drains: close at once if no response runs, else once it ended, or cut it short when
        the grace period is over (``error`` shutting_down, close 1001)."""
        await lifecycle.wait_draining()
        while (active := self._active) is not None and not lifecycle.expired:
            await lifecycle.wait_expired_or(asyncio.wait([active.task]))
        if (active := self._active) is not None:
            active.end_code = "shutting_down"
            active.task.cancel()
            await asyncio.wait([active.task])
            if self._active is active:
                self._active = None
        await self._shut_down()

    async def _too_many_turns(self) -> None:
        await self.error(
            rt.RealtimeError(
                "too_many_turns",
                f"this connection had its {self._cfg.max_turns} responses (QG_MAX_TURNS): reconnect",
            )
        )
        self._conn.close(1008, "too many turns")

    async def _shut_down(self) -> None:
        await self.error(
            rt.RealtimeError(
                "shutting_down", "the server is restarting: reconnect", type="server_error"
            )
        )
        self._conn.close(1001, "server shutting down")


_HANDLERS: dict[type[Any], Callable[[CascadeSession, Any], Any]] = {
    rt.SessionUpdate: CascadeSession._session_update,
    rt.InputAudioBufferAppend: CascadeSession._append,
    rt.InputAudioBufferCommit: CascadeSession._commit,
    rt.InputAudioBufferClear: CascadeSession._clear,
    rt.InputImageBufferAppend: CascadeSession._image,
    rt.ConversationItemCreate: CascadeSession._item_create,
    rt.ConversationItemTruncate: CascadeSession._item_truncate,
    rt.ConversationItemDelete: CascadeSession._item_delete,
    rt.ConversationItemRetrieve: CascadeSession._item_retrieve,
    rt.ResponseCreate: CascadeSession._response_create,
    rt.ResponseCancel: CascadeSession._response_cancel,
}
