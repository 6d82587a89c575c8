"""What a realtime session's responses and utterances leave behind: admission and usage against the key's quotas,
history rows (``channel: realtime``) through the outbox, and metrics (endpoint label ``realtime``).

The same books as the voice endpoints keep: a response is one request (requests per minute, an upstream slot)
that spends chat tokens and TTS characters; an utterance spends its recognised seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Literal

from protocol import realtime as rt

from ..errors import StorageError
from ..metrics import Metrics
from ..quota import Lease, Quotas, Refusal
from ..quota import Limits as QuotaLimits
from ..storage.history import TurnRecord, TurnStatus
from ..storage.outbox import Outbox
from ..voice.turn import SessionInfo
from .response import ResponseRun
from .utterance import Utterance

__all__ = ["ENDPOINT", "REFUSALS", "Ledger"]

log = logging.getLogger("qwen_gateway.realtime.ledger")

#: The metrics' endpoint label.
ENDPOINT = "realtime"

#: A response refused by a limit -> the error event's (type, code), as OpenAI names them.
REFUSALS = {
    "rpm": ("rate_limit_error", "rate_limit_exceeded"),
    "sessions": ("rate_limit_error", "rate_limit_exceeded"),
    "upstream": ("server_error", "server_busy"),
    "tokens": ("insufficient_quota", "insufficient_quota"),
    "tts_chars": ("insufficient_quota", "insufficient_quota"),
    "audio_seconds": ("insufficient_quota", "insufficient_quota"),
}

Outcome = Literal["completed", "cancelled", "failed"]


class Ledger:
    """The books of one session (see the module docstring)."""

    def __init__(
        self,
        info: SessionInfo,
        *,
        quotas: Quotas | None,
        quota_limits: QuotaLimits,
        metrics: Metrics | None,
        outbox: Outbox | None,
        clock: Callable[[], float],
    ) -> None:
        self._info = info
        self._quotas = quotas
        self._limits = quota_limits
        self._metrics = metrics
        self._outbox = outbox
        self._clock = clock

    # ------------------------------------------------------------------ quotas
    async def admit(self) -> Lease | Refusal | None:
        """Admit one response: its upstream slot (None without quotas), or why it is refused."""
        if self._quotas is None:
            return None
        got = await self._quotas.admit_upstream(
            self._info.owner, self._limits, ("tokens", "tts_chars", "audio_seconds")
        )
        if isinstance(got, Refusal) and self._metrics is not None:
            self._metrics.quota_refused(got.kind)
        return got

    def refusal(self, refusal: Refusal) -> rt.RealtimeError:
        kind, code = REFUSALS[refusal.kind]
        return rt.RealtimeError(code, refusal.message(), type=kind)

    def spent(self, run: ResponseRun, slot: Lease | None) -> None:
        """The response ended: give its upstream slot back, count its tokens and TTS characters."""
        if self._quotas is None:
            return
        self._quotas.release_soon(slot)
        result = run.result
        if result is not None:
            tokens = result.usage.total_tokens if result.usage else 0
            self._quotas.record(self._info.owner, {"tokens": tokens, "tts_chars": result.tts_chars})

    def heard(self, utterance: Utterance) -> None:
        """An utterance was recognised: count its seconds."""
        if self._quotas is not None:
            self._quotas.record(self._info.owner, {"audio_seconds": utterance.seconds})

    async def rate_limits(self) -> rt.RateLimitsUpdated:
        """``rate_limits.updated``: the key's daily token quota and what is left of it, when it has one."""
        limits: list[rt.RateLimit] = []
        cap = self._limits.tokens_per_day
        if cap is not None and self._quotas is not None:
            now = dt.datetime.now(dt.UTC)
            usage = await self._quotas.usage(self._info.owner, now.strftime("%Y%m%d"))
            midnight = (now + dt.timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            limits.append(
                rt.RateLimit(
                    name="tokens",
                    limit=int(cap),
                    remaining=max(0, int(cap - usage.get("tokens", 0))),
                    reset_seconds=round((midnight - now).total_seconds(), 3),
                )
            )
        return rt.RateLimitsUpdated(rate_limits=limits)

    # ------------------------------------------------------------------ metrics
    def started(self) -> None:
        if self._metrics is not None:
            self._metrics.turns_active.labels(ENDPOINT).inc()

    def ended(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.turns_active.labels(ENDPOINT).dec()
            self._metrics.turns_total.labels(ENDPOINT, outcome).inc()

    def barge_in(self) -> None:
        if self._metrics is not None:
            self._metrics.barge_in(ENDPOINT)

    def observe(
        self,
        run: ResponseRun,
        asked_at: float,
        heard: list[Utterance],
        first_sent: float | None,
    ) -> None:
        """The response's stages from the end of the user's speech (its commit; ``response.create`` when it
        waited for no audio), and the gateway's own share of the time to its first audio: transcript -> chat
        request, first sentence -> TTS, first PCM -> first audio frame written."""
        metrics, result = self._metrics, run.result
        if metrics is None or result is None:
            return
        committed = [u.committed_at for u in heard if u.committed_at is not None]
        transcribed = [u.transcript_at for u in heard if u.transcript_at is not None]
        start = max(committed) if committed else asked_at
        transcript_at = max(transcribed) if transcribed else asked_at
        for stage, at in (
            ("recognition", transcript_at if transcribed else None),
            ("first_token", result.first_token_at),
            ("first_tts_audio", result.first_pcm_at),
            ("first_audio_sent", first_sent),
            ("total", self._clock()),
        ):
            metrics.turn_stage(ENDPOINT, stage, None if at is None else at - start)
        chat_at, segment_at = run.chat_started_at, result.first_segment_at
        tts_at, pcm_at = result.first_tts_text_at, result.first_pcm_at
        if None in (chat_at, segment_at, tts_at, pcm_at, first_sent):
            return
        share = (
            (chat_at - transcript_at)  # type: ignore[operator]
            + (tts_at - segment_at)  # type: ignore[operator]
            + (first_sent - pcm_at)  # type: ignore[operator]
        )
        metrics.turn_gateway_share(ENDPOINT, share)

    # ------------------------------------------------------------------ history
    async def save(
        self, run: ResponseRun, response: rt.Response, *, model: str, user_text: str
    ) -> None:
        """An ended response as a history row: ``completed`` (or ``incomplete``) or ``failed`` with its code."""
        details = response.status_details
        error = details.error if details is not None else None
        code = error.code if isinstance(error, rt.ErrorDetail) else None
        status: TurnStatus = (
            "completed" if response.status in ("completed", "incomplete") else "failed"
        )
        record = self._record(run, status, code, run.assistant_text(), model, user_text)
        if record is None or self._outbox is None:
            return
        try:
            await self._outbox.submit(record)
        except (StorageError, ValueError, RuntimeError) as exc:
            log.error("realtime turn not saved: %s", type(exc).__name__)

    def journal_interrupted(
        self, run: ResponseRun, code: str, assistant: str, *, model: str, user_text: str
    ) -> None:
        """A cut-short response as an ``interrupted`` row, without waiting (a cancellation may not wait)."""
        record = self._record(run, "interrupted", code, assistant, model, user_text)
        if record is None or self._outbox is None:
            return
        try:
            self._outbox.submit_nowait(record)
        except (StorageError, ValueError, RuntimeError) as exc:
            log.error("realtime turn not saved: %s", type(exc).__name__)

    def _record(
        self,
        run: ResponseRun,
        status: TurnStatus,
        code: str | None,
        assistant: str,
        model: str,
        user_text: str,
    ) -> TurnRecord | None:
        result = run.result
        if result is None:
            return None
        usage = result.usage
        info = self._info
        return TurnRecord.new(
            owner=info.owner,
            conversation_id=info.conversation_id,
            channel="realtime",
            model=model,
            user_content=user_text,
            assistant_content=assistant,
            status=status,
            error_code=code,
            request_id=info.request_id,
            session_id=info.session_id,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
        )
