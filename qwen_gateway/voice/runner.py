"""Runs one voice WebSocket: frames -> codec -> session machine -> actions -> the connection and the turns.

The machine (``protocol.AudioSession`` / ``VlmSession``) decides; :class:`VoiceRunner` executes what it returns,
on a :class:`~qwen_gateway.ws.WsConnection`: ``Send`` queues an event for the writer, ``StartTurn`` /
``StartVlmTurn`` start a turn task in the connection's group, ``FeedAudio`` / ``UploadComplete`` hand the upload
to the running turn (dropped when they name a turn that is no longer running), ``CancelTurn`` cancels the turn
and waits until it has ended, ``Close`` closes after the queued events. A timer calls the machine's ``tick``
when an incomplete upload waited too long.

:func:`handshake` reads what the client asked for at the upgrade (key, options); :func:`serve_voice` runs the
accepted connection. The two routes are these two calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from msgspec import UNSET

from protocol import Action as SessionAction
from protocol import (
    AudioSession,
    AudioStreamData,
    CancelReason,
    CancelTurn,
    Close,
    ErrorCode,
    ErrorEvent,
    FeedAudio,
    Limits,
    ProtocolError,
    Send,
    StartTurn,
    StartVlmTurn,
    UploadComplete,
    VlmSession,
    decode_audio_client,
    decode_stream_client,
    decode_vlm_client,
    device_options,
    encode_event,
)

from ..auth import bearer_token
from ..config import Settings
from ..lifecycle import Lifecycle
from ..logs import bind
from ..quota import Limits as QuotaLimits
from ..quota import Quotas, Refusal
from ..ws import CloseInfo, WebSocketLike, WsConnection, WsLimits

if TYPE_CHECKING:
    from ..services import Services
from .memory import ConversationMemory
from .turn import AudioTurn, SessionInfo, TurnDeps, VlmTurn, VoiceConfig, error_code

__all__ = [
    "Endpoint",
    "Handshake",
    "VoiceRunner",
    "handshake",
    "refusal_event",
    "serve_voice",
    "session_limits",
]

log = logging.getLogger("qwen_gateway.voice.runner")

#: The two voice endpoints.
Endpoint = Literal["audio", "vlm"]

_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _error_frame(code: str, message: str) -> str:
    return encode_event(ErrorEvent(message=message, code=error_code(code)))


#: The ``error`` code of a refused turn or session, by what refused it.
_REFUSAL_CODES = {
    "rpm": ErrorCode.RATE_LIMITED,
    "sessions": ErrorCode.RATE_LIMITED,
    "upstream": ErrorCode.SERVER_BUSY,
    "tokens": ErrorCode.QUOTA_EXCEEDED,
    "tts_chars": ErrorCode.QUOTA_EXCEEDED,
    "audio_seconds": ErrorCode.QUOTA_EXCEEDED,
}


def refusal_event(refusal: Refusal, turn_id: int | None = None) -> ErrorEvent:
    """The ``error`` event of a turn (or session) refused by a limit; the connection stays open."""
    return ErrorEvent(
        message=refusal.message(),
        code=_REFUSAL_CODES[refusal.kind],
        turn_id=UNSET if turn_id is None else turn_id,
        retry_after=refusal.retry_seconds,
    )


def session_limits(settings: Settings, endpoint: Endpoint) -> Limits:
    """The protocol limits of ``endpoint`` from ``settings``."""
    packet = settings.audio_packet_bytes if endpoint == "audio" else settings.vlm_packet_bytes
    return Limits(
        max_frame_bytes=settings.max_frame_bytes,
        max_packet_bytes=packet,
        max_upload_bytes=settings.max_upload_bytes,
        max_packets=settings.max_packets,
        upload_idle_timeout=settings.upload_idle_timeout,
        max_turns=settings.max_turns_per_connection,
    )


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the client presented at the upgrade.

    Attributes:
        token: the gateway key (``Authorization: Bearer`` or ``?token=``), if any; never in the repr.
        info: the session the connection will run.
    """

    token: str | None = field(repr=False)
    info: SessionInfo


def handshake(
    authorization: str | None,
    args: Mapping[str, str],
    settings: Settings,
    request_id: str = "",
    *,
    owner_of: Callable[[str | None], str],
) -> Handshake:
    """Read the key (``Authorization`` header value, or ``?token=``) and the options of a voice handshake.

    Options (query parameters): ``token`` (browsers cannot set headers), ``conversation_id`` (resume one of the
    caller's conversations; default: a new one per connection), ``format`` (declared upload format, e.g.
    ``pcm;rate=16000``), ``events=extended`` (events beyond the seed's, such as ``transcription_partial``), and
    the device options (``audio_format``, ``sample_rate``, ``frame_ms``, ``pace``, ``mode``, ``silence_ms``:
    :mod:`protocol.device`).
    ``owner_of`` names the owner of a caller presenting a key (``KeyChecker.owner``): the conversation is the
    owner's, so another caller naming the same id has another conversation.

    Raises:
        HandshakeError: a device option has a value the gateway does not take (answered 400, no upgrade).
    """
    device = device_options(args)
    token = bearer_token(authorization) or (args.get("token") or None)
    session_id = str(uuid.uuid4())
    conversation = args.get("conversation_id", "")
    if not _CONVERSATION_ID.match(conversation):
        conversation = f"conv-{session_id}"
    info = SessionInfo(
        session_id=session_id,
        conversation_id=conversation,
        owner=owner_of(token),
        api_key=token if settings.key_passthrough else None,
        declared_format=args.get("format") or None,
        extended="extended" in args.get("events", "").split(","),
        request_id=request_id,
        device=device,
    )
    return Handshake(token, info)


class VoiceRunner:
    """Executes a session machine's actions for one connection (see the module docstring).

    Args:
        conn: the connection (its ``run`` calls :meth:`on_open` and :meth:`on_frame`).
        endpoint: ``audio`` or ``vlm``.
        deps: what turns use.
        info: the session.
        limits: the protocol limits.
        memory: the conversation carried from turn to turn.
        quotas: the key's limits are checked before each turn starts (it counts as one request and spends the
            daily quotas) and its usage recorded when it ends; an upstream session is held while it runs.
        quota_limits: the caller's limits.
        clock: monotonic seconds.
        lifecycle: the server's; when it drains, the connection is closed once idle, and a turn still running at
            the end of the grace period is cut short (``shutting_down``). None: never drained.
    """

    def __init__(
        self,
        conn: WsConnection,
        endpoint: Endpoint,
        deps: TurnDeps,
        info: SessionInfo,
        limits: Limits,
        memory: ConversationMemory,
        *,
        quotas: Quotas | None = None,
        quota_limits: QuotaLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self._quotas = quotas
        self._quota_limits = quota_limits or QuotaLimits()
        self._conn = conn
        self._lifecycle = lifecycle
        self._endpoint = endpoint
        self._deps = deps
        self._info = info
        self._limits = limits
        self._memory = memory
        self._clock = clock
        self.machine: AudioSession | VlmSession = (
            AudioSession(info.session_id, limits)
            if endpoint == "audio"
            else VlmSession(info.session_id, limits)
        )
        self._decode: Callable[[str | bytes, Limits], Any] = (
            decode_vlm_client
            if endpoint == "vlm"
            else decode_stream_client
            if info.device.stream
            else decode_audio_client
        )
        self._lock = asyncio.Lock()
        self._deadline_armed = asyncio.Event()
        self._turn: AudioTurn | VlmTurn | None = None
        self._task: asyncio.Task[None] | None = None
        self._turn_ended = asyncio.Event()
        self._metrics = deps.metrics

    async def emit(self, event: Any) -> None:
        """Queue ``event`` for the client (waits while the client is slow)."""
        await self._conn.send(encode_event(event))
        # metrics: errors by code, and when the first audio of the turn reaches the wire
        kind = type(event)
        if kind is AudioStreamData:
            turn = self._turn
            if turn is not None and turn.first_audio_sent_at is None and self._metrics is not None:
                turn.first_audio_sent_at = 0.0  # marked: the writer sets the time
                await self._conn.after_sent(turn.audio_sent)
        elif kind is ErrorEvent and self._metrics is not None:
            self._metrics.error("ws", str(event.code or "error"))

    async def flushed(self) -> None:
        """Return once the events queued so far have been handed to the server (or the connection is closing)."""
        sent = asyncio.Event()
        await self._conn.after_sent(sent.set)
        if not self._conn.closing:
            await sent.wait()

    async def on_open(self) -> None:
        """Send ``connected`` and start the upload-deadline timer."""
        self._conn.spawn(self._ticker(), name="voice-ticker")
        if self._lifecycle is not None:
            self._conn.spawn(self._drain_watch(self._lifecycle), name="voice-drain")
        async with self._lock:
            await self._execute(self.machine.open(self._clock()))

    async def on_frame(self, frame: str | bytes) -> None:
        """Decode a client frame, feed the machine, execute its actions."""
        now = self._clock()
        machine = self.machine
        if machine.state.name == "CLOSED":
            return  # closing: frames still arriving are ignored
        had_deadline = machine.deadline() is not None
        async with self._lock:
            try:
                message = self._decode(frame, self._limits)
            except ProtocolError as exc:
                actions = machine.reject(exc, now)
            else:
                actions = machine.receive(message, now)
            await self._execute(actions)
        if not had_deadline and machine.deadline() is not None:
            self._deadline_armed.set()

    async def _ticker(self) -> None:
        machine = self.machine
        while True:
            deadline = machine.deadline()
            if deadline is None:
                await self._deadline_armed.wait()
                self._deadline_armed.clear()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            async with self._lock:
                if machine.state.name != "CLOSED":
                    await self._execute(machine.tick(self._clock()))

    async def _execute(self, actions: list[SessionAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self.emit(action.event)
            elif isinstance(action, FeedAudio):
                if isinstance(self._turn, AudioTurn) and self._turn.turn_id == action.turn_id:
                    await self._turn.feed(action.data)
            elif isinstance(action, UploadComplete):
                if isinstance(self._turn, AudioTurn) and self._turn.turn_id == action.turn_id:
                    await self._turn.complete(action.size, action.packets)
            elif isinstance(action, StartTurn):
                self._start(
                    AudioTurn(
                        self._deps,
                        self._info,
                        self._memory,
                        action.turn_id,
                        self.emit,
                        flushed=self.flushed,
                        speech_ended=self._speech_end_of(action.turn_id)
                        if self._info.device.stream
                        else None,
                    )
                )
            elif isinstance(action, StartVlmTurn):
                self._start(
                    VlmTurn(
                        self._deps,
                        self._info,
                        self._memory,
                        action.turn_id,
                        self.emit,
                        audio=action.audio,
                        image=action.image,
                        flushed=self.flushed,
                    )
                )
            elif isinstance(action, CancelTurn):
                await self._cancel(action.turn_id, action.reason)
            elif isinstance(action, Close):
                self._conn.close(action.code, action.reason)

    # ------------------------------------------------------------------ server drain
    async def _drain_watch(self, lifecycle: Lifecycle) -> None:
        """When the server drains: close at once if idle, else once the running turn has ended, or cut the turn
        short when the grace period is over (``shutting_down`` error, close 1001)."""
        await lifecycle.wait_draining()
        while True:
            async with self._lock:
                if self.machine.state.name == "CLOSED":
                    return
                if self._task is None or lifecycle.expired:
                    await self._execute(self.machine.shutdown())
                    return
                self._turn_ended.clear()
            await lifecycle.wait_expired_or(self._turn_ended.wait())

    def _refuse_turn_while_draining(self) -> bool:
        """A turn asked for after the drain began is not started: the connection is shut down instead."""
        return self._lifecycle is not None and self._lifecycle.draining

    def _start(self, turn: AudioTurn | VlmTurn) -> None:
        if self._refuse_turn_while_draining():
            # The machine counted the turn; ``shutdown`` reports it and closes (its cancel finds no task).
            self._conn.spawn(self._execute_locked(self.machine.shutdown()), name="voice-refuse")
            return
        if self._lifecycle is not None:
            self._lifecycle.turn_started()
        self._turn = turn
        self._task = self._conn.spawn(self._run_turn(turn), name=f"voice-turn-{turn.turn_id}")
        log.info("turn started", extra={"fields": {"turn_id": turn.turn_id}})

    def _speech_end_of(self, turn_id: int) -> Callable[[], None]:
        """What turn ``turn_id`` calls when the VAD heard the end of its open-microphone speech: the machine
        completes the upload (in a task of its own: the turn's upload reader must not wait for the lock)."""
        machine = self.machine
        assert isinstance(machine, AudioSession)

        async def ended() -> None:
            async with self._lock:
                if machine.state.name != "CLOSED":
                    await self._execute(machine.speech_ended(turn_id))

        def report() -> None:
            with contextlib.suppress(RuntimeError):  # the connection is ending: nothing to complete
                self._conn.spawn(ended(), name=f"voice-speech-end-{turn_id}")

        return report

    async def _execute_locked(self, actions: list[SessionAction]) -> None:
        async with self._lock:
            await self._execute(actions)

    async def _run_turn(self, turn: AudioTurn | VlmTurn) -> None:
        metrics, endpoint = self._metrics, self._endpoint
        if metrics is not None:
            metrics.turns_active.labels(endpoint).inc()
        outcome = "failed"
        quotas = self._quotas
        slot = None
        try:
            if quotas is not None:
                got = await quotas.admit_upstream(
                    self._info.owner,
                    self._quota_limits,
                    ("tokens", "tts_chars", "audio_seconds"),
                )
                refusal, slot = (got, None) if isinstance(got, Refusal) else (None, got)
                if refusal is not None:
                    log.info(
                        "turn refused: limit reached",
                        extra={"fields": {"turn_id": turn.turn_id, "limit": refusal.kind}},
                    )
                    if metrics is not None:
                        metrics.quota_refused(refusal.kind)
                    outcome = "refused"
                    await self.emit(refusal_event(refusal, turn.turn_id))
                    return
            await turn.run()
            outcome = "completed"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if metrics is not None:
                metrics.turns_active.labels(endpoint).dec()
                metrics.turns_total.labels(endpoint, outcome).inc()
            if self._lifecycle is not None:
                self._lifecycle.turn_ended()
            self._turn_ended.set()
            if quotas is not None:
                quotas.release_soon(slot)
                quotas.record(self._info.owner, turn.usage())
            if isinstance(turn, AudioTurn):
                turn.close_inbox()
            if self._turn is turn:
                self._turn = None
                self._task = None
            if self.machine.state.name != "CLOSED":
                self.machine.turn_finished(turn.turn_id)

    async def _cancel(self, turn_id: int, reason: CancelReason) -> None:
        turn, task = self._turn, self._task
        if turn is None or task is None or turn.turn_id != turn_id:
            return
        if reason is not CancelReason.CLOSED:
            turn.cancel_reason = str(reason)
        if reason is CancelReason.BARGE_IN and self._metrics is not None:
            self._metrics.barge_in(self._endpoint)
        log.info("turn cancelled", extra={"fields": {"turn_id": turn_id, "reason": str(reason)}})
        task.cancel()
        await asyncio.wait([task])


async def serve_voice(
    websocket: WebSocketLike,
    services: Services,
    endpoint: Endpoint,
    info: SessionInfo,
    quota_limits: QuotaLimits | None = None,
    lifecycle: Lifecycle | None = None,
) -> CloseInfo:
    """Run an accepted voice WebSocket until it ends (see :class:`VoiceRunner`); ``quota_limits``: the caller's
    limits, checked by ``services.quotas`` at each turn.

    Raises:
        asyncio.CancelledError: the client went away; every turn and upstream connection was closed.
    """
    settings: Settings = services.settings
    bind(session_id=info.session_id)
    limits = session_limits(settings, endpoint)
    deps = TurnDeps.from_services(services, VoiceConfig.from_settings(settings))
    memory = ConversationMemory(
        services.storage.history,
        info.conversation_id,
        owner=info.owner,
        max_turns=deps.config.history_turns,
        max_tokens=deps.config.history_tokens,
    )
    metrics = deps.metrics
    error_frame = _error_frame
    if metrics is not None:
        # the shell's own error events (idle timeout, send timeout, internal error) are counted too
        def error_frame(code: str, message: str) -> str:
            metrics.error("ws", code)
            return _error_frame(code, message)

        metrics.ws_total.labels(endpoint).inc()
        metrics.ws_active.labels(endpoint).inc()
    conn = WsConnection(websocket, WsLimits.from_settings(settings), error_frame=error_frame)
    runner = VoiceRunner(
        conn,
        endpoint,
        deps,
        info,
        limits,
        memory,
        lifecycle=lifecycle,
        quotas=services.quotas,
        quota_limits=quota_limits,
    )
    log.info("voice connection open", extra={"fields": {"endpoint": endpoint}})
    counted = lifecycle.connection() if lifecycle is not None else contextlib.nullcontext()
    with counted:
        try:
            return await conn.run(runner.on_frame, on_open=runner.on_open)
        finally:
            runner.machine.close()
            if metrics is not None:
                metrics.ws_active.labels(endpoint).dec()
