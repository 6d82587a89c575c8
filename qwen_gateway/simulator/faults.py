"""Programmable faults: what goes wrong, on which endpoint, for how many calls.

A :class:`Fault` is a frozen description built with one of its constructors; :class:`FaultSet` (``sim.faults``)
holds the armed ones and hands each call the faults that apply to it, counting ``times`` down. A *call* is one
HTTP request, one realtime TTS socket, or one task (``run-task``) on the inference socket.

Endpoints::

    chat           POST /compatible-mode/v1/chat/completions
    tts            WS   /api-ws/v1/realtime          (qwen-tts-realtime; also a model not served there)
    realtime_asr   WS   /api-ws/v1/realtime          (qwen3-asr-flash-realtime)
    omni           WS   /api-ws/v1/realtime          (qwen3-omni-flash-realtime ...)
    inference      WS   /api-ws/v1/inference         (handshake only: any task)
    asr            a run-task with task "asr"        (paraformer / fun-asr / gummy realtime)
    tts_cosyvoice  a run-task with task "tts"        (CosyVoice, qwen-audio TTS)
    file_asr       POST /api/v1/services/audio/asr/transcription
    tasks          GET  /api/v1/tasks/<id>
    result         GET  the transcription_url of a file-ASR result
    http_tts       POST /api/v1/services/aigc/multimodal-generation/generation (qwen3-tts-flash, qwen-tts)

Positions (``after``) count what the call sends: SSE events for ``chat``, ``response.audio.delta`` events for
``tts`` and ``omni``, transcription events (``...transcription.text`` / ``.completed``) for ``realtime_asr``,
``result-generated`` events for ``asr``, binary audio frames for ``tts_cosyvoice``, SSE events for ``http_tts``.

CLI form (``--fault``): ``kind[:key=value,...]``, e.g. ``http_error:status=429,code=limit_requests,times=2``,
``stall:after=3,seconds=5,endpoint=tts``, ``drop:after=2``; ``times=always`` keeps a fault armed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

logger = logging.getLogger("qwen_gateway.simulator.faults")

__all__ = ["Endpoint", "Fault", "FaultKind", "FaultSet", "FiredFault", "parse_fault"]

Endpoint = Literal[
    "chat",
    "tts",
    "realtime_asr",
    "omni",
    "inference",
    "asr",
    "tts_cosyvoice",
    "file_asr",
    "tasks",
    "result",
    "http_tts",
]
FaultKind = Literal[
    "http_error",
    "delay",
    "stall",
    "drop",
    "stream_error",
    "task_failed",
    "ws_error",
    "malformed",
    "idle_timeout",
    "slow_audio",
    "bursty_audio",
]

#: Which kinds make sense on which endpoint.
ALLOWED: dict[str, frozenset[str]] = {
    "chat": frozenset({"http_error", "delay", "stall", "drop", "stream_error", "malformed"}),
    "tts": frozenset(
        {
            "http_error",
            "delay",
            "stall",
            "drop",
            "malformed",
            "ws_error",
            "idle_timeout",
            "slow_audio",
            "bursty_audio",
        }
    ),
    "realtime_asr": frozenset(
        {"http_error", "delay", "stall", "drop", "malformed", "ws_error", "idle_timeout"}
    ),
    "omni": frozenset(
        {"http_error", "delay", "stall", "drop", "malformed", "ws_error", "idle_timeout"}
    ),
    "inference": frozenset({"http_error", "delay"}),
    "asr": frozenset(
        {"http_error", "delay", "stall", "drop", "malformed", "task_failed", "idle_timeout"}
    ),
    "tts_cosyvoice": frozenset(
        {
            "http_error",
            "delay",
            "stall",
            "drop",
            "malformed",
            "task_failed",
            "idle_timeout",
            "slow_audio",
            "bursty_audio",
        }
    ),
    "file_asr": frozenset({"http_error", "delay", "task_failed"}),
    "tasks": frozenset({"http_error", "delay"}),
    "result": frozenset({"http_error", "delay"}),
    "http_tts": frozenset(
        {"http_error", "delay", "stall", "drop", "stream_error", "malformed", "slow_audio"}
    ),
}


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One fault. Build it with a constructor (``Fault.http_error(...)``, ``Fault.stall(...)`` ...).

    ``times`` is how many calls it affects (``None``: every call until removed).
    """

    kind: FaultKind
    endpoint: Endpoint
    times: int | None = 1
    status: int = 0
    code: str | None = None
    message: str | None = None
    seconds: float | None = None
    after: int = 0
    close: bool = False
    retry_after: float | None = None
    payload: str | None = None
    factor: float = 1.0
    burst: int = 0
    before_start: bool = False

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.endpoint not in ALLOWED:
            raise ValueError(f"unknown endpoint {self.endpoint!r}")
        if self.kind not in ALLOWED[self.endpoint]:
            raise ValueError(f"fault {self.kind!r} does not apply to endpoint {self.endpoint!r}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None")
        if self.after < 0:
            raise ValueError("after must be >= 0")
        if self.kind == "http_error" and not 400 <= self.status <= 599:
            raise ValueError("http_error needs a 4xx/5xx status")
        if self.kind in ("delay", "idle_timeout") and (self.seconds is None or self.seconds < 0):
            raise ValueError(f"{self.kind} needs seconds >= 0")
        if self.kind == "slow_audio" and self.factor <= 0:
            raise ValueError("slow_audio needs factor > 0")
        if self.kind == "bursty_audio" and (self.burst < 1 or (self.seconds or 0) <= 0):
            raise ValueError("bursty_audio needs burst >= 1 and seconds > 0")

    # ----------------------------------------------------------------- constructors
    @classmethod
    def http_error(
        cls,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        endpoint: Endpoint = "chat",
        times: int | None = 1,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer with ``status`` and the documented body of ``code`` (compat or native spelling).

        On ``tts``/``inference`` the WebSocket handshake is rejected with ``status``; on ``asr``/``tts_cosyvoice``
        the run-task gets ``task-failed`` with the native code. ``retry_after`` adds a ``Retry-After`` header.
        """
        return cls(
            kind="http_error",
            endpoint=endpoint,
            times=times,
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
        )

    @classmethod
    def delay(cls, seconds: float, *, endpoint: Endpoint = "chat", times: int | None = 1) -> Fault:
        """Wait ``seconds`` before the first byte (HTTP), the handshake (WS) or ``task-started`` (tasks)."""
        return cls(kind="delay", endpoint=endpoint, times=times, seconds=seconds)

    @classmethod
    def stall(
        cls,
        after_chunks: int = 0,
        seconds: float | None = None,
        *,
        endpoint: Endpoint = "chat",
        times: int | None = 1,
    ) -> Fault:
        """Pause ``seconds`` (``None``: until the client leaves) after ``after_chunks`` chunks."""
        return cls(
            kind="stall", endpoint=endpoint, times=times, after=after_chunks, seconds=seconds
        )

    @classmethod
    def drop(
        cls, after_chunks: int = 0, *, endpoint: Endpoint = "chat", times: int | None = 1
    ) -> Fault:
        """Drop the connection after ``after_chunks`` chunks.

        HTTP: the chunked body ends without its terminator. WebSocket: close 1011 at once, no close handshake
        (ASGI cannot reset a TCP connection).
        """
        return cls(kind="drop", endpoint=endpoint, times=times, after=after_chunks)

    @classmethod
    def stream_error(
        cls,
        after_chunks: int = 0,
        code: str = "data_inspection_failed",
        message: str = "Output data may contain inappropriate content.",
        *,
        endpoint: Endpoint = "chat",
        times: int | None = 1,
    ) -> Fault:
        """Chat: a ``data: {"error": {...}}`` event inside the HTTP-200 stream, which then ends [T/U].
        ``http_tts``: an ``event:error`` SSE event with the native ``code`` and ``message``."""
        return cls(
            kind="stream_error",
            endpoint=endpoint,
            times=times,
            after=after_chunks,
            code=code,
            message=message,
        )

    @classmethod
    def task_failed(
        cls,
        endpoint: Endpoint = "asr",
        *,
        after: int = 0,
        code: str | None = None,
        message: str | None = None,
        before_start: bool = False,
        times: int | None = 1,
    ) -> Fault:
        """``task-failed`` (then close) after ``after`` results; ``before_start`` answers run-task with it.

        On ``file_asr`` the whole task ends ``FAILED`` with ``output.code``/``output.message``.
        """
        return cls(
            kind="task_failed",
            endpoint=endpoint,
            times=times,
            after=after,
            code=code,
            message=message,
            before_start=before_start,
        )

    @classmethod
    def ws_error(
        cls,
        endpoint: Endpoint = "tts",
        *,
        after: int = 0,
        code: str = "internal_error",
        message: str = "Internal server error.",
        close: bool = False,
        times: int | None = 1,
    ) -> Fault:
        """Realtime TTS: an ``error`` event after ``after`` audio deltas; ``close`` then ends the socket."""
        return cls(
            kind="ws_error",
            endpoint=endpoint,
            times=times,
            after=after,
            code=code,
            message=message,
            close=close,
        )

    @classmethod
    def malformed(
        cls,
        endpoint: Endpoint = "chat",
        *,
        after: int = 0,
        payload: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Send a frame that is not valid JSON (``payload`` or a truncated event) after ``after`` chunks."""
        return cls(kind="malformed", endpoint=endpoint, times=times, after=after, payload=payload)

    @classmethod
    def idle_timeout(
        cls, seconds: float, *, endpoint: Endpoint = "asr", times: int | None = 1
    ) -> Fault:
        """Use ``seconds`` as the idle rule of this call (the 23 s rule of tasks, the realtime idle close)."""
        return cls(kind="idle_timeout", endpoint=endpoint, times=times, seconds=seconds)

    @classmethod
    def slow_audio(
        cls, factor: float, *, endpoint: Endpoint = "tts", times: int | None = 1
    ) -> Fault:
        """Produce audio at ``factor`` seconds of wall time per second of audio (2.0: half real time)."""
        return cls(kind="slow_audio", endpoint=endpoint, times=times, factor=factor)

    @classmethod
    def bursty_audio(
        cls,
        burst: int = 5,
        pause: float = 0.5,
        *,
        endpoint: Endpoint = "tts",
        times: int | None = 1,
    ) -> Fault:
        """Send audio in bursts of ``burst`` chunks separated by ``pause`` seconds."""
        return cls(kind="bursty_audio", endpoint=endpoint, times=times, burst=burst, seconds=pause)


@dataclass(frozen=True, slots=True)
class FiredFault:
    """A fault that was applied to a call."""

    fault: Fault
    endpoint: str
    call: str


@dataclass(slots=True)
class _Armed:
    fault: Fault
    remaining: int | None


@dataclass
class FaultSet:
    """The armed faults of a simulator (``sim.faults``)."""

    _armed: list[_Armed] = field(default_factory=list)
    fired: list[FiredFault] = field(default_factory=list)

    def add(self, *faults: Fault) -> None:
        """Arm ``faults`` (applied in the order added)."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected a Fault, got {type(fault).__name__}")
            self._armed.append(_Armed(fault, fault.times))

    def remove(self, fault: Fault) -> None:
        """Disarm every armed copy of ``fault``."""
        self._armed = [a for a in self._armed if a.fault != fault]

    def clear(self) -> None:
        """Disarm everything and forget what fired."""
        self._armed.clear()
        self.fired.clear()

    @property
    def pending(self) -> list[tuple[Fault, int | None]]:
        """Armed faults with their remaining uses (``None``: unlimited)."""
        return [(a.fault, a.remaining) for a in self._armed]

    def take(self, endpoint: str, kinds: frozenset[str], call: str) -> dict[str, Fault]:
        """Consume one use of the first armed fault of each of ``kinds`` on ``endpoint``.

        Returns the faults applying to this call, by kind.
        """
        taken: dict[str, Fault] = {}
        for armed in list(self._armed):
            fault = armed.fault
            if fault.endpoint != endpoint or fault.kind not in kinds or fault.kind in taken:
                continue
            taken[fault.kind] = fault
            self.fired.append(FiredFault(fault, endpoint, call))
            if len(self.fired) > 10_000:
                del self.fired[:1000]
            logger.info("fault %s fired on %s (call %s)", fault.kind, endpoint, call)
            if armed.remaining is not None:
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._armed.remove(armed)
        return taken


_FIELDS = {f.name: f for f in dataclasses.fields(Fault)}
_ALIASES = {"after_chunks": "after", "pause": "seconds"}


def parse_fault(spec: str) -> Fault:
    """Parse the CLI form ``kind[:key=value,...]`` into a :class:`Fault`.

    Raises:
        ValueError: unknown kind or key, or a value of the wrong type.
    """
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip()
    values: dict[str, Any] = {"kind": kind}
    defaults: dict[str, Any] = {
        "endpoint": "tts"
        if kind in ("ws_error", "slow_audio", "bursty_audio")
        else "asr"
        if kind in ("task_failed", "idle_timeout")
        else "chat"
    }
    if kind == "stream_error":
        defaults.update(
            code="data_inspection_failed", message="Output data may contain inappropriate content."
        )
    if kind == "bursty_audio":
        defaults.update(burst=5, seconds=0.5)
    if kind == "ws_error":
        defaults.update(code="internal_error", message="Internal server error.")
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        key = _ALIASES.get(key.strip(), key.strip())
        if not eq or key not in _FIELDS or key == "kind":
            raise ValueError(f"fault {spec!r}: bad item {item!r}")
        values[key] = _convert(key, raw.strip(), spec)
    return Fault(**(defaults | values))


def _convert(key: str, raw: str, spec: str) -> Any:
    try:
        if key == "times":
            return None if raw in ("always", "inf", "none") else int(raw)
        if key in ("status", "after", "burst"):
            return int(raw)
        if key in ("seconds", "retry_after"):
            return None if raw in ("none", "forever") else float(raw)
        if key == "factor":
            return float(raw)
        if key in ("close", "before_start"):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
    except ValueError:
        raise ValueError(f"fault {spec!r}: bad value for {key}: {raw!r}") from None
    return raw
