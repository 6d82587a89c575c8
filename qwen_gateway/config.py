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
    qwen_api_key: str = _secret("QWEN_API_KEY")
    #: region of every DashScope URL not set explicitly (``cn-beijing``, ``intl`` ...: :data:`REGION_HOSTS`)
    region: str = field(default="cn-beijing", metadata={"env": "DASHSCOPE_REGION"})
    #: sub-workspace sent as ``X-DashScope-WorkSpace`` on every DashScope call ("" = the default workspace)
    workspace: str = field(default="", metadata={"env": "DASHSCOPE_WORKSPACE"})
    chat_url: str = field(default="", metadata={"env": "QWEN_API_CHAT_URL"})
    chat_model: str = field(default="qwen-plus", metadata={"env": "QWEN_CHAT_MODEL"})
    vlm_model: str = field(default="qwen-vl-plus", metadata={"env": "QWEN_VLM_MODEL"})
    asr_model: str = field(
        default="paraformer-realtime-v2", metadata={"env": "QWEN_AUDIO_RECOGNIZE_MODEL"}
    )
    tts_url: str = field(default="", metadata={"env": "REAL_TIME_AUDIO_URL"})
    tts_model: str = field(default="", metadata={"env": "QG_TTS_MODEL"})
    #: "" = the TTS model's default voice (model catalogue)
    tts_voice: str = field(default="", metadata={"env": "TTS_VOICE"})
    #: 0 = the TTS model's default rate (model catalogue)
    tts_sample_rate: int = field(default=0, metadata={"env": "TTS_SAMPLE_RATE"})
    #: the protocol of a recognition / synthesis model the catalogue does not know ("" = the catalogue's)
    asr_protocol: str = field(default="", metadata={"env": "QG_ASR_PROTOCOL"})
    tts_protocol: str = field(default="", metadata={"env": "QG_TTS_PROTOCOL"})
    tts_output_dir: str = field(default="", metadata={"env": "TTS_OUTPUT_DIR"})
    default_system_prompt: str = field(
        default="你是一个有帮助的助手。", metadata={"env": "DEFAULT_SYSTEM_PROMPT"}
    )
    dashscope_ws_base: str = field(default="", metadata={"env": "DASHSCOPE_WEBSOCKET_BASE_URL"})
    dashscope_http_base: str = field(default="", metadata={"env": "DASHSCOPE_HTTP_BASE_URL"})
    #: ``/api-ws/v1/realtime`` for realtime recognition ("" = the path of ``REAL_TIME_AUDIO_URL``)
    realtime_base: str = field(default="", metadata={"env": "QG_DASHSCOPE_REALTIME_URL"})
    #: HTTP speech synthesis ("" = ``DASHSCOPE_HTTP_BASE_URL`` + ``/services/aigc/multimodal-generation/generation``)
    tts_http_url: str = field(default="", metadata={"env": "QG_TTS_HTTP_URL"})

    # --- object storage: Aliyun OSS (seed names); unset BUCKET = local folder ---
    oss_access_key_id: str = _secret("ACCESSKEY_ID")
    oss_access_key_secret: str = _secret("ACCESSKEY_SECRET")
    oss_bucket: str = field(default="", metadata={"env": "BUCKET"})
    oss_region: str = field(default="cn-beijing", metadata={"env": "REGIN"})
    oss_endpoint: str = field(default="", metadata={"env": "QG_OSS_ENDPOINT"})
    oss_public_base_url: str = field(default="", metadata={"env": "QG_OSS_PUBLIC_BASE_URL"})
    oss_pool_size: int = field(default=8, metadata={"env": "QG_OSS_POOL_SIZE"})
    #: keep each voice turn's spoken answer (the MP3 sent) as an object (``tts/...``), named by the stored turn
    store_reply_audio: bool = field(default=True, metadata={"env": "QG_STORE_REPLY_AUDIO"})

    # --- history database (seed names); unset DB_HOST = SQLite under the data dir ---
    db_host: str = field(default="", metadata={"env": "DB_HOST"})
    db_port: int = field(default=3306, metadata={"env": "DB_PORT"})
    db_user: str = field(default="root", metadata={"env": "DB_USER"})
    db_password: str = _secret("DB_PASSWORD")
    db_name: str = field(default="qwen_gateway", metadata={"env": "DB_NAME"})
    db_pool_size: int = field(default=8, metadata={"env": "QG_DB_POOL_SIZE"})

    # --- the gateway itself ---
    host: str = field(default="127.0.0.1", metadata={"env": "QG_HOST"})
    port: int = field(default=5000, metadata={"env": "QG_PORT"})
    data_dir: Path = field(default=Path("data"), metadata={"env": "QG_DATA_DIR"})
    public_url: str = field(default="", metadata={"env": "QG_PUBLIC_URL"})
    api_keys: tuple[str, ...] = _secret("QG_API_KEYS", ())
    api_keys_file: str = field(default="", metadata={"env": "QG_API_KEYS_FILE"})
    auth: bool = field(default=True, metadata={"env": "QG_AUTH"})
    key_passthrough: bool = field(default=False, metadata={"env": "QG_KEY_PASSTHROUGH"})
    #: key of the hash that names a conversation's owner (at least 32 characters); unset: ``owner.key`` in the
    #: data dir, made on first start. Gateways sharing one history database must share it.
    owner_secret: str = _secret("QG_OWNER_SECRET")
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "QG_CORS_ORIGINS"})
    log_level: str = field(default="INFO", metadata={"env": "QG_LOG_LEVEL"})
    simulate: bool = field(default=False, metadata={"env": "QG_SIMULATE"})
    #: keyless mode: seconds of simulated synthesis per second of speech (1 = real time, 0 = at once)
    simulator_tts_rtf: float = field(default=1.0, metadata={"env": "QG_SIMULATOR_TTS_RTF"})

    # --- limits ---
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata={"env": "QG_MAX_BODY_BYTES"})
    max_frame_bytes: int = field(default=256 * 1024, metadata={"env": "QG_MAX_FRAME_BYTES"})
    audio_packet_bytes: int = field(default=8 * 1024, metadata={"env": "QG_AUDIO_PACKET_BYTES"})
    vlm_packet_bytes: int = field(default=50 * 1024, metadata={"env": "QG_VLM_PACKET_BYTES"})
    max_upload_bytes: int = field(default=10 * 1024 * 1024, metadata={"env": "QG_MAX_UPLOAD_BYTES"})
    max_packets: int = field(default=4096, metadata={"env": "QG_MAX_PACKETS"})
    max_turns_per_connection: int = field(default=200, metadata={"env": "QG_MAX_TURNS"})
    ws_idle_timeout: float = field(default=300.0, metadata={"env": "QG_WS_IDLE_TIMEOUT"})
    #: an upload that stays incomplete this long is discarded (``upload_timeout`` error)
    upload_idle_timeout: float = field(default=30.0, metadata={"env": "QG_UPLOAD_IDLE_TIMEOUT"})
    ws_send_timeout: float = field(default=15.0, metadata={"env": "QG_WS_SEND_TIMEOUT"})
    ws_receive_queue: int = field(default=16, metadata={"env": "QG_WS_RECEIVE_QUEUE"})
    history_turns: int = field(default=10, metadata={"env": "QG_HISTORY_TURNS"})
    #: voice chat context budget: previous turns are dropped (oldest first) beyond about this many tokens
    history_tokens: int = field(default=4000, metadata={"env": "QG_HISTORY_TOKENS"})
    #: longest spoken upload accepted (seconds of audio)
    max_audio_seconds: float = field(default=300.0, metadata={"env": "QG_MAX_AUDIO_SECONDS"})
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
    connect_timeout: float = field(default=10.0, metadata={"env": "QG_CONNECT_TIMEOUT"})
    read_timeout: float = field(default=60.0, metadata={"env": "QG_READ_TIMEOUT"})
    upstream_retries: int = field(default=2, metadata={"env": "QG_UPSTREAM_RETRIES"})
    #: the most read of an upstream's HTTP answer (once decompressed): a line or event of a stream, and a whole
    #: non-streamed body (a chat completion, a file-recognition status or result)
    upstream_max_event_bytes: int = field(
        default=1024 * 1024, metadata={"env": "QG_UPSTREAM_MAX_EVENT_BYTES"}
    )
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
