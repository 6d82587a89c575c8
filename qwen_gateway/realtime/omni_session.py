"""The Qwen-Omni backend of ``/v1/realtime`` on a connection: the shell's callbacks around one
:class:`~.omni.OmniBridge`.

::

    client frames --ClientEventPump (decoded, beta normalised; bad ones answered)--> OmniBridge --> DashScope
    DashScope --> OmniBridge (GA events) --> the connection's writer
    each response.done --> OmniTurn --> a history row (channel realtime), usage (tokens, audio seconds), metrics

Limits as the cascade's: the route holds the connection's session lease; the connection holds one upstream slot
for its whole life (it is one DashScope session), admitted when it opens (requests per minute, daily quotas, the
deployment's upstream sessions); every response spends its tokens and the user's audio seconds. The bridge
ending (the upstream is gone: it sent its ``error`` event) ends the connection with 1011; the client leaving
cancels the bridge, which closes the upstream socket. After ``QG_MAX_TURNS`` responses the connection ends
(``too_many_turns``, 1008), as on the cascade. On a drain, a running response may finish (within the
grace period), then ``error`` ``shutting_down`` and close 1001, as the cascade does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from protocol import realtime as rt

from ..config import Settings
from ..errors import StorageError
from ..lifecycle import Lifecycle
from ..metrics import Metrics
from ..quota import Lease, Quotas, Refusal
from ..quota import Limits as QuotaLimits
from ..storage.history import TurnRecord, TurnStatus
from ..storage.outbox import Outbox
from ..voice.turn import SessionInfo
from ..ws import WsConnection
from .ledger import ENDPOINT, REFUSALS
from .omni import OmniBridge, OmniTurn, OmniUsage
from .passthrough import ClientEventPump

__all__ = ["OmniSession"]

log = logging.getLogger("qwen_gateway.realtime.omni")

#: A response's final status -> the history row's status, and the turn metric's outcome.
_STATUSES: dict[str, tuple[TurnStatus, str]] = {
    "completed": ("completed", "completed"),
    "incomplete": ("completed", "completed"),
    "cancelled": ("interrupted", "cancelled"),
    "failed": ("failed", "failed"),
}

_encoder = msgspec.json.Encoder()


class OmniSession:
    """One ``/v1/realtime`` connection on a Qwen-Omni realtime model (see the module docstring).

    Use: ``await conn.run(session.on_frame, on_open=session.on_open)``.
    """

    def __init__(
        self,
        conn: WsConnection,
        settings: Settings,
        info: SessionInfo,
        *,
        model: str,
        outbox: Outbox | None,
        quotas: Quotas | None = None,
        quota_limits: QuotaLimits | None = None,
        metrics: Metrics | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self._conn = conn
        self._info = info
        self._model = model
        self._outbox = outbox
        self._quotas = quotas
        self._quota_limits = quota_limits or QuotaLimits()
        self._metrics = metrics
        self._lifecycle = lifecycle
        self._pump = ClientEventPump(
            self._send_error, rt.RealtimeLimits(max_frame_bytes=settings.max_frame_bytes)
        )
        self._slot: Lease | None = None
        self._max_turns = settings.max_turns_per_connection
        self._turns = 0  # turns reported so far
        self._events = 0
        self._responses = 0  # running now (response.created sent, response.done not yet)
        self._idle = asyncio.Event()
        self._idle.set()
        self.bridge = OmniBridge(
            settings=settings,
            model=model,
            api_key=info.api_key,
            send=self._send,
            on_usage=self._usage,
            on_turn=self._turn,
        )

    # ------------------------------------------------------------------ the connection's callbacks
    async def on_open(self) -> None:
        """Admit the connection's upstream session, then start the bridge (it sends ``session.created``)."""
        if self._quotas is not None:
            got = await self._quotas.admit_upstream(
                self._info.owner, self._quota_limits, ("tokens", "audio_seconds")
            )
            if isinstance(got, Refusal):
                if self._metrics is not None:
                    self._metrics.quota_refused(got.kind)
                kind, code = REFUSALS[got.kind]
                await self._send_error(
                    rt.error_event(rt.RealtimeError(code, got.message(), type=kind))
                )
                self._conn.close(1013, "try again later")
                return
            self._slot = got
        if self._lifecycle is not None:
            self._conn.spawn(self._drain_watch(self._lifecycle), name="realtime-omni-drain")
        self._conn.spawn(self._run(), name="realtime-omni")

    async def on_frame(self, frame: str | bytes) -> None:
        """A client frame: decoded and queued for the bridge (a bad one is answered with an ``error``)."""
        if self._conn.closing:
            return
        await self._pump.on_frame(frame)

    # ------------------------------------------------------------------ the bridge
    async def _run(self) -> None:
        try:
            await self.bridge.run(self._pump.events())
        finally:
            if self._quotas is not None:
                self._quotas.release_soon(self._slot)
                self._slot = None
            while self._responses:  # cut short with the connection: no response.done came
                self._response_ended()
        self._conn.close(1011, "upstream session ended")  # after the bridge's error event

    async def _send(self, event: dict[str, Any]) -> None:
        self._events += 1
        event["event_id"] = f"event_{self._events}"
        await self._conn.send(_encoder.encode(event).decode())
        kind = event["type"]
        if kind == "response.created":
            self._responses += 1
            self._idle.clear()
            if self._lifecycle is not None:
                self._lifecycle.turn_started()
            if self._metrics is not None:
                self._metrics.turns_active.labels(ENDPOINT).inc()
        elif kind == "response.done":
            if self._responses:
                self._response_ended()
        elif kind == "error" and self._metrics is not None:
            self._metrics.error("ws", str(event["error"].get("code") or "error"))

    def _response_ended(self) -> None:
        self._responses -= 1
        if not self._responses:
            self._idle.set()
        if self._lifecycle is not None:
            self._lifecycle.turn_ended()
        if self._metrics is not None:
            self._metrics.turns_active.labels(ENDPOINT).dec()

    async def _send_error(self, event: rt.RealtimeErrorEvent) -> None:
        self._events += 1
        await self._conn.send(rt.encode_server_event(event, f"event_{self._events}"))
        if self._metrics is not None:
            self._metrics.error("ws", event.error.code or "error")

    async def _drain_watch(self, lifecycle: Lifecycle) -> None:
        """When the server drains: a running response may end (until the grace period is over), then
        ``error`` ``shutting_down`` and close 1001."""
        await lifecycle.wait_draining()
        await lifecycle.wait_expired_or(self._idle.wait())
        await self._send_error(
            rt.error_event(
                rt.RealtimeError(
                    "shutting_down", "the server is restarting: reconnect", type="server_error"
                )
            )
        )
        self._conn.close(1001, "server shutting down")

    # ------------------------------------------------------------------ accounting
    def _usage(self, usage: OmniUsage) -> None:
        if self._quotas is not None:
            self._quotas.record(self._info.owner, {"tokens": usage.total_tokens})

    async def _turn(self, turn: OmniTurn) -> None:
        try:
            await self._account(turn)
        finally:
            self._turns += 1
        if self._turns >= self._max_turns:  # Omni answers by itself: the connection ends instead
            await self._send_error(
                rt.error_event(
                    rt.RealtimeError(
                        "too_many_turns",
                        f"this connection had its {self._max_turns} responses (QG_MAX_TURNS): "
                        "reconnect",
                    )
                )
            )
            self._conn.close(1008, "too many turns")

    async def _account(self, turn: OmniTurn) -> None:
        """A turn's usage, metrics and history row."""
        status, outcome = _STATUSES.get(turn.status, ("failed", "failed"))
        if self._quotas is not None:
            self._quotas.record(self._info.owner, {"audio_seconds": turn.input_audio_ms / 1000})
        metrics = self._metrics
        if metrics is not None:
            metrics.turns_total.labels(ENDPOINT, outcome).inc()
            t = turn.timings
            for stage, ms in (("first_audio_sent", t.first_audio_ms), ("total", t.total_ms)):
                metrics.turn_stage(ENDPOINT, stage, None if ms is None else ms / 1000)
            if t.gateway_first_audio_ms is not None:
                metrics.turn_gateway_share(ENDPOINT, t.gateway_first_audio_ms / 1000)
            if turn.status_reason == "turn_detected":
                metrics.barge_in(ENDPOINT)
        if self._outbox is None:
            return
        usage = turn.usage
        try:
            record = TurnRecord.new(
                owner=self._info.owner,
                conversation_id=self._info.conversation_id,
                channel="realtime",
                model=self._model,
                user_content=turn.user_transcript,
                assistant_content=turn.assistant_transcript,
                status=status,
                error_code=turn.status_reason if status != "completed" else None,
                request_id=self._info.request_id,
                session_id=self._info.session_id,
                prompt_tokens=usage.input_tokens if usage else 0,
                completion_tokens=usage.output_tokens if usage else 0,
                total_tokens=usage.total_tokens if usage else 0,
                first_audio_ms=turn.timings.first_audio_ms,
                total_ms=turn.timings.total_ms,
            )
            await self._outbox.submit(record)
        except (StorageError, ValueError, RuntimeError) as exc:
            log.error("realtime turn not saved: %s", type(exc).__name__)
