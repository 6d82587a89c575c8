"""``/api-ws/v1/realtime?model=qwen3-omni-flash-realtime`` (and the other Qwen-Omni realtime models): audio in,
text and speech out, as the SDK's ``OmniRealtimeConversation`` expects (``dashscope-protocols.md`` §7, §10).

Input is the realtime recognition machinery (:mod:`.realtime_input`): PCM16 at 16 kHz, ``server_vad`` (default:
a committed item is answered at once) or manual mode (``input_audio_buffer.commit``, then ``response.create``).
Each committed item's transcript comes as ``conversation.item.input_audio_transcription.completed``; the answer is
the simulator's chat reply for it (a reply set with ``sim.set_reply``, else the corpus) and goes out as
``response.created``, ``response.output_item.added``, ``response.content_part.added``, then
``response.audio_transcript.delta`` with the ``response.audio.delta`` (base64 PCM16, 24 kHz) of the same words,
``response.audio_transcript.done``, ``response.audio.done``, ``response.content_part.done``,
``response.output_item.done`` and ``response.done`` with usage; a text-only session (``modalities: ["text"]``)
gets ``response.text.delta`` / ``response.text.done`` instead. ``response.cancel`` ends the current response
(``status: "cancelled"``); ``input_image_buffer.append`` (base64 JPEG) is taken and counted;
``session.finish`` waits for the responses under way, then ``session.finished`` and close.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .asgi import WebSocket
from .audio import synthesize
from .corpus import count_tokens, pick_reply, tokenize
from .handshake import serve_socket
from .realtime_input import STREAM_FAULTS, RealtimeInputSession, SessionProblem
from .records import ConnectionRecord, OmniResponseRecord
from .state import SimulatorState
from .wsconn import Pacer, event_id

__all__ = ["handle_omni"]

#: Output PCM rate of every Omni model (``pcm24``).
OUTPUT_RATE = 24000
#: Words of the answer per ``response.audio_transcript.delta``.
_TOKENS_PER_DELTA = 6
#: Largest image in ``input_image_buffer.append`` (the docs: JPEG up to 500 KB) [M].
_MAX_IMAGE = 500 * 1024


@dataclass
class _Job:
    instructions: str | None
    modalities: list[str]


class _OmniSession(RealtimeInputSession):
    kind = "omni"
    formats: ClassVar[Mapping[str, str]] = {"pcm16": "pcm", "pcm": "pcm"}
    rates = frozenset({16000})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.unanswered: list[str] = []
        self.pending = 0
        self.cancel_current = False
        self.deltas = 0

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._responder()]

    def _busy(self) -> bool:
        return self.pending > 0

    def emits_partials(self) -> bool:
        return False  # Omni sends the user's transcript once, when the item is committed

    def check_session(self, update: dict[str, Any]) -> None:
        super().check_session(update)
        modalities = update.get("modalities")
        if modalities is not None and sorted(modalities) not in (["text"], ["audio", "text"]):
            raise SessionProblem(
                f"Invalid modalities: {modalities!r}. Supported combinations are: ['text'] and "
                "['audio', 'text'].",
                "session.modalities",
            )

    async def _other_event(
        self, kind: Any, event: dict[str, Any], client_event: str | None
    ) -> bool:
        if kind == "response.create":
            response = event.get("response")
            options = response if isinstance(response, dict) else {}
            modalities = options.get("modalities") or self.session.get("modalities")
            instructions = options.get("instructions")
            await self._queue(
                _Job(
                    instructions if isinstance(instructions, str) else None,
                    list(modalities) if isinstance(modalities, list) else ["text", "audio"],
                )
            )
        elif kind == "response.cancel":
            self.cancel_current = True
        elif kind == "input_image_buffer.append":
            image = event.get("image")
            try:
                data = base64.b64decode(image, validate=True) if isinstance(image, str) else b""
            except (binascii.Error, ValueError):
                data = b""
            if not data or len(data) > _MAX_IMAGE:
                await self.error(
                    "invalid_value",
                    "'image' must be a base64 JPEG of at most 500 KB.",
                    param="image",
                    client_event=client_event,
                )
            else:
                self.rec.images += 1
        elif kind == "conversation.item.create":
            item = event.get("item")
            item_id = item.get("id") if isinstance(item, dict) else None
            await self.emit(
                "conversation.item.created",
                previous_item_id=self.previous_item,
                item=(item if isinstance(item, dict) else {})
                | {"id": item_id or event_id("item_")},
            )
        else:
            return False
        return True

    async def _committed(self, item_id: str, transcript: str, via: str) -> None:
        await self.emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
        )
        self.unanswered.append(transcript)
        td = self.turn_detection
        if via == "vad" and td is not None and td.get("create_response", True):
            modalities = self.session.get("modalities")
            await self._queue(
                _Job(None, list(modalities) if isinstance(modalities, list) else ["text", "audio"])
            )

    async def _queue(self, job: _Job) -> None:
        self.pending += 1
        await self.jobs.put(job)

    async def _finished(self) -> None:
        await self.jobs.put(None)

    # ------------------------------------------------------------------ responses
    async def _responder(self) -> None:
        while True:
            job = await self.jobs.get()
            if job is None:
                await super()._finished()
                return
            try:
                if not await self._respond(job):
                    return
            finally:
                self.pending -= 1

    async def _respond(self, job: _Job) -> bool:
        """One response cycle; False when a fault ended the connection."""
        prompt = "".join(self.unanswered)
        self.unanswered.clear()
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        text = self.state.replies.take(body) or pick_reply(prompt)
        self.cancel_current = False
        audio = "audio" in job.modalities
        voice = str(self.session.get("voice") or "Cherry")
        rid, iid = event_id("resp_"), event_id("item_")
        record = OmniResponseRecord(rid, text)
        self.rec.responses.append(record)
        part_type = "audio" if audio else "text"
        item = {
            "id": iid,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ids = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        await self.emit(
            "response.created",
            response={
                "id": rid,
                "object": "realtime.response",
                "conversation_id": "",
                "status": "in_progress",
                "modalities": job.modalities,
                "voice": voice,
                "output": [],
            },
        )
        await self.emit("response.output_item.added", response_id=rid, output_index=0, item=item)
        await self.emit("response.content_part.added", **ids, part={"type": part_type, "text": ""})
        pacer = Pacer(
            realtime_factor=self.cfg.tts_realtime_factor,
            first_delay=self.cfg.tts_first_audio_delay,
        )
        tokens = tokenize(text)
        spoken = ""
        step = max(2, OUTPUT_RATE * self.cfg.tts_chunk_ms // 1000 * 2)
        for start in range(0, len(tokens), _TOKENS_PER_DELTA):
            if self.cancel_current:
                break
            words = "".join(tokens[start : start + _TOKENS_PER_DELTA])
            spoken += words
            if not audio:
                await self.emit("response.text.delta", **ids, delta=words)
                continue
            await self.emit("response.audio_transcript.delta", **ids, delta=words)
            pcm = synthesize(words, OUTPUT_RATE)
            for offset in range(0, len(pcm), step):
                if self.cancel_current:
                    break
                piece = pcm[offset : offset + step]
                if not await self.faults_at(self.deltas):
                    return False
                await self.writer.backpressure()
                await pacer.wait(len(piece) / (2 * OUTPUT_RATE))
                await self.emit(
                    "response.audio.delta", **ids, delta=base64.b64encode(piece).decode("ascii")
                )
                self.deltas += 1
                record.audio_bytes += len(piece)
        status = "cancelled" if self.cancel_current else "completed"
        record.status = status
        if audio:
            await self.emit("response.audio_transcript.done", **ids, transcript=spoken)
            await self.emit("response.audio.done", **ids)
            part: dict[str, Any] = {"type": "audio", "transcript": spoken}
        else:
            await self.emit("response.text.done", **ids, text=spoken)
            part = {"type": "text", "text": spoken}
        await self.emit("response.content_part.done", **ids, part=part)
        done_item = item | {"status": "completed", "content": [part]}
        await self.emit(
            "response.output_item.done", response_id=rid, output_index=0, item=done_item
        )
        # [U] token accounting: 25 input audio tokens a second (as Qwen-Omni bills), 12.5 output.
        input_audio = round(len(self.rec.audio) / (2 * self.sample_rate) * 25)
        input_text = count_tokens(job.instructions or "")
        output_text = count_tokens(spoken)
        output_audio = round(record.audio_bytes / (2 * OUTPUT_RATE) * 12.5)
        usage = {
            "total_tokens": input_audio + input_text + output_text + output_audio,
            "input_tokens": input_audio + input_text,
            "output_tokens": output_text + output_audio,
            "input_tokens_details": {"text_tokens": input_text, "audio_tokens": input_audio},
            "output_tokens_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }
        await self.emit(
            "response.done",
            response={
                "id": rid,
                "object": "realtime.response",
                "conversation_id": "",
                "status": status,
                "modalities": job.modalities,
                "voice": voice,
                "output": [done_item],
                "usage": usage,
            },
        )
        self.state.log.touch()
        return True


async def handle_omni(state: SimulatorState, ws: WebSocket) -> None:
    """Serve one Qwen-Omni realtime socket (the model was checked by the caller)."""

    async def serve(conn: ConnectionRecord, call: str) -> tuple[str, int | None]:
        await ws.accept()
        model = ws.query.get("model", "")
        session = _OmniSession(
            state,
            ws,
            model=model,
            conn=conn,
            session={
                "id": event_id("sess_"),
                "object": "realtime.session",
                "model": model,
                "modalities": ["text", "audio"],
                "voice": "Chelsie" if model.startswith("qwen-omni-turbo") else "Cherry",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm24",
                "input_audio_transcription": {"model": "gummy-realtime-v1"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 800,
                    "create_response": True,
                    "interrupt_response": True,
                },
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
            },
        )
        state.log.omni_sessions.append(session.rec)
        return await session.run(state.faults.take("omni", STREAM_FAULTS, call))

    await serve_socket(state, ws, "omni", serve)
