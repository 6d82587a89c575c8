"""The one place the app builds its DashScope engines from :class:`~qwen_gateway.config.Settings`.

Engines are chosen by the model catalogue (:mod:`.catalogue`): each recognition and synthesis model names the
protocol it speaks, looked up by exact name or family, never by substring; ``QG_ASR_PROTOCOL`` /
``QG_TTS_PROTOCOL`` name the protocol of a model the catalogue does not know yet.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from ...config import ConfigError, Settings
from ..base import ChatModel, Recognizer, Synthesizer
from .asr_file import FileRecognizer
from .asr_qwen_realtime import QwenRealtimeRecognizer
from .asr_realtime import RealtimeRecognizer, task_asr_parameters
from .catalogue import AsrProtocol, TtsProtocol, asr_model, tts_model
from .chat import DashScopeChat
from .http1 import Http1Pool, HttpxTransport, UpstreamTransport
from .policy import Backoff, ReadLimits, Timeouts
from .tts_http import HttpSynthesizer
from .tts_qwen import QwenRealtimeSynthesizer
from .tts_task import TaskSynthesizer

__all__ = [
    "Providers",
    "Tuning",
    "build_providers",
    "env_proxy_for",
    "new_chat_transport",
    "new_http_client",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuning:
    """Knobs that are not settings of the deployment (tests and benchmarks shorten them).

    Attributes:
        retry_base / retry_cap: backoff between retries (seconds; jittered, doubled per attempt).
        poll_initial / poll_max: delay between polls of a file-recognition task.
        task_timeout: the longest a file-recognition task may take in all.
        close_timeout: the WebSocket closing handshake.
        write_timeout: the longest wait for the upstream to accept what we send.
        tts_queue_chunks: PCM chunks buffered for a slow consumer before the upstream is no longer read.
        max_connections / max_keepalive: the shared HTTP pool, and the chat pool.
        keepalive_expiry: seconds an idle pooled connection may be reused.
    """

    retry_base: float = 0.25
    retry_cap: float = 4.0
    poll_initial: float = 0.5
    poll_max: float = 5.0
    task_timeout: float = 600.0
    close_timeout: float = 2.0
    write_timeout: float = 30.0
    tts_queue_chunks: int = 64
    max_connections: int = 512
    max_keepalive: int = 64
    keepalive_expiry: float = 30.0


@dataclass(slots=True, kw_only=True)
class Providers:
    """The engines the app uses; :meth:`aclose` releases what the factory created."""

    chat: ChatModel
    vlm: ChatModel
    recognizer: Recognizer
    synthesizer: Synthesizer
    http: httpx.AsyncClient
    #: what carries the chat and VLM requests (owned: closed by :meth:`aclose`).
    chat_transport: UpstreamTransport | None = None
    #: builds the recogniser of a catalogue model by name (see :meth:`recognizer_for`).
    recognizer_factory: Callable[[str], Recognizer] | None = None
    _owns_http: bool = field(default=False, repr=False)
    _recognizers: dict[str, Recognizer] = field(default_factory=dict, repr=False)

    def recognizer_for(self, model: str | None) -> Recognizer:
        """The recogniser of the catalogue model ``model`` (``audio.input.transcription.model`` on
        ``/v1/realtime``), built once per name with the same settings as the configured one; None, or the
        configured model's name: the configured one.

        Raises:
            CatalogueError: a name the catalogue does not know (the message names the accepted protocols).
        """
        if not model or model == self.recognizer.model or self.recognizer_factory is None:
            return self.recognizer
        found = self._recognizers.get(model)
        if found is None:
            found = self._recognizers[model] = self.recognizer_factory(model)
        return found

    async def aclose(self) -> None:
        """Close the chat transport, and the shared HTTP client if the factory created it (idempotent)."""
        transport, self.chat_transport = self.chat_transport, None
        try:
            if transport is not None:
                await transport.aclose()
        finally:
            if self._owns_http:
                self._owns_http = False
                await self.http.aclose()


def new_http_client(settings: Settings, tuning: Tuning | None = None) -> httpx.AsyncClient:
    """An HTTP/1.1 keep-alive client with the settings' timeouts (every call also sets its own)."""
    tuning = tuning or Tuning()
    return httpx.AsyncClient(
        http1=True,
        http2=False,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=tuning.write_timeout,
            pool=settings.connect_timeout,
        ),
        limits=httpx.Limits(
            max_connections=tuning.max_connections,
            max_keepalive_connections=tuning.max_keepalive,
            keepalive_expiry=tuning.keepalive_expiry,
        ),
        follow_redirects=False,
    )


def env_proxy_for(url: str) -> bool:
    """True when the environment (``HTTP(S)_PROXY``/``ALL_PROXY``, minus ``NO_PROXY``) names a proxy for ``url``."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme.lower()) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def new_chat_transport(
    settings: Settings, http: httpx.AsyncClient, tuning: Tuning | None = None
) -> UpstreamTransport:
    """What carries chat requests: a lean keep-alive pool, or ``http`` when a proxy must be used.

    The lean pool connects directly; only httpx honours proxies from the environment, so when one applies to
    ``QWEN_API_CHAT_URL`` the requests go through ``http`` as they always did.
    """
    tuning = tuning or Tuning()
    if env_proxy_for(settings.chat_url):
        return HttpxTransport(http)
    return Http1Pool(
        max_connections=tuning.max_connections,
        max_keepalive=tuning.max_keepalive,
        keepalive_expiry=tuning.keepalive_expiry,
    )


def build_providers(
    settings: Settings,
    http: httpx.AsyncClient | None = None,
    *,
    tuning: Tuning | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> Providers:
    """Build chat, VLM, recognition and synthesis engines from ``settings``.

    ``http`` is shared by every HTTP call but chat's (created, and then closed by :meth:`Providers.aclose`,
    when not given); chat and VLM share the transport of :func:`new_chat_transport`. Keys:
    ``settings.qwen_api_key`` unless a call passes its own ``api_key``. ``on_retry`` is called with the
    operation's name before every retry (metrics).
    """
    tuning = tuning or Tuning()
    owns = http is None
    client = http if http is not None else new_http_client(settings, tuning)
    timeouts = Timeouts(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=tuning.write_timeout,
        close=tuning.close_timeout,
        task=tuning.task_timeout,
    )
    backoff = Backoff(
        retries=settings.upstream_retries,
        base=tuning.retry_base,
        cap=tuning.retry_cap,
        on_retry=on_retry,
    )
    limits = ReadLimits(
        event=settings.upstream_max_event_bytes, body=settings.upstream_max_body_bytes
    )
    key = settings.qwen_api_key
    workspace = settings.workspace

    chat_transport = new_chat_transport(settings, client, tuning)
    chat = DashScopeChat(
        chat_transport,
        url=settings.chat_url,
        model=settings.chat_model,
        api_key=key,
        timeouts=timeouts,
        backoff=backoff,
        limits=limits,
        workspace=workspace,
    )
    vlm = DashScopeChat(
        chat_transport,
        url=settings.chat_url,
        model=settings.vlm_model,
        api_key=key,
        timeouts=timeouts,
        backoff=backoff,
        limits=limits,
        workspace=workspace,
    )

    def recognizer_of(name: str, protocol: str = "") -> Recognizer:
        return _recognizer(
            settings,
            name,
            protocol,
            client=client,
            timeouts=timeouts,
            backoff=backoff,
            tuning=tuning,
            limits=limits,
        )

    recognizer = recognizer_of(settings.asr_model, settings.asr_protocol)

    tts = tts_model(settings.tts_model_name, settings.tts_protocol)
    synthesizer: Synthesizer
    match tts.protocol:
        case TtsProtocol.TASK:
            synthesizer = TaskSynthesizer(
                ws_url=settings.dashscope_ws_base,
                model=tts.name,
                voice=settings.speech_voice,
                sample_rate=settings.speech_sample_rate,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                queue_chunks=tuning.tts_queue_chunks,
                workspace=workspace,
            )
        case TtsProtocol.REALTIME:
            synthesizer = QwenRealtimeSynthesizer(
                url=settings.tts_url,
                model=tts.name,
                voice=settings.speech_voice,
                sample_rate=settings.speech_sample_rate,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                queue_chunks=tuning.tts_queue_chunks,
                workspace=workspace,
            )
        case TtsProtocol.HTTP:
            synthesizer = HttpSynthesizer(
                chat_transport,
                url=settings.tts_http_endpoint,
                model=tts.name,
                voice=settings.speech_voice,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                workspace=settings.workspace,
                queue_chunks=tuning.tts_queue_chunks,
            )

    return Providers(
        chat=chat,
        vlm=vlm,
        recognizer=recognizer,
        synthesizer=synthesizer,
        http=client,
        chat_transport=chat_transport,
        recognizer_factory=recognizer_of,
        _owns_http=owns,
    )


def _recognizer(
    settings: Settings,
    name: str,
    protocol: str,
    *,
    client: httpx.AsyncClient,
    timeouts: Timeouts,
    backoff: Backoff,
    tuning: Tuning,
    limits: ReadLimits,
) -> Recognizer:
    """The engine of the recognition model ``name`` (its protocol from the catalogue, or ``protocol``)."""
    key = settings.qwen_api_key
    workspace = settings.workspace
    asr = asr_model(name, protocol)
    match asr.protocol:
        case AsrProtocol.TASK:
            return RealtimeRecognizer(
                ws_url=settings.dashscope_ws_base,
                model=name,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                http=client,
                parameters=task_asr_parameters(name),
                workspace=workspace,
                spec=asr,
            )
        case AsrProtocol.REALTIME:
            return QwenRealtimeRecognizer(
                url=settings.realtime_ws_url,
                model=name,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                workspace=workspace,
                spec=asr,
            )
        case AsrProtocol.FILE_URLS | AsrProtocol.FILE_URL:
            return FileRecognizer(
                client,
                http_base=settings.dashscope_http_base,
                model=name,
                api_key=key,
                timeouts=timeouts,
                backoff=backoff,
                protocol=asr.protocol,
                workspace=workspace,
                poll_initial=tuning.poll_initial,
                poll_max=tuning.poll_max,
                limits=limits,
            )
        case _:
            raise ConfigError(
                f"QWEN_AUDIO_RECOGNIZE_MODEL={asr.name}: the {asr.protocol} protocol has no engine yet"
            )
