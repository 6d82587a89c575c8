"""A DashScope simulator: the same wire protocols as Alibaba's DashScope, on one loopback port, with fault injection.

It serves DashScope's own paths, so pointing a gateway's four upstream variables at it is all it takes::

    QWEN_API_CHAT_URL             {base}/compatible-mode/v1/chat/completions   chat / VLM, OpenAI-compatible
    REAL_TIME_AUDIO_URL           {ws}/api-ws/v1/realtime?model=qwen-tts-realtime   realtime TTS; with another
                                  model=, realtime recognition (qwen3-asr-flash-realtime) and Qwen-Omni
    DASHSCOPE_WEBSOCKET_BASE_URL  {ws}/api-ws/v1/inference                     paraformer ASR, CosyVoice and
                                                                               qwen-audio TTS
    DASHSCOPE_HTTP_BASE_URL       {base}/api/v1                                file ASR (+ /tasks/<id>),
                                  + /services/aigc/multimodal-generation/generation   HTTP TTS

It is what the upstream tests, the benchmarks and the keyless ``make run`` use. It imports nothing of
``qwen_gateway`` outside this package, so it never shares code with the clients it tests.

Public API::

    from qwen_gateway.simulator import Simulator, SimulatorConfig, Fault

    config = SimulatorConfig(api_key=None,            # None: any "sk-" key; else exactly this key
                             ttft=0.0, tokens_per_second=0.0, tts_realtime_factor=0.0,
                             asr_idle_timeout=23.0, asr_default_text="你好，请介绍一下你自己。")
    async with Simulator(config, host="127.0.0.1", port=0) as sim:   # Hypercorn in-process, ephemeral port
        sim.port, sim.base_url, sim.ws_base_url, sim.env
        sim.set_reply("...")                 # chat replies (text or fn(body) -> text; times=k; None: corpus)
        sim.register_transcript(audio, "text")  # SHA-256 of the audio a recogniser receives -> transcript
        sim.faults.add(Fault.http_error(429, code="limit_requests", times=2, endpoint="chat"))
        sim.log.chat_requests / asr_sessions / tts_sessions / cosyvoice_sessions / file_asr_tasks /
                http_tts_requests
        sim.log.realtime_asr_sessions / omni_sessions
        sim.log.connections[i].frames_in     # every client frame, with SimulatorConfig(capture_frames=True)
        sim.log.connections, sim.log.closes, sim.log.open_connections(kind), sim.log.connection_counts()
        await sim.wait_closed("asr", timeout=2)
        sim.configure(ttft=0.2)              # later calls see new knobs
        sim.reset()                          # forget records, faults, replies, transcripts

Faults (each for ``times`` calls; see :mod:`.faults` for positions and endpoints)::

    Fault.http_error(status, code=None, message=None, endpoint="chat"|"tts"|"realtime_asr"|"omni"|
                     "inference"|"asr"|"tts_cosyvoice"|"file_asr"|"tasks"|"result"|"http_tts", times=1,
                     retry_after=None)
    Fault.delay(seconds, endpoint=...)          Fault.stall(after_chunks, seconds|None, endpoint=...)
    Fault.drop(after_chunks, endpoint=...)      Fault.stream_error(after_chunks, code, message,
                                                                   endpoint="chat"|"http_tts")
    Fault.task_failed(endpoint="asr"|"tts_cosyvoice"|"file_asr", after=0, code=, message=, before_start=)
    Fault.ws_error(endpoint="tts", after=0, code=, message=, close=False)
    Fault.malformed(endpoint=..., after=0, payload=None)
    Fault.idle_timeout(seconds, endpoint="asr"|"tts_cosyvoice"|"tts")
    Fault.slow_audio(factor, endpoint="tts"|"tts_cosyvoice")
    Fault.bursty_audio(burst, pause, endpoint="tts"|"tts_cosyvoice")

Also ``start()``/``stop()`` for hosts whose start and stop hooks are separate calls (Quart ``before_serving`` /
``after_serving``), and :func:`qwen_gateway.simulator.cli.run_cli` for ``qwen-gateway simulate``.
"""

from .config import SimulatorConfig
from .faults import Fault, FaultSet, FiredFault, parse_fault
from .records import (
    AsrSessionRecord,
    ChatRequestRecord,
    ConnectionRecord,
    CosyVoiceSessionRecord,
    FileAsrTaskRecord,
    HttpTtsRecord,
    OmniResponseRecord,
    RealtimeAsrSessionRecord,
    RealtimeItemRecord,
    SimulatorLog,
    TtsResponseRecord,
    TtsSessionRecord,
)
from .server import Simulator

__all__ = [
    "AsrSessionRecord",
    "ChatRequestRecord",
    "ConnectionRecord",
    "CosyVoiceSessionRecord",
    "Fault",
    "FaultSet",
    "FileAsrTaskRecord",
    "FiredFault",
    "HttpTtsRecord",
    "OmniResponseRecord",
    "RealtimeAsrSessionRecord",
    "RealtimeItemRecord",
    "Simulator",
    "SimulatorConfig",
    "SimulatorLog",
    "TtsResponseRecord",
    "TtsSessionRecord",
    "parse_fault",
]
