"""Prometheus metrics: one :class:`Metrics` object per app, built in ``open_services`` and passed around.

Every metric lives in the object's own ``CollectorRegistry`` (two apps in one process, as in tests, count apart).
With ``PROMETHEUS_MULTIPROC_DIR`` set in the process environment *before* the gateway starts (the ``--workers``
supervisor's job: set it to an empty directory, clean it at start, and call
``prometheus_client.multiprocess.mark_process_dead(pid)`` for each worker that exits), ``prometheus_client`` keeps
every value in memory-mapped files of that directory, and :meth:`Metrics.exposition` sums the files of all
processes: any worker answering ``GET /metrics`` reports the whole deployment.

Callers do not touch ``prometheus_client``: they call the small methods below (``metrics.quota_refused("rpm")``),
each a dictionary lookup of a labelled child and an increment.

Names follow Prometheus conventions: a ``qg_`` prefix, seconds and ``_total`` suffixes. The list, with labels, is
in README.md ("Metrics").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .config import ConfigError

__all__ = [
    "MULTIPROC_ENV",
    "ROUTE",
    "UPSTREAM_WAIT",
    "InstrumentedChat",
    "InstrumentedRecognizer",
    "InstrumentedSynthesizer",
    "LoopLagSampler",
    "Metrics",
]

log = logging.getLogger("qwen_gateway.metrics")

#: the environment variable of prometheus_client's multiprocess mode
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: latency buckets (seconds) for requests and turn stages: 5 ms .. 60 s
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: small durations (seconds): gateway overhead, event-loop lag
_SMALL = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: history drain lag (seconds): a turn's time from the journal to the history database
_DRAIN = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

#: ASGI scope keys: the route (URL rule) of the request, and the seconds a route waited on the upstream before its
#: response started (what ``X-Gateway-Overhead-Ms`` leaves out)
ROUTE = "qg.route"
UPSTREAM_WAIT = "qg.upstream_wait"

#: HTTP methods kept as label values (any other is ``other``)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: the stages of a voice turn (``qg_voice_turn_stage_seconds{stage}``), all measured from the end of the upload
TURN_STAGES = ("recognition", "first_token", "first_tts_audio", "first_audio_sent", "total")


class Metrics:
    """The gateway's metrics (see the module docstring).

    Args:
        multiprocess_dir: ``PROMETHEUS_MULTIPROC_DIR`` when several processes serve (``Settings``); it must also
            be in the process environment before ``prometheus_client`` is imported, which is what makes values
            go to the shared files.
        enabled: ``QG_METRICS``.

    Raises:
        ConfigError: ``multiprocess_dir`` is given but prometheus_client is not in multiprocess mode.
    """

    def __init__(self, *, multiprocess_dir: str = "", enabled: bool = True) -> None:
        #: False (``QG_METRICS=off``): the app measures nothing and serves no ``/metrics``; the methods below
        #: still work (callers need not check)
        self.enabled = enabled
        self.multiprocess_dir = multiprocess_dir
        if enabled and multiprocess_dir and values.ValueClass is values.MutexValue:
            raise ConfigError(
                f"{MULTIPROC_ENV} must be set in the process environment before the gateway starts "
                "(a .env file is read too late for prometheus_client)"
            )
        self.registry = CollectorRegistry(auto_describe=False)
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._upstream_children: dict[tuple[str, str, str], Any] = {}
        r = self.registry
        self.http_requests = Counter(
            "qg_http_requests_total",
            "HTTP requests answered, by route (the URL rule), method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "qg_http_request_duration_seconds",
            "HTTP request duration, from the request to the end of the response body (streams included)",
            ["route", "method"],
            buckets=_LATENCY,
            registry=r,
        )
        self.http_overhead = Histogram(
            "qg_http_gateway_overhead_seconds",
            "Time spent in the gateway itself before the response started (X-Gateway-Overhead-Ms)",
            ["route"],
            buckets=_SMALL,
            registry=r,
        )
        self.ws_active = Gauge(
            "qg_ws_connections_active",
            "Open voice WebSocket connections",
            ["endpoint"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.ws_total = Counter(
            "qg_ws_connections_total",
            "Voice WebSocket connections accepted",
            ["endpoint"],
            registry=r,
        )
        self.turns_active = Gauge(
            "qg_voice_turns_active",
            "Voice turns running",
            ["endpoint"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.turns_total = Counter(
            "qg_voice_turns_total",
            "Voice turns ended, by outcome (completed, cancelled, failed)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.turn_stages = Histogram(
            "qg_voice_turn_stage_seconds",
            "Voice turn stages, from the end of the upload: recognition (final transcript), first_token, "
            "first_tts_audio (first PCM from TTS), first_audio_sent (first audio frame written), total",
            ["endpoint", "stage"],
            buckets=_LATENCY,
            registry=r,
        )
        self.turn_gateway = Histogram(
            "qg_voice_turn_gateway_seconds",
            "The gateway's own share of a voice turn's time to the first audio byte sent "
            "(transcript->chat request, first sentence->TTS, first PCM->first audio frame written)",
            ["endpoint"],
            buckets=_SMALL,
            registry=r,
        )
        self.barge_ins = Counter(
            "qg_voice_barge_ins_total",
            "Turns cut short by a new utterance (barge-in)",
            ["endpoint"],
            registry=r,
        )
        self.upstream_calls = Counter(
            "qg_upstream_calls_total",
            "Upstream calls by provider, service, protocol and outcome (ok, error, timeout, cancelled)",
            ["provider", "service", "protocol", "outcome"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "qg_upstream_retries_total",
            "Upstream attempts retried after a transient failure, by operation",
            ["operation"],
            registry=r,
        )
        self.quota_refusals = Counter(
            "qg_quota_refusals_total",
            "Requests or turns refused by a quota or limit, by limit",
            ["limit"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "qg_outbox_backlog",
            "Turns journaled and not yet in the history database",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.outbox_lag = Histogram(
            "qg_outbox_drain_lag_seconds",
            "Time from a turn's creation to its write into the history database",
            buckets=_DRAIN,
            registry=r,
        )
        self.errors = Counter(
            "qg_errors_total",
            "Errors sent: WebSocket error events (source=ws) and HTTP error responses (source=http), by code",
            ["source", "code"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "qg_event_loop_lag_seconds",
            "How late the event loop woke a 100 ms sleep (time the loop was busy elsewhere)",
            buckets=_SMALL,
            registry=r,
        )
        self.gc_pauses = Histogram(
            "qg_gc_pause_seconds",
            "Garbage-collector passes (each stops the event loop), by generation (2: full)",
            ["generation"],
            buckets=_SMALL,
            registry=r,
        )
        self.gc_frozen_objects = Gauge(
            "qg_gc_frozen_objects",
            "Objects the garbage collector no longer looks at (frozen after each full pass; see qwen_gateway.collector)",
            multiprocess_mode="livesum",
            registry=r,
        )

    # ------------------------------------------------------------------ the garbage collector (collector.GcObserver)
    def gc_pass(self, generation: int, seconds: float) -> None:
        if self.enabled:
            self.gc_pauses.labels(str(generation)).observe(seconds)

    def gc_frozen(self, objects: int) -> None:
        if self.enabled:
            self.gc_frozen_objects.set(objects)

    # ------------------------------------------------------------------ exposition
    def exposition(self) -> tuple[bytes, str]:
        """The text exposition (this process, or every process of the multiprocess directory) and its type."""
        if self.multiprocess_dir:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ------------------------------------------------------------------ what other code calls
    def http_request(
        self, route: str, method: str, status: int, seconds: float, overhead: float | None
    ) -> None:
        key = (route, method, status)
        children = self._http_children.get(key)
        # labelled children looked up once per (route, method, status): a lookup costs ~3 us
        if children is None:
            if method not in _METHODS:
                method = "other"
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_duration.labels(route, method),
                self.http_overhead.labels(route),
            )
            if len(self._http_children) < 4096:  # bounded, whatever clients send
                self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if overhead is not None:
            children[2].observe(overhead)

    def error(self, source: str, code: str) -> None:
        """An error event (``ws``) or HTTP error response (``http``) with ``code`` was sent."""
        self.errors.labels(source, code).inc()

    def quota_refused(self, limit: str) -> None:
        """A request or turn was refused by ``limit`` (``rpm``, ``sessions``, ``tokens_per_day``, ...)."""
        self.quota_refusals.labels(limit).inc()

    def retry(self, operation: str) -> None:
        """An upstream attempt is retried (the ``on_retry`` of ``Backoff``)."""
        self.upstream_retries.labels(operation).inc()

    def upstream_call(self, service: str, protocol: str, outcome: str) -> None:
        key = (service, protocol, outcome)
        child = self._upstream_children.get(key)
        if child is None:  # a few dozen combinations at most
            child = self._upstream_children[key] = self.upstream_calls.labels(
                "dashscope", service, protocol, outcome
            )
        child.inc()

    def outbox_drained(self, lag_seconds: float) -> None:
        """A journaled turn reached the history database ``lag_seconds`` after it was made."""
        self.outbox_lag.observe(max(lag_seconds, 0.0))

    def barge_in(self, endpoint: str) -> None:
        self.barge_ins.labels(endpoint).inc()

    def turn_stage(self, endpoint: str, stage: str, seconds: float | None) -> None:
        if seconds is not None:
            self.turn_stages.labels(endpoint, stage).observe(max(seconds, 0.0))

    def turn_gateway_share(self, endpoint: str, seconds: float) -> None:
        self.turn_gateway.labels(endpoint).observe(max(seconds, 0.0))


# ---------------------------------------------------------------------------------------------- event-loop lag
class LoopLagSampler:
    """Sleeps ``interval`` seconds in a loop and records how late it woke (``qg_event_loop_lag_seconds``); also
    refreshes the gauges read from objects (the outbox backlog) at each wake-up.

    Owned by the app: started ``before_serving``, cancelled and awaited ``after_serving``.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval: float = 0.1,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._metrics = metrics
        self._interval = interval
        self._backlog = backlog
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        observe = self._metrics.loop_lag.observe
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            observe(max(loop.time() - started - self._interval, 0.0))
            if self._backlog is not None:
                self._metrics.outbox_backlog.set(self._backlog())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------------------------------------- upstream calls
def _outcome(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "cancelled"
    if isinstance(exc, TimeoutError) or getattr(exc, "code", None) == "upstream_timeout":
        return "timeout"
    return "error"


class _Instrumented:
    """Delegates everything to ``inner``; the methods that reach the upstream count their outcome."""

    def __init__(self, inner: Any, metrics: Metrics, service: str, protocol: str) -> None:
        self._inner = inner
        self._count = metrics.upstream_call
        self._service = service
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _gen(
        self, gen: AsyncGenerator[Any, None], protocol: str
    ) -> AsyncGenerator[Any, None]:
        outcome = "ok"
        try:
            async for item in gen:
                yield item
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            await gen.aclose()
            self._count(self._service, protocol, outcome)

    @asynccontextmanager
    async def _session(self, cm: AbstractAsyncContextManager[Any]) -> AsyncIterator[Any]:
        outcome = "ok"
        try:
            async with cm as session:
                yield session
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._count(self._service, self._protocol, outcome)


class InstrumentedChat(_Instrumented):
    """A ``ChatModel`` whose calls are counted (protocol ``sse`` for streams, ``http`` for ``complete``)."""

    def stream(self, body: Any, *, api_key: str | None = None) -> AsyncGenerator[Any, None]:
        return self._gen(self._inner.stream(body, api_key=api_key), "sse")

    def relay_batches(self, body: Any, *, api_key: str | None = None) -> AsyncGenerator[Any, None]:
        return self._gen(self._inner.relay_batches(body, api_key=api_key), "sse")

    async def complete(self, body: Any, *, api_key: str | None = None) -> dict[str, Any]:
        outcome = "ok"
        try:
            result: dict[str, Any] = await self._inner.complete(body, api_key=api_key)
            return result
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._count(self._service, "http", outcome)


class InstrumentedRecognizer(_Instrumented):
    """A ``Recognizer`` whose sessions and file recognitions are counted."""

    def session(self, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        return self._session(self._inner.session(**kwargs))

    async def transcribe_url(self, url: str, *, api_key: str | None = None) -> str:
        outcome = "ok"
        try:
            text: str = await self._inner.transcribe_url(url, api_key=api_key)
            return text
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self._count(self._service, self._protocol, outcome)


class InstrumentedSynthesizer(_Instrumented):
    """A ``Synthesizer`` whose sessions are counted."""

    def session(self, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
        return self._session(self._inner.session(**kwargs))


def instrument_providers(
    providers: Any, metrics: Metrics, asr_protocol: str, tts_protocol: str
) -> None:
    """Wrap the engines of ``providers`` (in place) so that every upstream call is counted."""
    providers.chat = InstrumentedChat(providers.chat, metrics, "chat", "sse")
    providers.vlm = InstrumentedChat(providers.vlm, metrics, "vlm", "sse")
    providers.recognizer = InstrumentedRecognizer(
        providers.recognizer, metrics, "recognition", asr_protocol
    )
    providers.synthesizer = InstrumentedSynthesizer(
        providers.synthesizer, metrics, "synthesis", tts_protocol
    )


# ---------------------------------------------------------------------------------------------- HTTP
#: the header naming the gateway's own time before the response started
OVERHEAD_HEADER = b"x-gateway-overhead-ms"


def measure_http(asgi: Callable[..., Any], metrics: Metrics) -> Callable[..., Any]:
    """Wrap an ASGI app: count and time every HTTP request (to the end of its body) by route and status, and
    add ``X-Gateway-Overhead-Ms`` to every response: the time from the request's arrival to the response's start,
    minus the time the route waited on the upstream before it (``scope[UPSTREAM_WAIT]``: the whole upstream call
    of a non-streamed chat completion, the upstream's time to its first bytes for a stream)."""
    clock = time.perf_counter
    observe = metrics.http_request

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await asgi(scope, receive, send)
            return
        started = clock()
        status = 500
        overhead: float | None = None

        async def send_measured(message: dict[str, Any]) -> None:
            nonlocal status, overhead
            if message["type"] == "http.response.start":
                status = message["status"]
                overhead = max(clock() - started - scope.get(UPSTREAM_WAIT, 0.0), 0.0)
                headers = list(message.get("headers") or ())
                headers.append((OVERHEAD_HEADER, b"%.2f" % (overhead * 1000)))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await asgi(scope, receive, send_measured)
        finally:
            observe(
                scope.get(ROUTE, "unmatched"), scope["method"], status, clock() - started, overhead
            )

    return app
