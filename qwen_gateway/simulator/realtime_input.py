"""Audio input on ``/api-ws/v1/realtime``: what realtime recognition and Qwen-Omni sockets share.

A session reads the client's JSON events (``session.update``, ``input_audio_buffer.append`` / ``.commit`` /
``.clear``, ``session.finish``) and cuts the audio into user *items*: at the client's commit (``turn_detection``
``null``), or where the server's VAD hears the speech stop (``server_vad``). The VAD is a plain energy detector on
the received 16-bit PCM (20 ms frames, speech when the RMS reaches ``vad_rms``): this is a fake upstream, not a
model. Each item is recognised by the transcript registry like the task recognisers (:mod:`.transcripts`):
partials while it arrives, its text once committed.

Subclasses say what an item becomes (:meth:`RealtimeInputSession._committed`) and handle their own events
(:meth:`RealtimeInputSession._other_event`). Events are written by one writer task (:class:`~.wsconn.Writer`);
the reader never waits on the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from array import array
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar

from .asgi import Disconnected, WebSocket, dumps
from .audio import make_clock
from .faults import Fault
from .records import ConnectionRecord, RealtimeAsrSessionRecord, RealtimeItemRecord
from .state import SimulatorState
from .transcripts import RecognitionUpdate, StreamingRecognition
from .wsconn import Close, ConnectionDone, Drop, Stall, Writer, client_event, event_id

__all__ = ["STREAM_FAULTS", "RealtimeInputSession", "SessionProblem"]

STREAM_FAULTS = frozenset({"stall", "drop", "malformed", "ws_error", "idle_timeout"})

#: VAD frame length, seconds.
_FRAME = 0.02


class SessionProblem(Exception):
    """A ``session.update`` value the server refuses: ``message`` and the ``param`` it is about."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Vad:
    """Energy VAD over 16-bit mono PCM: speech starts at a loud frame, stops after ``silence_ms`` of quiet."""

    def __init__(self, sample_rate: int, level: float, silence_ms: int) -> None:
        self._frame_bytes = max(2, int(sample_rate * _FRAME) * 2)
        self._level = level
        self._silence_frames = max(1, math.ceil(silence_ms / 1000 / _FRAME))
        self._pending = bytearray()
        self._quiet = 0
        self.speaking = False
        self.frames = 0

    def feed(self, pcm: bytes) -> list[tuple[str, int, int]]:
        """Account for ``pcm``; returns ``(event, ms, byte offset in the input)`` for each start/stop found."""
        out: list[tuple[str, int, int]] = []
        start_len = len(self._pending)
        self._pending += pcm
        size = self._frame_bytes
        used = 0
        while len(self._pending) - used >= size:
            frame = array("h")
            frame.frombytes(bytes(self._pending[used : used + size]))
            used += size
            self.frames += 1
            rms = math.sqrt(sum(x * x for x in frame) / len(frame))
            ms = round(self.frames * _FRAME * 1000)
            offset = max(0, used - start_len)
            if rms >= self._level:
                self._quiet = 0
                if not self.speaking:
                    self.speaking = True
                    out.append(("speech_started", ms - round(_FRAME * 1000), offset))
            elif self.speaking:
                self._quiet += 1
                if self._quiet >= self._silence_frames:
                    self.speaking = False
                    self._quiet = 0
                    out.append(("speech_stopped", ms, offset))
        del self._pending[:used]
        return out


class _Item:
    """The user audio since the last commit, recognised while it arrives."""

    def __init__(self, session: RealtimeInputSession) -> None:
        self.id = event_id("item_")
        self.audio = bytearray()
        cfg = session.state.config
        self.recognition = StreamingRecognition(
            session.state.registry,
            make_clock(session.audio_format, session.sample_rate),
            default_text=cfg.asr_default_text,
            format=session.audio_format,
            sample_rate=session.sample_rate,
            chars_per_second=cfg.asr_chars_per_second,
            silence=cfg.asr_sentence_silence,
        )
        self.finals: list[str] = []
        #: speech was heard in it (always, without VAD): only then is it recognised aloud and committed at the end
        self.voiced = session.vad is None

    def text_of(self, updates: list[RecognitionUpdate]) -> tuple[str, str] | None:
        """After ``updates``: the item's stable text and its stash (the last word, still being revised)."""
        if not updates:
            return None
        partial: RecognitionUpdate | None = None
        for update in updates:
            if update.final:
                self.finals.append(update.text)
                partial = None
            else:
                partial = update
        text, stash = "", ""
        if partial is not None:
            text = partial.text
            last = partial.sentence.words[partial.nwords - 1]
            stash = (last.text + last.punctuation).strip()
            if stash and text.endswith(stash):
                text = text[: len(text) - len(stash)]
            else:
                stash = ""
        return "".join(self.finals) + text, stash


class RealtimeInputSession:
    """One socket: the client's events in, the server's events out through the writer."""

    #: Record kind (``sim.log.<kind>_sessions``) and fault endpoint.
    kind: ClassVar[str] = "realtime_asr"
    #: ``input_audio_format`` values taken (``pcm16`` is the SDK's default spelling of ``pcm``).
    formats: ClassVar[Mapping[str, str]] = {"pcm": "pcm", "pcm16": "pcm", "opus": "opus"}
    rates: ClassVar[frozenset[int]] = frozenset({16000, 8000})

    def __init__(
        self,
        state: SimulatorState,
        ws: WebSocket,
        *,
        model: str,
        conn: ConnectionRecord,
        session: dict[str, Any],
    ) -> None:
        self.state = state
        self.cfg = state.config
        self.ws = ws
        self.model = model
        self.writer = Writer(ws)
        self.session = session
        self.rec = RealtimeAsrSessionRecord(session["id"], conn, model, dict(session))
        self.faults: dict[str, Fault] = {}
        self.item: _Item | None = None
        self.vad: _Vad | None = None
        self.audio_started = False
        self.finishing = False
        self.closing = False
        self.sent = 0  # events counted for fault positions
        self.previous_item: str | None = None

    # ------------------------------------------------------------------ session values
    @property
    def audio_format(self) -> str:
        return self.formats.get(str(self.session.get("input_audio_format", "pcm")), "pcm")

    @property
    def sample_rate(self) -> int:
        rate = self.session.get("sample_rate", 16000)
        return rate if isinstance(rate, int) else 16000

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = self.session.get("turn_detection")
        return td if isinstance(td, dict) else None

    # ------------------------------------------------------------------ life
    async def run(self, faults: dict[str, Fault]) -> tuple[str, int | None]:
        self.faults = faults
        why, code = "error", None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.writer.run())
                for work in self.background():
                    tg.create_task(work)
                await self.emit("session.created", session=dict(self.session))
                await self._reader()
        except* ConnectionDone as group:
            done = group.exceptions[0]
            assert isinstance(done, ConnectionDone)
            why, code = done.why, done.code
        except* Disconnected:
            why, code = "client", self.ws.client_close_code
        return why, code

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Tasks the subclass runs beside the reader (in the connection's task group)."""
        return []

    async def emit(self, type: str, **fields: Any) -> None:
        await self.writer.put(dumps({"event_id": event_id(), "type": type, **fields}).decode())

    async def error(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        client_event: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        error: dict[str, Any] = {"type": type, "code": code, "message": message}
        if param is not None:
            error["param"] = param
        if client_event is not None:
            error["event_id"] = client_event
        self.rec.errors.append(error)
        await self.emit("error", error=error)

    async def close(self, why: str = "complete") -> None:
        self.closing = True
        await self.writer.put(Close(1000, "", why=why))

    async def _reader(self) -> None:
        idle_fault = self.faults.get("idle_timeout")
        idle = idle_fault.seconds if idle_fault is not None else self.cfg.realtime_idle_timeout
        while True:
            if idle is not None and not self.closing:
                try:
                    async with asyncio.timeout(idle):
                        message = await self.ws.receive()
                except TimeoutError:
                    if self._busy():
                        continue
                    # [U] the idle rule of this socket is undocumented; the TTS socket's shape is reused.
                    await self.error("idle_timeout", "Session closed due to inactivity.")
                    await self.close("idle")
                    continue
            else:
                message = await self.ws.receive()
            if self.closing:
                continue
            event = client_event(message)
            if isinstance(event, tuple):
                await self.error(*event)
                continue
            await self._dispatch(event)

    def _busy(self) -> bool:
        """True while the server itself is producing (the client has nothing to say)."""
        return False

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        client_event = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        self.rec.events.append(str(kind))
        self.state.log.touch()
        if kind == "session.update":
            await self._session_update(event, client_event)
        elif kind == "input_audio_buffer.append":
            await self._append(event, client_event)
        elif kind == "input_audio_buffer.commit":
            if self.item is None or not self.item.audio:
                # [U] the wording; the Omni API answers an empty or tiny commit with a non-fatal error [T].
                await self.error(
                    "invalid_value",
                    "Error committing input audio buffer: buffer too small, or have no audio.",
                    client_event=client_event,
                )
                return
            await self._commit("commit")
        elif kind == "input_audio_buffer.clear":
            self.item = None
            await self.emit("input_audio_buffer.cleared")
        elif kind == "session.finish":
            self.rec.finish_received = True
            if self.finishing:
                return
            self.finishing = True
            if self.item is not None and self.item.audio and self.item.voiced:
                await self._commit("finish")
            await self._finished()
        elif not await self._other_event(kind, event, client_event):
            await self.error(
                "invalid_value",
                f"Invalid value: {kind!r}. Unknown event type.",
                param="type",
                client_event=client_event,
            )

    async def _other_event(
        self, kind: Any, event: dict[str, Any], client_event: str | None
    ) -> bool:
        """A client event of the subclass's own; False when unknown."""
        return False

    async def _finished(self) -> None:
        """After ``session.finish`` (and the last item): ``session.finished`` and close."""
        self.rec.finished = True
        await self.emit("session.finished")
        await self.close()

    # ------------------------------------------------------------------ session.update
    async def _session_update(self, event: dict[str, Any], client_event: str | None) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            await self.error(
                "invalid_value",
                "'session' must be an object.",
                param="session",
                client_event=client_event,
            )
            return
        if self.audio_started or self.finishing:
            await self.error(
                "invalid_value",
                "Session update error: session already started or finished or failed.",
                client_event=client_event,
            )
            return
        try:
            self.check_session(update)
        except SessionProblem as problem:
            await self.error(
                "invalid_value", problem.message, param=problem.param, client_event=client_event
            )
            return
        self.rec.session_updates.append(update)
        for key, value in update.items():
            self.session[key] = value
        self.rec.session = dict(self.session)
        await self.emit("session.updated", session=dict(self.session))

    def check_session(self, update: dict[str, Any]) -> None:
        """Raise :class:`SessionProblem` for a value the model refuses."""
        fmt = update.get("input_audio_format")
        if fmt is not None and fmt not in self.formats:
            values = ", ".join(f"'{f}'" for f in self.formats)
            raise SessionProblem(
                f"Invalid value: {fmt!r}. Supported values are: {values}.",
                "session.input_audio_format",
            )
        rate = update.get("sample_rate")
        if rate is not None and (isinstance(rate, bool) or rate not in self.rates):
            values = ", ".join(str(r) for r in sorted(self.rates))
            raise SessionProblem(
                f"Invalid value: {rate!r}. Supported values are: {values}.", "session.sample_rate"
            )
        if "turn_detection" in update:
            td = update["turn_detection"]
            if td is not None:
                if not isinstance(td, dict) or td.get("type", "server_vad") != "server_vad":
                    raise SessionProblem(
                        "Invalid value: turn_detection.type. Supported values are: 'server_vad'.",
                        "session.turn_detection.type",
                    )
                threshold = td.get("threshold", 0.2)
                if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
                    raise SessionProblem(
                        f"Invalid value: {threshold!r}. threshold must be in [-1, 1].",
                        "session.turn_detection.threshold",
                    )
                silence = td.get("silence_duration_ms", 800)
                if not isinstance(silence, int) or not 200 <= silence <= 6000:
                    raise SessionProblem(
                        f"Invalid value: {silence!r}. silence_duration_ms must be in [200, 6000].",
                        "session.turn_detection.silence_duration_ms",
                    )

    # ------------------------------------------------------------------ audio
    async def _append(self, event: dict[str, Any], client_event: str | None) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            await self.error(
                "invalid_value",
                "'audio' must be a base64 string.",
                param="audio",
                client_event=client_event,
            )
            return
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            await self.error(
                "invalid_value",
                "'audio' is not valid base64.",
                param="audio",
                client_event=client_event,
            )
            return
        if self.finishing:
            await self.error("invalid_value", "Session is finishing.", client_event=client_event)
            return
        if not self.audio_started:
            self.audio_started = True
            td = self.turn_detection
            if td is not None and self.audio_format == "pcm":
                threshold = float(td.get("threshold", 0.2))
                level = self.cfg.vad_rms * (1 + threshold)
                self.vad = _Vad(self.sample_rate, level, int(td.get("silence_duration_ms", 800)))
        self.rec.audio += data
        self.state.log.touch()
        vad_events = self.vad.feed(data) if self.vad is not None else []
        start = 0
        for name, ms, offset in vad_events:
            await self._take(data[start:offset])
            start = offset
            if name == "speech_started":
                item = self._item()
                item.voiced = True
                await self.emit(
                    "input_audio_buffer.speech_started", audio_start_ms=ms, item_id=item.id
                )
            else:
                item = self._item()
                await self.emit(
                    "input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item.id
                )
                await self._commit("vad")
        await self._take(data[start:])

    def _item(self) -> _Item:
        if self.item is None:
            self.item = _Item(self)
        return self.item

    async def _take(self, data: bytes) -> None:
        """Audio for the current item: recognised as it arrives (partials)."""
        if not data:
            return
        item = self._item()
        item.audio += data
        shown = item.text_of(item.recognition.feed(data))
        limit = self.cfg.realtime_commit_limit
        if self.turn_detection is None and item.recognition.seconds > limit:
            self.item = None
            await self.error(
                "invalid_value",
                f"Continuous audio must not exceed {limit:g} seconds: commit the input audio buffer.",
                param="input_audio_buffer",
            )
            return
        if shown is not None and item.voiced and self.emits_partials():
            text, stash = shown
            await self._result(
                "conversation.item.input_audio_transcription.text",
                item_id=item.id,
                content_index=0,
                language="zh",
                emotion="neutral",
                text=text,
                stash=stash,
            )

    def emits_partials(self) -> bool:
        return True

    async def _commit(self, via: str) -> None:
        item = self._item()
        self.item = None
        await self.emit(
            "input_audio_buffer.committed", previous_item_id=self.previous_item, item_id=item.id
        )
        await self.emit(
            "conversation.item.created",
            previous_item_id=self.previous_item,
            item={
                "id": item.id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )
        self.previous_item = item.id
        item.text_of(item.recognition.finish())
        transcript = "".join(item.finals)
        record = RealtimeItemRecord(item.id, len(item.audio), via, transcript)
        self.rec.items.append(record)
        self.state.log.touch()
        await self._committed(item.id, transcript, via)

    async def _committed(self, item_id: str, transcript: str, via: str) -> None:
        """An item is committed: the subclass answers it."""
        raise NotImplementedError

    async def _result(self, type: str, **fields: Any) -> None:
        """A transcription event, after the faults armed at its position."""
        if not await self.faults_at(self.sent):
            return
        self.sent += 1
        await self.emit(type, **fields)

    async def faults_at(self, position: int) -> bool:
        """Apply the stream faults armed at ``position``; False when one ended the connection."""
        if self.closing:
            return False
        faults = self.faults
        malformed = faults.get("malformed")
        if malformed is not None and malformed.after == position:
            await self.writer.put(malformed.payload or '{"type":"conversation.item.input_audio')
        stall = faults.get("stall")
        if stall is not None and stall.after == position:
            await self.writer.put(Stall(stall.seconds))
        error = faults.get("ws_error")
        if error is not None and error.after == position:
            await self.error(
                error.code or "internal_error",
                error.message or "Internal server error.",
                type="server_error",
            )
            if error.close:
                self.closing = True
                await self.writer.put(Close(1011, "", why="failed"))
                return False
        drop = faults.get("drop")
        if drop is not None and drop.after == position:
            self.closing = True
            await self.writer.put(Drop())
            return False
        return True
