"""Paced delivery of an answer's audio (``?pace=realtime`` or ``?pace=<lead ms>``).

:class:`PacedEmit` sits between the answer stage and the turn's emit: every ``audio_stream`` ``data`` event that
carries a ``duration_ms`` waits until the audio already sent is at most the lead ahead of the client's playback
(the clock of which starts when the first audio event leaves), and ``audio_stream`` ``finished`` waits until the
last frame's playback time minus the lead (:class:`protocol.PlaybackSchedule`). Other events pass at once. A
device with a buffer of the lead plus one frame is then never overrun, and never told the audio ended while
frames it must still play are on their way.

Waiting is an ``await`` on the sender's task: the answer stage stops reading TTS meanwhile (backpressure, nothing
is dropped), and cancelling the turn (barge-in, ``cancel``) ends the wait at once. The clock and the sleep are
injectable so that the rule is tested without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from msgspec import UNSET

from protocol import AudioStreamData, AudioStreamFinished, PlaybackSchedule

from .answer import Emit

__all__ = ["PacedEmit"]


class PacedEmit:
    """An emit that paces audio events (see the module docstring); one per answer.

    Args:
        emit: where events go.
        lead_ms: how far ahead of playback audio may be sent.
        clock: seconds (the loop's monotonic clock by default).
        sleep: waits that many seconds (``asyncio.sleep`` by default).
        flushed: returns once the events emitted so far are on the wire; the playback clock then starts when
            the first audio event is, not when it was queued behind other events (None: when it was queued).
    """

    def __init__(
        self,
        emit: Emit,
        lead_ms: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        flushed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._emit = emit
        self._flushed = flushed
        self._clock = clock
        self._sleep = sleep
        self.schedule = PlaybackSchedule(lead_ms)
        #: seconds spent waiting so far
        self.waited = 0.0

    async def _until(self, due: float) -> None:
        while (delay := due - self._clock()) > 0:
            self.waited += delay
            await self._sleep(delay)

    async def __call__(self, event: Any) -> None:
        kind = type(event)
        if kind is AudioStreamData and event.duration_ms is not UNSET:
            await self._until(self.schedule.audio_due(self._clock()))
            await self._emit(event)
            if self.schedule.started_at is None and self._flushed is not None:
                await self._flushed()
            self.schedule.sent(event.duration_ms, self._clock())
        elif kind is AudioStreamFinished:
            await self._until(self.schedule.end_due(self._clock()))
            await self._emit(event)
        else:
            await self._emit(event)
