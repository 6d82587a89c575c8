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
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]

DEFAULT_CHAT_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"
DEFAULT_REALTIME_URL = "wss://dashscope.aliyuncs.com/api-ws/v1/realtime?model=qwen-tts-realtime"
DEFAULT_WS_BASE = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
DEFAULT_HTTP_BASE = "https://dashscope.aliyuncs.com/api/v1"

#: Seed variables that are accepted and ignored, with the reason shown at start.
IGNORED = {
    "FFMPEG_PATH": "MP3 is encoded in-process with lameenc; ffmpeg is no longer used",
    "TTS_OUTPUT_DIR": "uploads and answers are kept in the object store (BUCKET or QG_DATA_DIR/objects)",
}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the gateway. Build it with :func:`load_settings` (or directly in tests)."""

    # --- upstream: DashScope (seed names) ---
    qwen_api_key: str = field(default="", metadata={"env": "QWEN_API_KEY", "secret": True})
    chat_url: str = field(default=DEFAULT_CHAT_URL, metadata={"env": "QWEN_API_CHAT_URL"})
    chat_model: str = field(default="qwen-plus", metadata={"env": "QWEN_CHAT_MODEL"})
    vlm_model: str = field(default="qwen-vl-plus", metadata={"env": "QWEN_VLM_MODEL"})
    asr_model: str = field(
        default="paraformer-realtime-v2", metadata={"env": "QWEN_AUDIO_RECOGNIZE_MODEL"}
    )
    tts_url: str = field(default=DEFAULT_REALTIME_URL, metadata={"env": "REAL_TIME_AUDIO_URL"})
    tts_model: str = field(default="", metadata={"env": "QG_TTS_MODEL"})
    tts_voice: str = field(default="Cherry", metadata={"env": "TTS_VOICE"})
    tts_sample_rate: int = field(default=24000, metadata={"env": "TTS_SAMPLE_RATE"})
    tts_output_dir: str = field(default="", metadata={"env": "TTS_OUTPUT_DIR"})
    default_system_prompt: str = field(
        default="你是一个有帮助的助手。", metadata={"env": "DEFAULT_SYSTEM_PROMPT"}
    )
    dashscope_ws_base: str = field(
        default=DEFAULT_WS_BASE, metadata={"env": "DASHSCOPE_WEBSOCKET_BASE_URL"}
    )
    dashscope_http_base: str = field(
        default=DEFAULT_HTTP_BASE, metadata={"env": "DASHSCOPE_HTTP_BASE_URL"}
    )

    # --- object storage: Aliyun OSS (seed names); unset BUCKET = local folder ---
    oss_access_key_id: str = field(default="", metadata={"env": "ACCESSKEY_ID", "secret": True})
    oss_access_key_secret: str = field(
        default="", metadata={"env": "ACCESSKEY_SECRET", "secret": True}
    )
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
    db_password: str = field(default="", metadata={"env": "DB_PASSWORD", "secret": True})
    db_name: str = field(default="qwen_gateway", metadata={"env": "DB_NAME"})
    db_pool_size: int = field(default=8, metadata={"env": "QG_DB_POOL_SIZE"})

    # --- the gateway itself ---
    host: str = field(default="127.0.0.1", metadata={"env": "QG_HOST"})
    port: int = field(default=5000, metadata={"env": "QG_PORT"})
    data_dir: Path = field(default=Path("data"), metadata={"env": "QG_DATA_DIR"})
    public_url: str = field(default="", metadata={"env": "QG_PUBLIC_URL"})
    api_keys: tuple[str, ...] = field(default=(), metadata={"env": "QG_API_KEYS", "secret": True})
    api_keys_file: str = field(default="", metadata={"env": "QG_API_KEYS_FILE"})
    auth: bool = field(default=True, metadata={"env": "QG_AUTH"})
    key_passthrough: bool = field(default=False, metadata={"env": "QG_KEY_PASSTHROUGH"})
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
    #: negotiate permessage-deflate on the WebSockets (inflation is then bounded by the message limit)
    ws_compression: bool = field(default=False, metadata={"env": "QG_WS_COMPRESSION"})
    history_turns: int = field(default=10, metadata={"env": "QG_HISTORY_TURNS"})
    #: voice chat context budget: previous turns are dropped (oldest first) beyond about this many tokens
    history_tokens: int = field(default=4000, metadata={"env": "QG_HISTORY_TOKENS"})
    #: longest spoken upload accepted (seconds of audio)
    max_audio_seconds: float = field(default=300.0, metadata={"env": "QG_MAX_AUDIO_SECONDS"})
    mp3_bitrate_kbps: int = field(default=64, metadata={"env": "QG_MP3_BITRATE_KBPS"})

    # --- upstream timeouts (seconds) ---
    connect_timeout: float = field(default=10.0, metadata={"env": "QG_CONNECT_TIMEOUT"})
    read_timeout: float = field(default=60.0, metadata={"env": "QG_READ_TIMEOUT"})
    upstream_retries: int = field(default=2, metadata={"env": "QG_UPSTREAM_RETRIES"})

    # ------------------------------------------------------------------
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
    def auth_enabled(self) -> bool:
        return self.auth

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
    if settings.tts_sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
        raise ConfigError(
            f"TTS_SAMPLE_RATE={settings.tts_sample_rate}: expected one of "
            "8000, 16000, 22050, 24000, 44100, 48000"
        )
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
        "oss_pool_size",
        "db_pool_size",
    ):
        _positive(env[name], getattr(settings, name))
    if settings.upstream_retries < 0:
        raise ConfigError(f"QG_UPSTREAM_RETRIES={settings.upstream_retries}: must be >= 0")
    if settings.simulator_tts_rtf < 0:
        raise ConfigError(f"QG_SIMULATOR_TTS_RTF={settings.simulator_tts_rtf}: must be >= 0")
    from .voice.mp3 import allowed_bitrates

    rates = sorted(allowed_bitrates(settings.tts_sample_rate))
    if settings.mp3_bitrate_kbps not in rates:
        raise ConfigError(
            f"QG_MP3_BITRATE_KBPS={settings.mp3_bitrate_kbps}: MP3 at TTS_SAMPLE_RATE="
            f"{settings.tts_sample_rate} takes one of {', '.join(map(str, rates))}"
        )
    if settings.history_tokens < 0:
        raise ConfigError(f"QG_HISTORY_TOKENS={settings.history_tokens}: must be >= 0")
    if settings.history_turns < 0:
        raise ConfigError(f"QG_HISTORY_TURNS={settings.history_turns}: must be >= 0")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"QG_LOG_LEVEL={settings.log_level!r}: expected DEBUG/INFO/WARNING/ERROR")
    if settings.oss_bucket and not (settings.oss_access_key_id and settings.oss_access_key_secret):
        raise ConfigError("BUCKET is set but ACCESSKEY_ID / ACCESSKEY_SECRET are not")
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
