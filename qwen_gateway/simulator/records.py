"""What the simulator received and did, for tests to assert on (``sim.log``).

Every HTTP request and WebSocket connection is a :class:`ConnectionRecord` (``kind`` is ``chat``, ``file_asr``,
``tasks``, ``result``, ``tts`` for the realtime TTS socket, ``inference`` for the task socket); each protocol
exchange has its own record pointing at its connection. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("qwen_gateway.simulator.records")

__all__ = [
    "AsrSessionRecord",
    "ChatRequestRecord",
    "ConnectionRecord",
    "CosyVoiceSessionRecord",
    "FileAsrTaskRecord",
    "HttpTtsRecord",
    "OmniResponseRecord",
    "RealtimeAsrSessionRecord",
    "RealtimeItemRecord",
    "SimulatorLog",
    "TaskRecord",
    "TtsResponseRecord",
    "TtsSessionRecord",
]


@dataclass(eq=False)
class ConnectionRecord:
    """One HTTP request or one WebSocket connection.

    ``close_reason`` is one of ``complete`` (the server finished normally), ``client`` (the client left first),
    ``dropped`` (a drop fault), ``failed`` (task-failed or a server-side error close), ``idle`` (an idle rule),
    ``rejected`` (an HTTP error answer or a refused handshake), ``shutdown``. ``close_code`` is the WebSocket
    close code the server sent, the handshake status it refused with, or for client closes what the ASGI
    server reported (Hypercorn 0.18 reports 1006 whatever code the client sent).
    """

    id: int
    kind: str
    path: str
    headers: dict[str, str]
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    status: int | None = None
    tasks: list[str] = field(default_factory=list)
    #: Every WebSocket frame the client sent, in order (JSON text decoded; binary as bytes), when the simulator
    #: runs with ``capture_frames``; empty otherwise.
    frames_in: list[Any] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def matches(self, kind: str | None) -> bool:
        """True for ``kind`` None, the connection's kind, or a task kind it carried (``asr``...)."""
        return kind is None or self.kind == kind or kind in self.tasks


class _OnConnection:
    """A record of an exchange on one connection: closed when its connection is."""

    connection: ConnectionRecord

    @property
    def closed(self) -> bool:
        return self.connection.closed

    @property
    def close_time(self) -> float | None:
        return self.connection.closed_at


@dataclass(eq=False)
class ChatRequestRecord(_OnConnection):
    """One chat completion request as received, and what was answered."""

    request_id: str
    connection: ConnectionRecord
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    stream: bool = False
    status: int = 0
    error_code: str | None = None
    replies: list[str] = field(default_factory=list)
    reasoning: str = ""
    images: list[bytes] = field(default_factory=list)
    events_sent: int = 0
    completed: bool = False

    @property
    def messages(self) -> list[Any]:
        """The request's ``messages`` (empty when absent)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []


@dataclass(eq=False)
class TaskRecord(_OnConnection):
    """One task on the task socket: its ``run-task`` and how it ended.

    ``failed`` is the ``(code, message)`` of its ``task-failed``; ``aborted`` is set when a new ``run-task``
    replaced it or the client left while it ran.
    """

    task_id: str
    connection: ConnectionRecord
    model: str
    params: dict[str, Any]
    run_task: dict[str, Any]
    finish_received: bool = False
    finished: bool = False
    failed: tuple[str, str] | None = None
    aborted: bool = False
    #: every JSON instruction the client sent for this task, as decoded (run-task first)
    instructions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class AsrSessionRecord(TaskRecord):
    """One realtime recognition task (run-task with task ``asr``)."""

    audio: bytearray = field(default_factory=bytearray)
    frames: int = 0
    transcript: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class CosyVoiceSessionRecord(TaskRecord):
    """One CosyVoice synthesis task (run-task with task ``tts``)."""

    texts: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    characters: int = 0


@dataclass(eq=False)
class TtsResponseRecord:
    """One realtime TTS response cycle."""

    response_id: str
    text: str
    audio_bytes: int = 0
    status: str = "in_progress"


@dataclass(eq=False)
class TtsSessionRecord(_OnConnection):
    """One realtime TTS socket (``/api-ws/v1/realtime``)."""

    session_id: str
    connection: ConnectionRecord
    model: str
    session: dict[str, Any]
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    text_segments: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    commits: int = 0
    responses: list[TtsResponseRecord] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    finish_received: bool = False
    finished: bool = False

    @property
    def text(self) -> str:
        """All appended text, in order."""
        return "".join(self.text_segments)


@dataclass(eq=False)
class RealtimeItemRecord:
    """One committed piece of input audio on a realtime recognition / Omni socket (a user item).

    ``via`` is what committed it: ``commit`` (the client), ``vad`` (the server's VAD) or ``finish``
    (``session.finish`` with audio left).
    """

    item_id: str
    audio_bytes: int
    via: str
    transcript: str | None = None


@dataclass(eq=False)
class OmniResponseRecord:
    """One Qwen-Omni response: the text it spoke and the PCM it sent."""

    response_id: str
    text: str
    audio_bytes: int = 0
    status: str = "in_progress"


@dataclass(eq=False)
class RealtimeAsrSessionRecord(_OnConnection):
    """One realtime recognition (``qwen3-asr-flash-realtime``) or Qwen-Omni socket on ``/api-ws/v1/realtime``."""

    session_id: str
    connection: ConnectionRecord
    model: str
    session: dict[str, Any]
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    items: list[RealtimeItemRecord] = field(default_factory=list)
    responses: list[OmniResponseRecord] = field(default_factory=list)
    images: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    finish_received: bool = False
    finished: bool = False

    @property
    def transcripts(self) -> list[str]:
        """The final transcript of each committed item, in order."""
        return [i.transcript for i in self.items if i.transcript is not None]


@dataclass(eq=False)
class FileAsrTaskRecord:
    """One file transcription task."""

    task_id: str
    body: dict[str, Any]
    file_urls: list[str]
    status: str = "PENDING"
    polls: int = 0
    downloads: list[tuple[str, int | None]] = field(default_factory=list)
    transcripts: list[str | None] = field(default_factory=list)


@dataclass(eq=False)
class HttpTtsRecord(_OnConnection):
    """One HTTP speech synthesis request (``/services/aigc/multimodal-generation/generation``)."""

    request_id: str
    connection: ConnectionRecord
    headers: dict[str, str]
    raw: bytes
    body: Any = None
    stream: bool = False
    status: int = 0
    error_code: str | None = None
    text: str = ""
    audio_bytes: int = 0
    events_sent: int = 0
    completed: bool = False


#: The log's lists of records other than ``connections`` (trimmed alike, cleared alike).
_RECORD_LISTS = (
    "closes",
    "chat_requests",
    "asr_sessions",
    "cosyvoice_sessions",
    "tts_sessions",
    "realtime_asr_sessions",
    "omni_sessions",
    "file_asr_tasks",
    "http_tts_requests",
)


class SimulatorLog:
    """Everything the simulator received, in arrival order."""

    def __init__(self) -> None:
        self.connections: list[ConnectionRecord] = []
        self.closes: list[ConnectionRecord] = []
        self.chat_requests: list[ChatRequestRecord] = []
        self.asr_sessions: list[AsrSessionRecord] = []
        self.cosyvoice_sessions: list[CosyVoiceSessionRecord] = []
        self.tts_sessions: list[TtsSessionRecord] = []
        self.realtime_asr_sessions: list[RealtimeAsrSessionRecord] = []
        self.omni_sessions: list[RealtimeAsrSessionRecord] = []
        self.file_asr_tasks: list[FileAsrTaskRecord] = []
        self.http_tts_requests: list[HttpTtsRecord] = []
        self._next_id = 0
        self._changed = asyncio.Event()
        #: Keep at most this many records of each sort (oldest dropped first; open connections are kept).
        self.max_records: int | None = None

    def clear(self) -> None:
        """Forget every record (open connections stay tracked by their handlers)."""
        for name in ("connections", *_RECORD_LISTS):
            getattr(self, name).clear()
        self._notify()

    # ---------------------------------------------------------------- connections
    def open(self, kind: str, path: str, headers: dict[str, str]) -> ConnectionRecord:
        """Record a new connection (used by the handlers)."""
        self._next_id += 1
        record = ConnectionRecord(self._next_id, kind, path, headers)
        self.connections.append(record)
        if self.max_records is not None and len(self.connections) > self.max_records:
            self._trim(self.max_records)
        logger.debug("%s connection %d opened", kind, record.id)
        self._notify()
        return record

    def _trim(self, keep: int) -> None:
        excess = len(self.connections) - keep
        if excess > 0:
            old = [c for c in self.connections[:excess] if not c.closed]
            self.connections[:excess] = old
        for name in _RECORD_LISTS:
            records: list[Any] = getattr(self, name)
            if len(records) > keep:
                del records[: len(records) - keep]

    def close(
        self,
        record: ConnectionRecord,
        reason: str,
        *,
        code: int | None = None,
        status: int | None = None,
    ) -> None:
        """Mark ``record`` closed (first call wins)."""
        if record.closed_at is not None:
            return
        record.closed_at = time.monotonic()
        record.close_reason = reason
        record.close_code = code
        if status is not None:
            record.status = status
        self.closes.append(record)
        if self.max_records is not None:
            self._trim(self.max_records)
        logger.debug("%s connection %d closed: %s (%s)", record.kind, record.id, reason, code)
        self._notify()

    def open_connections(self, kind: str | None = None) -> list[ConnectionRecord]:
        """Connections not closed yet, optionally of one ``kind`` (or task kind such as ``asr``)."""
        return [c for c in self.connections if not c.closed and c.matches(kind)]

    def connection_counts(self) -> dict[str, int]:
        """How many connections of each kind were opened."""
        counts: dict[str, int] = {}
        for c in self.connections:
            counts[c.kind] = counts.get(c.kind, 0) + 1
            for task in set(c.tasks):
                counts[task] = counts.get(task, 0) + 1
        return counts

    async def wait_closed(self, kind: str | None = None, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until no connection of ``kind`` is open.

        Raises:
            TimeoutError: some are still open after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while self.open_connections(kind):
                await self._changed.wait()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true; it is re-checked at every recorded change.

        Raises:
            TimeoutError: still false after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def touch(self) -> None:
        """Signal a change to waiters (handlers call it after updating a record)."""
        self._notify()
