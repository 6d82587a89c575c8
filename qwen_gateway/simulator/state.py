"""The mutable state one simulator shares between its handlers: config, faults, records, transcripts, replies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import SimulatorConfig
from .faults import FaultSet
from .records import SimulatorLog
from .transcripts import TranscriptRegistry

__all__ = ["Reply", "ReplySource", "SimulatorState", "ToolCallScript", "ToolCalls"]

#: A fixed reply, or a function of the request body returning one.
Reply = str | Callable[[dict[str, Any]], str]


class ReplySource:
    """Chat replies set by a test, used before the built-in corpus."""

    def __init__(self) -> None:
        self._reply: Reply | None = None
        self._times: int | None = None

    def set(self, reply: Reply | None, times: int | None = None) -> None:
        """Use ``reply`` for the next ``times`` requests (``None``: until changed); ``None`` back to the corpus."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        self._reply = reply
        self._times = times if reply is not None else None

    def take(self, body: dict[str, Any]) -> str | None:
        """The reply for this request, or None for the corpus."""
        reply = self._reply
        if reply is None:
            return None
        if self._times is not None:
            self._times -= 1
            if self._times <= 0:
                self._reply, self._times = None, None
        return reply(body) if callable(reply) else reply


@dataclass(frozen=True, slots=True)
class ToolCallScript:
    """A tool call the model makes: ``name`` with ``arguments`` (JSON text), after saying ``text``."""

    name: str
    arguments: str
    text: str = ""


class ToolCalls:
    """Tool calls set by a test: the next chat request that offers a function of that name calls it."""

    def __init__(self) -> None:
        self._scripts: list[ToolCallScript] = []
        self.calls = 0

    def add(self, script: ToolCallScript) -> None:
        self._scripts.append(script)

    def clear(self) -> None:
        self._scripts.clear()

    def take(self, body: dict[str, Any]) -> ToolCallScript | None:
        """The call this request answers with (and forget it), or None: no tools offered, ``tool_choice`` is
        ``"none"``, or nothing scripted for the functions offered."""
        tools = body.get("tools")
        if not isinstance(tools, list) or body.get("tool_choice") == "none":
            return None
        offered = {
            t["function"].get("name")
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        for i, script in enumerate(self._scripts):
            if script.name in offered:
                del self._scripts[i]
                self.calls += 1
                return script
        return None


@dataclass
class SimulatorState:
    """Everything a handler may read or record. ``base_url`` is set once the port is known."""

    config: SimulatorConfig
    faults: FaultSet = field(default_factory=FaultSet)
    log: SimulatorLog = field(default_factory=SimulatorLog)
    registry: TranscriptRegistry = field(default_factory=TranscriptRegistry)
    replies: ReplySource = field(default_factory=ReplySource)
    tool_calls: ToolCalls = field(default_factory=ToolCalls)
    base_url: str = ""
    #: File-ASR tasks by id (:class:`~.file_asr.FileTask`).
    file_tasks: dict[str, Any] = field(default_factory=dict)
    #: WAV files of non-streamed HTTP syntheses by audio id (``output.audio.url``), the newest few only.
    tts_audio: dict[str, bytes] = field(default_factory=dict)
