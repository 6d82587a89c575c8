"""``/api-ws/v1/realtime?model=qwen-tts-realtime``: Qwen-TTS-Realtime, OpenAI-Realtime-shaped JSON events.

Follows ``dashscope-protocols.md`` §3: ``session.created`` on connect; ``session.update`` -> ``session.updated``;
``input_text_buffer.append`` (``server_commit`` mode synthesises each complete sentence, ``commit`` mode waits for
``input_text_buffer.commit``); each synthesis is ``response.created``, ``response.output_item.added``,
``response.content_part.added``, ``response.audio.delta`` (base64 PCM16LE mono) ..., ``response.audio.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.done``; ``session.finish`` speaks the
rest, sends ``session.finished`` and closes.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from typing import Any

from .asgi import Disconnected, WebSocket, dumps
from .audio import synthesize
from .corpus import count_tokens
from .faults import Fault
from .handshake import serve_socket
from .models import TTS_RATES, base_name
from .records import ConnectionRecord, TtsResponseRecord, TtsSessionRecord
from .state import SimulatorState
from .wsconn import Close, ConnectionDone, Drop, Pacer, Stall, Writer, client_event, event_id

__all__ = ["handle_realtime"]


_STREAM_FAULTS = frozenset(
    {"stall", "drop", "malformed", "ws_error", "idle_timeout", "slow_audio", "bursty_audio"}
)
_LANGUAGES = frozenset(
    {
        "Auto",
        "Chinese",
        "English",
        "German",
        "Italian",
        "Portuguese",
        "Spanish",
        "Japanese",
        "Korean",
        "French",
        "Russian",
    }
)
_SENTENCE_END = re.compile(r"[。！？!?；;\n]|\.(?=\s)")


def _rates(model: str) -> frozenset[int]:
    """The PCM rates the realtime TTS ``model`` offers (qwen-tts-realtime: 24000 only)."""
    return TTS_RATES[base_name(model)]


async def handle_realtime(state: SimulatorState, ws: WebSocket) -> None:
    """Serve one realtime TTS socket (the model was checked by the caller: :mod:`.realtime_route`)."""

    async def serve(conn: ConnectionRecord, call: str) -> tuple[str, int | None]:
        model = ws.query.get("model", "")
        await ws.accept()
        session = _RealtimeSession(state, ws, model=model, conn=conn)
        return await session.run(state.faults.take("tts", _STREAM_FAULTS, call))

    await serve_socket(state, ws, "tts", serve)


@dataclass
class _Job:
    text: str


class _RealtimeSession:
    def __init__(
        self, state: SimulatorState, ws: WebSocket, *, model: str, conn: ConnectionRecord
    ) -> None:
        self.state = state
        self.cfg = state.config
        self.ws = ws
        self.model = model
        self.writer = Writer(ws)
        session_id = event_id("sess_")
        self.session: dict[str, Any] = {
            "object": "realtime.session",
            "mode": "server_commit",
            "model": model,
            "voice": "Cherry",
            "language_type": "Auto",
            "response_format": "pcm",
            "sample_rate": 24000,
            "id": session_id,
        }
        self.rec = TtsSessionRecord(session_id, conn, model, dict(self.session))
        state.log.tts_sessions.append(self.rec)
        self.buffer = ""
        self.jobs: asyncio.Queue[_Job | None] = (
            asyncio.Queue()
        )  # text from the client: never blocks the reader
        self.started = False
        self.finishing = False
        self.closing = False
        self.cancel_current = False
        self.deltas = 0
        self.pending = 0  # responses queued or being spoken
        self.faults: dict[str, Fault] = {}
        self.pacer = Pacer(realtime_factor=self.cfg.tts_realtime_factor)

    async def run(self, faults: dict[str, Fault]) -> tuple[str, int | None]:
        self.faults = faults
        why, code = "error", None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.writer.run())
                tg.create_task(self._synthesizer())
                await self._emit("session.created", session=dict(self.session))
                await self._reader()
        except* ConnectionDone as group:
            done = group.exceptions[0]
            assert isinstance(done, ConnectionDone)
            why, code = done.why, done.code
        except* Disconnected:
            why, code = "client", self.ws.client_close_code
        return why, code

    async def _emit(self, type: str, **fields: Any) -> None:
        await self.writer.put(dumps({"event_id": event_id(), "type": type, **fields}).decode())

    async def _error(
        self, code: str, message: str, *, param: str | None = None, client_event: str | None = None
    ) -> None:
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if param is not None:
            error["param"] = param
        if client_event is not None:
            error["event_id"] = client_event
        self.rec.errors.append(error)
        await self._emit("error", error=error)

    # ------------------------------------------------------------------ reader
    async def _reader(self) -> None:
        idle_fault = self.faults.get("idle_timeout")
        idle = idle_fault.seconds if idle_fault is not None else self.cfg.tts_idle_timeout
        while True:
            if idle is not None and not self.closing:
                try:
                    async with asyncio.timeout(idle):
                        message = await self.ws.receive()
                except TimeoutError:
                    if self.pending:  # still speaking: the client has nothing to say
                        continue
                    # [U] the realtime socket's idle behaviour is undocumented.
                    await self._error("idle_timeout", "Session closed due to inactivity.")
                    await self.writer.put(Close(1000, "idle timeout", why="idle"))
                    self.closing = True
                    continue
            else:
                message = await self.ws.receive()
            if self.closing:
                continue
            event = client_event(message)
            if isinstance(event, tuple):
                await self._error(*event)
                continue
            await self._dispatch(event)

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        client_event = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        self.rec.events.append(str(kind))
        self.state.log.touch()
        if kind == "session.update":
            await self._session_update(event, client_event)
        elif kind == "input_text_buffer.append":
            text = event.get("text")
            if not isinstance(text, str):
                await self._error(
                    "invalid_value",
                    "'text' must be a string.",
                    param="text",
                    client_event=client_event,
                )
                return
            if self.finishing:
                await self._error(
                    "invalid_value", "Session is finishing.", client_event=client_event
                )
                return
            self.rec.text_segments.append(text)
            self.buffer += text
            if self.session["mode"] == "server_commit":
                await self._server_commit()
        elif kind == "input_text_buffer.commit":
            if not self.buffer.strip():
                # [C] commit with an empty buffer is an error; [U] its code and wording.
                await self._error(
                    "input_text_buffer_commit_empty",
                    "Error committing input text buffer: buffer is empty.",
                    client_event=client_event,
                )
                return
            self.rec.commits += 1
            await self._emit("input_text_buffer.committed", item_id="")
            await self._queue(self.buffer)
            self.buffer = ""
        elif kind == "input_text_buffer.clear":
            self.buffer = ""
            await self._emit("input_text_buffer.cleared")
        elif kind == "session.finish":
            self.rec.finish_received = True
            if self.finishing:
                return
            self.finishing = True
            if self.buffer.strip():
                await self._queue(self.buffer)
            self.buffer = ""
            await self.jobs.put(None)
        elif kind == "response.cancel":
            self.cancel_current = True
        else:
            await self._error(
                "invalid_value",
                f"Invalid value: {kind!r}. Unknown event type.",
                param="type",
                client_event=client_event,
            )

    async def _session_update(self, event: dict[str, Any], client_event: str | None) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            await self._error(
                "invalid_value",
                "'session' must be an object.",
                param="session",
                client_event=client_event,
            )
            return
        if self.started or self.finishing:
            await self._error(
                "invalid_value",
                "Session update error: session already started or finished or failed.",
                client_event=client_event,
            )
            return
        problem = self._check_session(update)
        if problem is not None:
            message, param = problem
            await self._error("invalid_value", message, param=param, client_event=client_event)
            return
        self.rec.session_updates.append(update)
        for key, value in update.items():
            self.session[key] = value
        self.rec.session = dict(self.session)
        await self._emit("session.updated", session=dict(self.session))

    def _check_session(self, update: dict[str, Any]) -> tuple[str, str] | None:
        mode = update.get("mode")
        if mode is not None and mode not in ("server_commit", "commit"):
            return (
                f"Invalid value: {mode!r}. Supported values are: 'server_commit' and 'commit'.",
                "session.mode",
            )
        voice = update.get("voice")
        if voice is not None and (not isinstance(voice, str) or not voice):
            return f"The requested voice {voice!r} is not supported.", "session.voice"
        language = update.get("language_type")
        if language is not None and language not in _LANGUAGES:
            return f"Invalid value: {language!r}.", "session.language_type"
        fmt = update.get("response_format")
        if fmt is not None and fmt != "pcm":
            # qwen-tts-realtime is pcm only [C]; qwen3 models offer wav/mp3/opus, which the simulator does not render.
            return (
                f"Invalid value: {fmt!r}. Supported values are: 'pcm'.",
                "session.response_format",
            )
        rate = update.get("sample_rate")
        if rate is not None:
            allowed = (
                _rates(self.model)
                if self.cfg.strict_tts_formats
                else frozenset({8000, 16000, 22050, 24000, 44100, 48000})
            )
            if not isinstance(rate, int) or rate not in allowed:
                values = ", ".join(str(r) for r in sorted(allowed))
                return (
                    f"Invalid value: {rate!r}. Supported values are: {values}.",
                    "session.sample_rate",
                )
        speed = update.get("speech_rate")
        if speed is not None and (not isinstance(speed, (int, float)) or not 0.5 <= speed <= 2.0):
            return (
                f"Invalid value: {speed!r}. speech_rate must be in [0.5, 2.0].",
                "session.speech_rate",
            )
        return None

    async def _server_commit(self) -> None:
        last_end = -1
        for m in _SENTENCE_END.finditer(self.buffer):
            last_end = m.end()
        if last_end > 0:
            ready, self.buffer = self.buffer[:last_end], self.buffer[last_end:]
            await self._queue(ready)
        if len(self.buffer) >= self.cfg.tts_commit_chars:
            await self._queue(self.buffer)
            self.buffer = ""

    async def _queue(self, text: str) -> None:
        self.started = True
        self.pending += 1
        await self.jobs.put(_Job(text))

    # ------------------------------------------------------------------ synthesis
    async def _synthesizer(self) -> None:
        slow = self.faults.get("slow_audio")
        bursty = self.faults.get("bursty_audio")
        self.pacer = Pacer(
            realtime_factor=slow.factor if slow is not None else self.cfg.tts_realtime_factor,
            first_delay=self.cfg.tts_first_audio_delay,
            burst=bursty.burst if bursty is not None else 0,
            burst_pause=(bursty.seconds or 0.0) if bursty is not None else 0.0,
        )
        while True:
            job = await self.jobs.get()
            if job is None:
                self.rec.finished = True
                await self._emit("session.finished")
                await self.writer.put(Close(1000, "", why="complete"))
                return
            try:
                if not await self._respond(job.text):
                    return
            finally:
                self.pending -= 1

    async def _respond(self, text: str) -> bool:
        """One response cycle; False when a fault ended the connection."""
        self.cancel_current = False
        self.pacer.restart()
        voice = str(self.session.get("voice", "Cherry"))
        rate = int(self.session.get("sample_rate", 24000))
        speed = float(self.session.get("speech_rate", 1.0))
        rid, iid = event_id("resp_"), event_id("item_")
        record = TtsResponseRecord(rid, text)
        self.rec.responses.append(record)
        item = {
            "id": iid,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ids = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        await self._emit(
            "response.created",
            response={
                "id": rid,
                "object": "realtime.response",
                "conversation_id": "",
                "status": "in_progress",
                "voice": voice,
                "output": [],
            },
        )
        await self._emit("response.output_item.added", response_id=rid, output_index=0, item=item)
        await self._emit("response.content_part.added", **ids, part={"type": "audio", "text": ""})
        pcm = synthesize(text, rate, speed)
        step = max(2, rate * self.cfg.tts_chunk_ms // 1000 * 2)
        for start in range(0, len(pcm), step):
            if self.cancel_current:
                break
            piece = pcm[start : start + step]
            if not await self._faults_at(self.deltas):
                return False
            await self.writer.backpressure()
            await self.pacer.wait(len(piece) / (2 * rate))
            await self._emit(
                "response.audio.delta", **ids, delta=base64.b64encode(piece).decode("ascii")
            )
            self.deltas += 1
            record.audio_bytes += len(piece)
        status = "cancelled" if self.cancel_current else "completed"
        record.status = status
        await self._emit("response.audio.done", **ids)
        await self._emit("response.content_part.done", **ids, part={"type": "audio", "text": ""})
        done_item = item | {"status": "completed", "content": [{"type": "audio", "text": ""}]}
        await self._emit(
            "response.output_item.done", response_id=rid, output_index=0, item=done_item
        )
        seconds = record.audio_bytes / (2 * rate)
        if self.model.startswith("qwen-tts-realtime"):
            input_tokens = count_tokens(text)
            output_tokens = max(50, round(seconds * 50))
            usage: dict[str, Any] = {
                "total_tokens": input_tokens + output_tokens,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "input_tokens_details": {"text_tokens": input_tokens},
                "output_tokens_details": {"text_tokens": 0, "audio_tokens": output_tokens},
            }
        else:
            usage = {"characters": len(text)}
        await self._emit(
            "response.done",
            response={
                "id": rid,
                "object": "realtime.response",
                "conversation_id": "",
                "status": status,
                "modalities": ["text", "audio"],
                "voice": voice,
                "output": [done_item | {"content": [{"type": "audio", "transcript": ""}]}],
                "usage": usage,
            },
        )
        self.state.log.touch()
        return True

    async def _faults_at(self, position: int) -> bool:
        faults = self.faults
        malformed = faults.get("malformed")
        if malformed is not None and malformed.after == position:
            await self.writer.put(
                malformed.payload or '{"type":"response.audio.delta","delta":"AAAA'
            )
        stall = faults.get("stall")
        if stall is not None and stall.after == position:
            await self.writer.put(Stall(stall.seconds))
        error = faults.get("ws_error")
        if error is not None and error.after == position:
            await self._error(
                error.code or "internal_error", error.message or "Internal server error."
            )
            if error.close:
                await self.writer.put(Close(1011, "", why="failed"))
                return False
        drop = faults.get("drop")
        if drop is not None and drop.after == position:
            await self.writer.put(Drop())
            return False
        return True
