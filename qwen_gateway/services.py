"""The gateway's long-lived services, built once and passed into :func:`qwen_gateway.app.create_app`.

``async with open_services(settings) as services:`` builds everything (the DashScope simulator first when the
gateway runs keyless, then the shared HTTP client, the upstream providers, the history store, the outbox drainer,
the object store and the quotas) inside one ``TaskGroup``, and closes them in reverse order on exit. Nothing here is
global. The :class:`~qwen_gateway.metrics.Metrics` object is built here too, and handed to what counts: the
providers are wrapped to count upstream calls, their backoff counts retries, the outbox reports its drain lag.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from .auth import KeyChecker
from .config import Settings
from .metrics import Metrics, instrument_providers
from .quota import Quotas, open_quotas

if TYPE_CHECKING:
    from .providers.dashscope import Providers
    from .storage import Storage

__all__ = ["Services", "load_owner_secret", "open_services", "simulated_settings"]

log = logging.getLogger("qwen_gateway.services")


@dataclass
class Services:
    settings: Settings
    keys: KeyChecker
    http: httpx.AsyncClient
    providers: Providers
    storage: Storage
    metrics: Metrics
    quotas: Quotas
    simulator: Any = None  # the in-process DashScope simulator when running keyless
    #: this process's number under ``serve --workers N`` (None: a single process)
    worker_id: int | None = None


def simulated_settings(settings: Settings, sim_env: dict[str, str], api_key: str) -> Settings:
    """``settings`` pointed at the simulator's endpoints (keyless mode)."""
    tts_model = settings.tts_model_name
    base_rt = sim_env["REAL_TIME_AUDIO_URL"].split("?", 1)[0]
    return dataclasses.replace(
        settings,
        simulate=True,
        qwen_api_key=api_key,
        chat_url=sim_env["QWEN_API_CHAT_URL"],
        tts_url=f"{base_rt}?model={tts_model}",
        dashscope_ws_base=sim_env["DASHSCOPE_WEBSOCKET_BASE_URL"],
        dashscope_http_base=sim_env["DASHSCOPE_HTTP_BASE_URL"],
        tts_http_url="",  # HTTP synthesis: derived from the simulator's HTTP base
    )


def load_owner_secret(settings: Settings) -> bytes:
    """The key of the conversation-owner hash: ``QG_OWNER_SECRET``, else ``owner.key`` in the data dir (32 random
    bytes made on first use, mode 0600)."""
    from .storage.objects import load_signing_secret

    if settings.owner_secret:
        return settings.owner_secret.encode()
    return load_signing_secret(settings.data_dir / "owner.key")


@asynccontextmanager
async def open_services(
    settings: Settings, *, simulator_config: Any = None
) -> AsyncIterator[Services]:
    """Build every service for ``settings``; close them all on exit.

    With ``settings.simulate`` (or no ``QWEN_API_KEY``, decided by the caller) the DashScope simulator is started
    in-process on an ephemeral loopback port and the upstream URLs point at it.
    """
    from .providers.dashscope import build_providers, new_http_client
    from .storage import build_storage

    keys = KeyChecker.from_settings(settings, owner_secret=load_owner_secret(settings))
    async with AsyncExitStack() as stack:
        simulator = None
        if settings.simulate:
            from .simulator import Simulator, SimulatorConfig

            api_key = "sk-simulated-local"
            config = simulator_config or SimulatorConfig(
                api_key=api_key, tts_realtime_factor=settings.simulator_tts_rtf
            )
            simulator = await stack.enter_async_context(Simulator(config, host="127.0.0.1", port=0))
            settings = simulated_settings(settings, simulator.env, config.api_key or api_key)
            log.info("upstream: simulated", extra={"fields": {"simulator": simulator.base_url}})
        metrics = Metrics(
            multiprocess_dir=settings.prometheus_multiproc_dir, enabled=settings.metrics
        )
        http = new_http_client(settings)
        stack.push_async_callback(http.aclose)
        providers = build_providers(
            settings, http, on_retry=metrics.retry if metrics.enabled else None
        )
        stack.push_async_callback(providers.aclose)
        if metrics.enabled:
            instrument_providers(
                providers, metrics, _asr_protocol(settings), _tts_protocol(settings)
            )
        storage = await stack.enter_async_context(build_storage(settings))
        if metrics.enabled:
            storage.outbox.on_stored = metrics.outbox_drained
        quotas = await stack.enter_async_context(
            open_quotas(
                settings.default_limits,
                redis_url=settings.redis_url,
                prefix=settings.redis_prefix,
                max_upstream=settings.max_upstream_sessions,
                upstream_wait=settings.upstream_queue_seconds,
            )
        )
        yield Services(
            settings=settings,
            keys=keys,
            http=http,
            providers=providers,
            storage=storage,
            metrics=metrics,
            quotas=quotas,
            simulator=simulator,
        )


def _asr_protocol(settings: Settings) -> str:
    from .providers.dashscope.catalogue import asr_model

    return str(asr_model(settings.asr_model, settings.asr_protocol).protocol)


def _tts_protocol(settings: Settings) -> str:
    from .providers.dashscope.catalogue import tts_model

    return str(tts_model(settings.tts_model_name, settings.tts_protocol).protocol)
