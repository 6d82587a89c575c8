"""One typed, validated ``Settings`` object, read once from the environment and ``.env``.

Variable names follow the seed service's ``.env`` (``QWEN_API_KEY``, ``DB_HOST``, ``BUCKET`` ...) so an existing
deployment keeps its file; the DashScope SDK's own base-URL names cover the other upstream endpoints; everything
that is ours is prefixed ``QG_``. A bad value fails at start with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]

#: DashScope's host per region (``DASHSCOPE_REGION``), as the official SDK's legacy gateways; every upstream URL
#: not set explicitly is derived from it. ``intl`` is short for Singapore, the international site.
REGION_HOSTS = {
    "cn-beijing": "dashscope.aliyuncs.com",
    "intl": "dashscope-intl.aliyuncs.com",
    "ap-southeast-1": "dashscope-intl.aliyuncs.com",
    "cn-hongkong": "cn-hongkong.dashscope.aliyuncs.com",
    "us-east-1": "dashscope-intl.aliyuncs.com",
    "eu-central-1": "dashscope-intl.aliyuncs.com",
    "ap-northeast-1": "dashscope-intl.aliyuncs.com",
}
DEFAULT_TTS_MODEL = "qwen-tts-realtime"


def region_urls(region: str) -> dict[str, str]:
    """The four upstream URLs of ``region`` (``cn-beijing`` when unknown: :func:`validate` reports it)."""
    host = REGION_HOSTS.get(region, REGION_HOSTS["cn-beijing"])
    return {
        "chat_url": f"https://{host}/compatible-mode/v1/chat/completions",
        "tts_url": f"wss://{host}/api-ws/v1/realtime?model={DEFAULT_TTS_MODEL}",
        "dashscope_ws_base": f"wss://{host}/api-ws/v1/inference",
        "dashscope_http_base": f"https://{host}/api/v1",
    }


DEFAULT_CHAT_URL = region_urls("cn-beijing")["chat_url"]
DEFAULT_REALTIME_URL = region_urls("cn-beijing")["tts_url"]
DEFAULT_WS_BASE = region_urls("cn-beijing")["dashscope_ws_base"]
DEFAULT_HTTP_BASE = region_urls("cn-beijing")["dashscope_http_base"]

#: Seed variables that are accepted and ignored, with the reason shown at start.
IGNORED = {
    "FFMPEG_PATH": "MP3 is encoded in-process with lameenc; ffmpeg is no longer used",
    "TTS_OUTPUT_DIR": "uploads and answers are kept in the object store (BUCKET or QG_DATA_DIR/objects)",
}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _secret(env: str, default: Any = "") -> Any:
    """A setting whose value is secret: left out of ``repr()`` (and so of tracebacks, debug output and the reprs
    of everything holding the settings) and masked by :meth:`Settings.redacted`."""
    return field(default=default, repr=False, metadata={"env": env, "secret": True})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the gateway. Build it with :func:`load_settings` (or directly in tests)."""

    # --- upstream: DashScope (seed names) ---
    #: DashScope API key; empty = run against the built-in simulator (keyless mode, announced at start)
    qwen_api_key: str = _secret("QWEN_API_KEY")
    #: region of every DashScope URL not set explicitly (``cn-beijing``, ``intl`` ...: :data:`REGION_HOSTS`)
    region: str = field(default="cn-beijing", metadata={"env": "DASHSCOPE_REGION"})
    #: sub-workspace sent as ``X-DashScope-WorkSpace`` on every DashScope call ("" = the default workspace)
    workspace: str = field(default="", metadata={"env": "DASHSCOPE_WORKSPACE"})
    #: OpenAI-compatible chat endpoint ("" = the region's ``/compatible-mode/v1/chat/completions``)
    chat_url: str = field(default="", metadata={"env": "QWEN_API_CHAT_URL"})
    #: chat model when a request names none (and for voice turns)
    chat_model: str = field(default="qwen-plus", metadata={"env": "QWEN_CHAT_MODEL"})
    #: vision model for requests whose messages carry images (and ``/v1/chat/vlm``)
    vlm_model: str = field(default="qwen-vl-plus", metadata={"env": "QWEN_VLM_MODEL"})
    #: speech recognition model (any of the catalogue: README, "Speech models")
    asr_model: str = field(
        default="paraformer-realtime-v2", metadata={"env": "QWEN_AUDIO_RECOGNIZE_MODEL"}
    )
    #: realtime TTS WebSocket ("" = the region's ``/api-ws/v1/realtime?model=qwen-tts-realtime``)
    tts_url: str = field(default="", metadata={"env": "REAL_TIME_AUDIO_URL"})
    #: TTS model ("" = the ``model=`` of ``REAL_TIME_AUDIO_URL``)
    tts_model: str = field(default="", metadata={"env": "QG_TTS_MODEL"})
    #: "" = the TTS model's default voice (model catalogue)
    tts_voice: str = field(default="", metadata={"env": "TTS_VOICE"})
    #: 0 = the TTS model's default rate (model catalogue)
    tts_sample_rate: int = field(default=0, metadata={"env": "TTS_SAMPLE_RATE"})
    #: the protocol of a recognition model the catalogue does not know: ``task``, ``realtime``, ``file-urls``,
    #: ``file-url`` ("" = the catalogue's)
    asr_protocol: str = field(default="", metadata={"env": "QG_ASR_PROTOCOL"})
    #: the protocol of a TTS model the catalogue does not know: ``realtime``, ``task``, ``http``
    tts_protocol: str = field(default="", metadata={"env": "QG_TTS_PROTOCOL"})
    #: seed setting, accepted and ignored: audio is kept in the object store
    tts_output_dir: str = field(default="", metadata={"env": "TTS_OUTPUT_DIR"})
    #: system message prepended when a chat request has none (voice turns too)
    default_system_prompt: str = field(
        default="你是一个有帮助的助手。", metadata={"env": "DEFAULT_SYSTEM_PROMPT"}
    )
    #: DashScope inference WebSocket ("" = the region's ``/api-ws/v1/inference``)
    dashscope_ws_base: str = field(default="", metadata={"env": "DASHSCOPE_WEBSOCKET_BASE_URL"})
    #: DashScope HTTP API base ("" = the region's ``/api/v1``)
    dashscope_http_base: str = field(default="", metadata={"env": "DASHSCOPE_HTTP_BASE_URL"})
    #: ``/api-ws/v1/realtime`` for realtime recognition ("" = the path of ``REAL_TIME_AUDIO_URL``)
    realtime_base: str = field(default="", metadata={"env": "QG_DASHSCOPE_REALTIME_URL"})
    #: HTTP speech synthesis ("" = ``DASHSCOPE_HTTP_BASE_URL`` + ``/services/aigc/multimodal-generation/generation``)
    tts_http_url: str = field(default="", metadata={"env": "QG_TTS_HTTP_URL"})

    # --- object storage: Aliyun OSS (seed names); unset BUCKET = local folder ---
    #: Aliyun access key id for OSS
    oss_access_key_id: str = _secret("ACCESSKEY_ID")
    #: Aliyun access key secret for OSS
    oss_access_key_secret: str = _secret("ACCESSKEY_SECRET")
    #: OSS bucket for uploads and spoken answers; empty = the local folder ``QG_DATA_DIR/objects``
    oss_bucket: str = field(default="", metadata={"env": "BUCKET"})
    #: OSS region (the seed's spelling of the variable)
    oss_region: str = field(default="cn-beijing", metadata={"env": "REGIN"})
    #: OSS endpoint ("" = ``https://oss-<REGIN>.aliyuncs.com``)
    oss_endpoint: str = field(default="", metadata={"env": "QG_OSS_ENDPOINT"})
    #: base URL of links to OSS objects (a CDN or custom domain; "" = signed OSS URLs)
    oss_public_base_url: str = field(default="", metadata={"env": "QG_OSS_PUBLIC_BASE_URL"})
    #: concurrent OSS requests per process
    oss_pool_size: int = field(default=8, metadata={"env": "QG_OSS_POOL_SIZE"})
    #: secret (32+ characters) signing the links to objects in the local folder; empty = a random key kept in
    #: ``QG_DATA_DIR/object-signing.key``. Set the same value on every host that serves one local bucket.
    object_signing_key: str = _secret("QG_OBJECT_SIGNING_KEY")
    #: keep each voice turn's spoken answer (the MP3 sent) as an object (``tts/...``), named by the stored turn
    store_reply_audio: bool = field(default=True, metadata={"env": "QG_STORE_REPLY_AUDIO"})

    # --- history database (seed names); unset DB_HOST = SQLite under the data dir ---
    #: MySQL/MariaDB host of the history; empty = SQLite at ``QG_DATA_DIR/history.sqlite3`` (one host only)
    db_host: str = field(default="", metadata={"env": "DB_HOST"})
    #: MySQL/MariaDB port
    db_port: int = field(default=3306, metadata={"env": "DB_PORT"})
    #: MySQL/MariaDB user
    db_user: str = field(default="root", metadata={"env": "DB_USER"})
    #: MySQL/MariaDB password
    db_password: str = _secret("DB_PASSWORD")
    #: database of the history (created and migrated at start when the user may)
    db_name: str = field(default="qwen_gateway", metadata={"env": "DB_NAME"})
    #: database connections per process
    db_pool_size: int = field(default=8, metadata={"env": "QG_DB_POOL_SIZE"})

    # --- the gateway itself ---
    #: address to listen on (``0.0.0.0`` in a container)
    host: str = field(default="127.0.0.1", metadata={"env": "QG_HOST"})
    #: port to listen on (shared by every worker of ``--workers``)
    port: int = field(default=5000, metadata={"env": "QG_PORT"})
    #: local state: the turn journal, SQLite history and local objects when no database / bucket is set
    data_dir: Path = field(default=Path("data"), metadata={"env": "QG_DATA_DIR"})
    #: public base URL of the gateway (links to local objects, the open mode's allowed Host)
    public_url: str = field(default="", metadata={"env": "QG_PUBLIC_URL"})
    #: gateway keys callers present (``Authorization: Bearer``, or ``?token=`` on WebSockets)
    api_keys: tuple[str, ...] = _secret("QG_API_KEYS", ())
    #: file of SHA-256 hex digests of gateway keys, one per line
    api_keys_file: str = field(default="", metadata={"env": "QG_API_KEYS_FILE"})
    #: require gateway keys (``off``: open, loopback Host or ``QG_PUBLIC_URL`` only)
    auth: bool = field(default=True, metadata={"env": "QG_AUTH"})
    #: callers send their own DashScope key as the gateway key, passed upstream
    key_passthrough: bool = field(default=False, metadata={"env": "QG_KEY_PASSTHROUGH"})
    #: key of the hash that names a conversation's owner (at least 32 characters); unset: ``owner.key`` in the
    #: data dir, made on first start. Gateways sharing one history database must share it.
    owner_secret: str = _secret("QG_OWNER_SECRET")
    #: browser origins allowed for CORS and WebSocket handshakes (``*`` = any)
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "QG_CORS_ORIGINS"})
    #: ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR`` (JSON lines)
    log_level: str = field(default="INFO", metadata={"env": "QG_LOG_LEVEL"})
    #: ``auto``: JSON lines when stderr is not a terminal, one readable line per record on a terminal
    log_format: str = field(default="auto", metadata={"env": "QG_LOG_FORMAT"})
    #: on SIGTERM: seconds running turns get to finish before they are ended with ``shutting_down``
    drain_seconds: float = field(default=20.0, metadata={"env": "QG_DRAIN_SECONDS"})
    #: then: longest wait for the outbox to move journaled turns into the history database
    drain_outbox_seconds: float = field(default=5.0, metadata={"env": "QG_DRAIN_OUTBOX_SECONDS"})
    #: gateway processes sharing ``QG_PORT`` under one supervisor (``serve --workers N``; docs/deploy.md)
    workers: int = field(default=1, metadata={"env": "QG_WORKERS"})
    #: use the built-in DashScope simulator even when ``QWEN_API_KEY`` is set
    simulate: bool = field(default=False, metadata={"env": "QG_SIMULATE"})
    #: keyless mode: seconds of simulated synthesis per second of speech (1 = real time, 0 = at once)
    simulator_tts_rtf: float = field(default=1.0, metadata={"env": "QG_SIMULATOR_TTS_RTF"})

    # --- metrics (GET /metrics) ---
    #: off: no GET /metrics and nothing measured (the header X-Gateway-Overhead-Ms included)
    metrics: bool = field(default=True, metadata={"env": "QG_METRICS"})
    #: a bearer token that may read GET /metrics (besides the gateway keys)
    metrics_token: str = _secret("QG_METRICS_TOKEN")
    #: prometheus_client's multiprocess directory (set in the environment by the --workers supervisor)
    prometheus_multiproc_dir: str = field(default="", metadata={"env": "PROMETHEUS_MULTIPROC_DIR"})

    # --- limits ---
    #: largest HTTP request body (413 beyond)
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata={"env": "QG_MAX_BODY_BYTES"})
    #: largest WebSocket message
    max_frame_bytes: int = field(default=256 * 1024, metadata={"env": "QG_MAX_FRAME_BYTES"})
    #: largest decoded audio packet of ``/v1/chat/audio``
    audio_packet_bytes: int = field(default=8 * 1024, metadata={"env": "QG_AUDIO_PACKET_BYTES"})
    #: largest decoded packet of ``/v1/chat/vlm``
    vlm_packet_bytes: int = field(default=50 * 1024, metadata={"env": "QG_VLM_PACKET_BYTES"})
    #: largest upload of one turn (audio or image)
    max_upload_bytes: int = field(default=10 * 1024 * 1024, metadata={"env": "QG_MAX_UPLOAD_BYTES"})
    #: most packets of one upload
    max_packets: int = field(default=4096, metadata={"env": "QG_MAX_PACKETS"})
    #: most turns one WebSocket connection may run
    max_turns_per_connection: int = field(default=200, metadata={"env": "QG_MAX_TURNS"})
    #: seconds a WebSocket may stay silent before it is closed
    ws_idle_timeout: float = field(default=300.0, metadata={"env": "QG_WS_IDLE_TIMEOUT"})
    #: an upload that stays incomplete this long is discarded (``upload_timeout`` error)
    upload_idle_timeout: float = field(default=30.0, metadata={"env": "QG_UPLOAD_IDLE_TIMEOUT"})
    #: seconds a client may leave sent events unread before it is dropped
    ws_send_timeout: float = field(default=15.0, metadata={"env": "QG_WS_SEND_TIMEOUT"})
    #: WebSocket messages buffered per connection before TCP slows the sender
    ws_receive_queue: int = field(default=16, metadata={"env": "QG_WS_RECEIVE_QUEUE"})
    #: negotiate permessage-deflate on the WebSockets (inflation is then bounded by the message limit)
    ws_compression: bool = field(default=False, metadata={"env": "QG_WS_COMPRESSION"})
    #: previous turns given to a voice turn's chat as context
    history_turns: int = field(default=10, metadata={"env": "QG_HISTORY_TURNS"})
    #: voice chat context budget: previous turns are dropped (oldest first) beyond about this many tokens
    history_tokens: int = field(default=4000, metadata={"env": "QG_HISTORY_TOKENS"})
    #: longest spoken upload accepted (seconds of audio)
    max_audio_seconds: float = field(default=300.0, metadata={"env": "QG_MAX_AUDIO_SECONDS"})
    #: bitrate of the MP3 sent to voice clients
    mp3_bitrate_kbps: int = field(default=64, metadata={"env": "QG_MP3_BITRATE_KBPS"})

    # --- quotas and limits per key (docs: README "Quotas and limits"); None = no limit ---
    #: Redis shared by every gateway process ("" = limits held in this process only)
    redis_url: str = _secret("QG_REDIS_URL")
    #: prefix of every Redis key of this deployment
    redis_prefix: str = field(default="qg:", metadata={"env": "QG_REDIS_PREFIX"})
    limit_rpm: int | None = field(default=None, metadata={"env": "QG_LIMIT_RPM"})
    limit_sessions: int | None = field(default=None, metadata={"env": "QG_LIMIT_SESSIONS"})
    limit_tokens_per_day: int | None = field(
        default=None, metadata={"env": "QG_LIMIT_TOKENS_PER_DAY"}
    )
    limit_tts_chars_per_day: int | None = field(
        default=None, metadata={"env": "QG_LIMIT_TTS_CHARS_PER_DAY"}
    )
    limit_audio_seconds_per_day: float | None = field(
        default=None, metadata={"env": "QG_LIMIT_AUDIO_SECONDS_PER_DAY"}
    )
    #: the most concurrent upstream sessions (chat calls, voice turns) of the whole deployment
    max_upstream_sessions: int | None = field(
        default=None, metadata={"env": "QG_MAX_UPSTREAM_SESSIONS"}
    )
    #: longest wait for a free upstream session before refusing (``server_busy``)
    upstream_queue_seconds: float = field(
        default=5.0, metadata={"env": "QG_UPSTREAM_QUEUE_SECONDS"}
    )

    # --- upstream timeouts (seconds) ---
    #: seconds to connect to an upstream
    connect_timeout: float = field(default=10.0, metadata={"env": "QG_CONNECT_TIMEOUT"})
    #: seconds an upstream may stay silent
    read_timeout: float = field(default=60.0, metadata={"env": "QG_READ_TIMEOUT"})
    #: retries of an upstream call that failed before its first byte
    upstream_retries: int = field(default=2, metadata={"env": "QG_UPSTREAM_RETRIES"})
    #: the most read of a line or event of an upstream's stream (once decompressed)
    upstream_max_event_bytes: int = field(
        default=1024 * 1024, metadata={"env": "QG_UPSTREAM_MAX_EVENT_BYTES"}
    )
    #: the most read of a whole non-streamed upstream body (a chat completion, a file-recognition status or
    #: result), once decompressed
    upstream_max_body_bytes: int = field(
        default=16 * 1024 * 1024, metadata={"env": "QG_UPSTREAM_MAX_BODY_BYTES"}
    )

    def __post_init__(self) -> None:
        # The four seed-era URLs not given explicitly come from the region (the newer ones: see the properties).
        for name, url in region_urls(self.region).items():
            if not getattr(self, name):
                object.__setattr__(self, name, url)

    # ------------------------------------------------------------------
    @property
    def tts_model_name(self) -> str:
        """The TTS model: ``QG_TTS_MODEL``, else the ``model=`` of ``REAL_TIME_AUDIO_URL``."""
        query = dict(parse_qsl(urlsplit(self.tts_url).query))
        return self.tts_model or query.get("model") or DEFAULT_TTS_MODEL

    @property
    def realtime_ws_url(self) -> str:
        """Where realtime recognition connects (``?model=`` is added per session)."""
        return self.realtime_base or self.tts_url.split("?", 1)[0]

    @property
    def tts_http_endpoint(self) -> str:
        """Where HTTP speech synthesis (``qwen3-tts-flash``, ``qwen-tts``) posts."""
        base = self.dashscope_http_base.rstrip("/")
        return self.tts_http_url or f"{base}/services/aigc/multimodal-generation/generation"

    @property
    def speech_sample_rate(self) -> int:
        """``TTS_SAMPLE_RATE``, else the TTS model's default rate."""
        if self.tts_sample_rate:
            return self.tts_sample_rate
        from .providers.dashscope.catalogue import CatalogueError, tts_model

        try:
            return tts_model(self.tts_model_name, self.tts_protocol).default_sample_rate
        except CatalogueError:
            return 24000

    @property
    def speech_voice(self) -> str:
        """``TTS_VOICE``, else the TTS model's default voice ("" when the catalogue has none)."""
        if self.tts_voice:
            return self.tts_voice
        from .providers.dashscope.catalogue import CatalogueError, tts_model

        try:
            return tts_model(self.tts_model_name, self.tts_protocol).default_voice
        except CatalogueError:
            return ""

    @property
    def upstream_simulated(self) -> bool:
        """True when the gateway talks to the built-in DashScope simulator."""
        return self.simulate

    @property
    def uses_mysql(self) -> bool:
        return bool(self.db_host)

    @property
    def uses_oss(self) -> bool:
        return bool(self.oss_bucket and self.oss_access_key_id and self.oss_access_key_secret)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "history.sqlite3"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.sqlite3"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def default_limits(self) -> Any:
        """The limits of every key without overrides (``QG_LIMIT_*``): a :class:`qwen_gateway.quota.Limits`."""
        from .quota import Limits

        return Limits(
            rpm=self.limit_rpm,
            sessions=self.limit_sessions,
            tokens_per_day=self.limit_tokens_per_day,
            tts_chars_per_day=self.limit_tts_chars_per_day,
            audio_seconds_per_day=self.limit_audio_seconds_per_day,
        )

    @property
    def auth_enabled(self) -> bool:
        return self.auth

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value configured (keys, passwords), e.g. for a log scrubber."""
        out: list[str] = []
        for f in fields(self):
            if f.metadata.get("secret"):
                value = getattr(self, f.name)
                out.extend(value if isinstance(value, tuple) else [value] if value else [])
        return tuple(v for v in out if v)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with every secret masked: safe to log."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out[f.metadata.get("env", f.name)] = value
        return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: str, target: Any) -> Any:
    raw = raw.strip()
    if target in ("int | None", "float | None"):
        if raw.lower() in ("none", "unlimited"):
            return None
        return _convert(name, raw, target.split(" ", 1)[0])
    if target in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if target in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if target in (bool, "bool"):
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r}: expected one of on/off, true/false, 1/0")
    if target in (Path, "Path"):
        return Path(raw).expanduser()
    if target in ("tuple[str, ...]",):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{name}={value!r}: expected a {'/'.join(schemes)} URL")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}={value!r}: must be greater than 0")


def validate(settings: Settings) -> Settings:
    """Check cross-field rules; raise :class:`ConfigError` naming the variable."""
    env = {f.name: f.metadata.get("env", f.name) for f in fields(settings)}
    _check_url(env["chat_url"], settings.chat_url, ("http", "https"))
    _check_url(env["tts_url"], settings.tts_url, ("ws", "wss"))
    _check_url(env["dashscope_ws_base"], settings.dashscope_ws_base, ("ws", "wss"))
    _check_url(env["dashscope_http_base"], settings.dashscope_http_base, ("http", "https"))
    if settings.realtime_base:
        _check_url(env["realtime_base"], settings.realtime_base, ("ws", "wss"))
    if settings.tts_http_url:
        _check_url(env["tts_http_url"], settings.tts_http_url, ("http", "https"))
    if settings.region not in REGION_HOSTS:
        raise ConfigError(
            f"DASHSCOPE_REGION={settings.region!r}: expected one of {', '.join(REGION_HOSTS)}"
        )
    from .providers.dashscope.catalogue import CatalogueError, asr_model, tts_model

    try:
        asr_model(settings.asr_model, settings.asr_protocol)
        tts_model(
            settings.tts_model_name, settings.tts_protocol, sample_rate=settings.tts_sample_rate
        )
    except CatalogueError as exc:
        raise ConfigError(str(exc)) from None
    if not 0 < settings.port < 65536:
        raise ConfigError(f"QG_PORT={settings.port}: expected 1-65535")
    if not 0 < settings.db_port < 65536:
        raise ConfigError(f"DB_PORT={settings.db_port}: expected 1-65535")
    for name in (
        "max_body_bytes",
        "max_frame_bytes",
        "audio_packet_bytes",
        "vlm_packet_bytes",
        "max_upload_bytes",
        "max_packets",
        "max_turns_per_connection",
        "ws_idle_timeout",
        "upload_idle_timeout",
        "max_audio_seconds",
        "mp3_bitrate_kbps",
        "ws_send_timeout",
        "ws_receive_queue",
        "connect_timeout",
        "read_timeout",
        "upstream_max_event_bytes",
        "upstream_max_body_bytes",
        "oss_pool_size",
        "db_pool_size",
        "workers",
    ):
        _positive(env[name], getattr(settings, name))
    if settings.upstream_retries < 0:
        raise ConfigError(f"QG_UPSTREAM_RETRIES={settings.upstream_retries}: must be >= 0")
    if settings.simulator_tts_rtf < 0:
        raise ConfigError(f"QG_SIMULATOR_TTS_RTF={settings.simulator_tts_rtf}: must be >= 0")
    from .voice.mp3 import allowed_bitrates

    rates = sorted(allowed_bitrates(settings.speech_sample_rate))
    if settings.mp3_bitrate_kbps not in rates:
        raise ConfigError(
            f"QG_MP3_BITRATE_KBPS={settings.mp3_bitrate_kbps}: MP3 at TTS_SAMPLE_RATE="
            f"{settings.speech_sample_rate} takes one of {', '.join(map(str, rates))}"
        )
    for name in (
        "limit_rpm",
        "limit_sessions",
        "limit_tokens_per_day",
        "limit_tts_chars_per_day",
        "limit_audio_seconds_per_day",
        "max_upstream_sessions",
    ):
        value = getattr(settings, name)
        if value is not None and value < 0:
            raise ConfigError(f"{env[name]}={value}: must be >= 0 (unset: no limit)")
    if settings.max_upstream_sessions == 0:
        raise ConfigError("QG_MAX_UPSTREAM_SESSIONS=0: must be at least 1 (unset: no cap)")
    if settings.upstream_queue_seconds < 0:
        raise ConfigError(
            f"QG_UPSTREAM_QUEUE_SECONDS={settings.upstream_queue_seconds}: must be >= 0"
        )
    if settings.redis_url:
        _check_url("QG_REDIS_URL", settings.redis_url, ("redis", "rediss"))
    if settings.history_tokens < 0:
        raise ConfigError(f"QG_HISTORY_TOKENS={settings.history_tokens}: must be >= 0")
    if settings.history_turns < 0:
        raise ConfigError(f"QG_HISTORY_TURNS={settings.history_turns}: must be >= 0")
    if settings.log_format not in ("auto", "json", "text"):
        raise ConfigError(f"QG_LOG_FORMAT={settings.log_format!r}: expected auto, json or text")
    for name in ("drain_seconds", "drain_outbox_seconds"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{env[name]}={getattr(settings, name)}: must be >= 0")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"QG_LOG_LEVEL={settings.log_level!r}: expected DEBUG/INFO/WARNING/ERROR")
    if settings.oss_bucket and not (settings.oss_access_key_id and settings.oss_access_key_secret):
        raise ConfigError("BUCKET is set but ACCESSKEY_ID / ACCESSKEY_SECRET are not")
    if settings.owner_secret and len(settings.owner_secret.encode()) < 32:
        raise ConfigError(
            "QG_OWNER_SECRET: must be at least 32 characters (e.g. `openssl rand -hex 32`)"
        )
    if settings.api_keys_file and not Path(settings.api_keys_file).is_file():
        raise ConfigError(f"QG_API_KEYS_FILE={settings.api_keys_file!r}: no such file")
    return settings


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: str | os.PathLike[str] | None = ".env",
    **overrides: Any,
) -> Settings:
    """Read the settings once from ``environ`` (default ``os.environ``) and a ``.env`` file.

    Values already in the environment win over ``.env``. ``overrides`` (field names) win over both.
    Raises :class:`ConfigError` naming the variable when a value is invalid.
    """
    env: dict[str, str] = {}
    if dotenv is not None and Path(dotenv).is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata.get("env")
        if name and name in env and env[name] != "":
            kwargs[f.name] = _convert(name, env[name], f.type)
    kwargs.update(overrides)
    return validate(Settings(**kwargs))


def ignored_variables(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Seed variables present in the environment that the gateway ignores, with the reason."""
    env = os.environ if environ is None else environ
    return {k: why for k, why in IGNORED.items() if env.get(k)}
