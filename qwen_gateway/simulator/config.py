"""``SimulatorConfig``: every knob of the DashScope simulator, with the defaults DashScope itself shows.

Where ``dashscope-protocols.md`` marks a fact as unconfirmed ([U]) the behaviour is a field here, so a test can
switch to the other reading.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimulatorConfig"]


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """Configuration of one :class:`~qwen_gateway.simulator.Simulator`.

    Auth:
        api_key: ``None`` accepts any key that starts with ``sk-``; otherwise exactly this key.
        ws_reject_status: HTTP status of a rejected WebSocket handshake (DashScope answers 401 or 403).
        accept_query_api_key: also accept ``?api_key=`` on WebSocket URLs (the official browser demo does).

    Chat (``/compatible-mode/v1/chat/completions``):
        ttft: seconds from taking the request up to the first streamed chunk, or up to a non-streaming reply
            (plus the generation time at ``tokens_per_second``); the simulator's own work counts within it.
        tokens_per_second: generation speed; 0 sends everything at once.
        chat_chunk_tokens: tokens per streamed content chunk.
        finish_chunk_with_text: the last text rides on the ``finish_reason`` chunk (else an empty one) [both occur].
        usage_chunk_always: stream the usage chunk even without ``stream_options.include_usage`` [U: assumed not].
        thinking: stream ``reasoning_content`` before the answer when the request sets ``enable_thinking``.
        max_output_tokens: upper bound accepted for ``max_tokens``.
        known_model_prefixes: chat models outside these prefixes get 404 ``model_not_found``.
        vl_model_markers: a model whose name contains one of these accepts array ``content``.
        fetch_image_urls: download ``http(s)`` image URLs of VL requests (loopback only in tests).
        image_fetch_timeout: timeout of such a download, seconds.

    Speech synthesis (realtime ``/api-ws/v1/realtime``, task ``tts`` on ``/api-ws/v1/inference``, HTTP on
    ``/api/v1/services/aigc/multimodal-generation/generation``):
        tts_realtime_factor: seconds of wall time per second of audio; 0 = as fast as possible, 1 = real time.
        tts_chunk_ms: audio per ``response.audio.delta`` / binary frame / SSE event [U: undocumented size].
        tts_first_audio_delay: extra seconds before the first audio of a response.
        tts_commit_chars: ``server_commit`` mode synthesises a buffer this long even without a sentence end [U].
        tts_idle_timeout: close a realtime TTS socket silent for this long; ``None`` = never [U].
        strict_tts_formats: reject sample rates a model does not offer (qwen-tts-realtime: 24000 only).
        cosyvoice_voice_check: fail a ``cosyvoice-v2`` task whose voice is not a ``*_v2`` voice (error 418).

    Realtime recognition (paraformer/fun-asr/gummy on ``/api-ws/v1/inference``):
        asr_idle_timeout: a running task (ASR or CosyVoice) with no client frame for this long fails with
            ``request timeout after 23 seconds.`` (DashScope: 23 s).
        asr_default_text: transcript of audio not in the registry ("" gives the empty result).
        asr_chars_per_second: speech rate (Chinese characters a second) used to time unknown audio.
        asr_partial_end_time: partial results carry a numeric ``end_time`` (fun-asr captures) instead of null.
        asr_sentence_silence: seconds of audio past a sentence's end before it is final without finish-task.
        task_reuse_timeout: a task socket with no task running is closed after this long (DashScope: 60 s).
        task_failed_close_code: close code sent right after ``task-failed`` [U].

    Realtime recognition and Qwen-Omni (``/api-ws/v1/realtime?model=qwen3-asr-flash-realtime`` / ``qwen3-omni-*``):
        realtime_idle_timeout: close a realtime recognition / Omni socket on which the client sent nothing for
            this long (an ``error`` event, then close 1000); ``None`` = never [U: the value is undocumented].
        realtime_commit_limit: in manual mode (``turn_detection: null``), the most audio one commit may hold
            (seconds; DashScope: "continuous audio must not exceed 60 seconds"); past it an ``error`` event and
            the buffer is dropped [U: the error's wording].
        vad_rms: the energy VAD's speech level (RMS of 16-bit samples over 20 ms); ``threshold`` in the session's
            ``turn_detection`` moves it (``vad_rms * (1 + threshold)``).

    File recognition (``/api/v1/services/audio/asr/transcription`` + ``/api/v1/tasks/<id>``):
        file_asr_pending_polls: polls answered ``PENDING`` before ``RUNNING``.
        file_asr_running_polls: polls answered ``RUNNING`` before ``SUCCEEDED``.
        file_fetch_timeout: timeout of downloading each ``file_urls`` entry, seconds.

    Server:
        backlog: listen backlog of the socket.
        max_body_bytes: larger HTTP bodies get 413.
        max_records: ``sim.log`` keeps at most this many records of each sort (None: all), so a long-running
            simulator (``make run``, benchmarks) stays flat in memory.
        capture_frames: keep every frame each WebSocket client sends in its connection record (``frames_in``),
            for tests that compare what two clients send (off by default: it costs a JSON decode per frame).
    """

    api_key: str | None = None
    ws_reject_status: int = 401
    accept_query_api_key: bool = True

    ttft: float = 0.0
    tokens_per_second: float = 0.0
    chat_chunk_tokens: int = 1
    finish_chunk_with_text: bool = False
    usage_chunk_always: bool = False
    thinking: bool = True
    max_output_tokens: int = 8192
    known_model_prefixes: tuple[str, ...] = ("qwen", "qwq", "qvq")
    vl_model_markers: tuple[str, ...] = ("-vl", "qvq", "omni")
    fetch_image_urls: bool = False
    image_fetch_timeout: float = 10.0

    tts_realtime_factor: float = 0.0
    tts_chunk_ms: int = 100
    tts_first_audio_delay: float = 0.0
    tts_commit_chars: int = 100
    tts_idle_timeout: float | None = None
    strict_tts_formats: bool = True
    cosyvoice_voice_check: bool = True

    asr_idle_timeout: float = 23.0
    asr_default_text: str = "你好，请介绍一下你自己。"
    asr_chars_per_second: float = 4.0
    asr_partial_end_time: bool = False
    asr_sentence_silence: float = 0.8
    task_reuse_timeout: float = 60.0
    task_failed_close_code: int = 1000

    realtime_idle_timeout: float | None = 60.0
    realtime_commit_limit: float = 60.0
    vad_rms: float = 400.0

    file_asr_pending_polls: int = 0
    file_asr_running_polls: int = 1
    file_fetch_timeout: float = 10.0

    backlog: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    max_records: int | None = 10_000
    capture_frames: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.api_key is None or bool(self.api_key), "api_key must be None or non-empty"),
            (self.ws_reject_status in (401, 403), "ws_reject_status must be 401 or 403"),
            (self.ttft >= 0, "ttft must be >= 0"),
            (self.tokens_per_second >= 0, "tokens_per_second must be >= 0"),
            (self.chat_chunk_tokens >= 1, "chat_chunk_tokens must be >= 1"),
            (self.max_output_tokens >= 1, "max_output_tokens must be >= 1"),
            (self.tts_realtime_factor >= 0, "tts_realtime_factor must be >= 0"),
            (self.tts_chunk_ms >= 10, "tts_chunk_ms must be >= 10"),
            (self.tts_first_audio_delay >= 0, "tts_first_audio_delay must be >= 0"),
            (self.tts_commit_chars >= 1, "tts_commit_chars must be >= 1"),
            (
                self.tts_idle_timeout is None or self.tts_idle_timeout > 0,
                "tts_idle_timeout must be None or > 0",
            ),
            (self.asr_idle_timeout > 0, "asr_idle_timeout must be > 0"),
            (
                self.realtime_idle_timeout is None or self.realtime_idle_timeout > 0,
                "realtime_idle_timeout must be None or > 0",
            ),
            (self.vad_rms > 0, "vad_rms must be > 0"),
            (self.realtime_commit_limit > 0, "realtime_commit_limit must be > 0"),
            (self.asr_chars_per_second > 0, "asr_chars_per_second must be > 0"),
            (self.asr_sentence_silence >= 0, "asr_sentence_silence must be >= 0"),
            (self.task_reuse_timeout > 0, "task_reuse_timeout must be > 0"),
            (self.file_asr_pending_polls >= 0, "file_asr_pending_polls must be >= 0"),
            (self.file_asr_running_polls >= 0, "file_asr_running_polls must be >= 0"),
            (self.file_fetch_timeout > 0, "file_fetch_timeout must be > 0"),
            (self.image_fetch_timeout > 0, "image_fetch_timeout must be > 0"),
            (self.max_records is None or self.max_records >= 1, "max_records must be None or >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SimulatorConfig: {message}")

    def key_ok(self, key: str | None) -> bool:
        """True when ``key`` is accepted by this simulator."""
        if not key:
            return False
        if self.api_key is None:
            return key.startswith("sk-") and len(key) > 3
        return key == self.api_key
