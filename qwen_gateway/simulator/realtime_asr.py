"""``/api-ws/v1/realtime?model=qwen3-asr-flash-realtime``: realtime recognition, OpenAI-Realtime-shaped events.

Follows ``dashscope-protocols.md`` §10 and the events the SDK's ``OmniRealtimeConversation`` handles:
``session.created`` on connect; ``session.update`` (``input_audio_format`` ``pcm``/``opus``, ``sample_rate``
16000/8000, ``turn_detection`` ``server_vad`` or ``null``) -> ``session.updated``; ``input_audio_buffer.append``
(base64 audio) gives ``conversation.item.input_audio_transcription.text`` partials (``text`` + ``stash``) as
the audio grows; a commit (the client's ``input_audio_buffer.commit``, or the VAD hearing the speech stop, after
``input_audio_buffer.speech_started`` / ``speech_stopped``) gives ``input_audio_buffer.committed``,
``conversation.item.created`` and ``conversation.item.input_audio_transcription.completed`` (``transcript``);
``session.finish`` commits what is left, then ``session.finished`` and close.
"""

from __future__ import annotations

from .asgi import WebSocket
from .handshake import serve_socket
from .realtime_input import STREAM_FAULTS, RealtimeInputSession
from .records import ConnectionRecord
from .state import SimulatorState
from .wsconn import event_id

__all__ = ["handle_realtime_asr"]


class _AsrSession(RealtimeInputSession):
    kind = "realtime_asr"

    async def _committed(self, item_id: str, transcript: str, via: str) -> None:
        await self._result(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            language="zh",
            emotion="neutral",
            transcript=transcript,
        )


async def handle_realtime_asr(state: SimulatorState, ws: WebSocket) -> None:
    """Serve one realtime recognition socket (the model was checked by the caller)."""

    async def serve(conn: ConnectionRecord, call: str) -> tuple[str, int | None]:
        await ws.accept()
        model = ws.query.get("model", "")
        session = _AsrSession(
            state,
            ws,
            model=model,
            conn=conn,
            session={
                "id": event_id("sess_"),
                "object": "realtime.session",
                "model": model,
                "modalities": ["text"],
                "input_audio_format": "pcm",
                "sample_rate": 16000,
                "input_audio_transcription": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.2,
                    "silence_duration_ms": 800,
                },
            },
        )
        state.log.realtime_asr_sessions.append(session.rec)
        return await session.run(state.faults.take("realtime_asr", STREAM_FAULTS, call))

    await serve_socket(state, ws, "realtime_asr", serve)
