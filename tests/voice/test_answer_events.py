"""``AnswerSpeaker`` is the one answer stage of every endpoint: its events and its audio encoder are the endpoint's
(:class:`AnswerEvents`, ``new_encoder``), and the tool calls a model makes are streamed and collected. Driven against
the DashScope simulator through the real providers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from qwen_gateway.config import Settings, load_settings
from qwen_gateway.providers.base import ToolCallDelta
from qwen_gateway.providers.dashscope import Providers, build_providers
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig
from qwen_gateway.voice.answer import AnswerSpeaker, AnswerTuning
from qwen_gateway.voice.encoders import AudioChunk, OpusPacketEncoder

KEY = "sk-answer-events"
TOOLS = [{"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}]


@dataclass
class Recorded:
    kind: str
    value: Any = None


class Events:
    """Records what the speaker asks to send, as (kind, value)."""

    def text(self, delta: str, so_far: str) -> Recorded:
        return Recorded("text", (delta, so_far))

    def speech_started(self) -> Recorded:
        return Recorded("speech")

    def audio(self, payload: bytes) -> Recorded:
        return Recorded("audio", payload)

    def finished(self) -> Recorded:
        return Recorded("finished")

    def error(self, stage: str, exc: BaseException) -> Recorded:
        return Recorded("error", stage)

    def tool_call(self, fragment: ToolCallDelta) -> Recorded:
        return Recorded("tool", fragment)


class PcmPassThrough:
    """An encoder that sends the PCM as it is (what ``/v1/realtime`` does at the TTS's own rate)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.samples_in = 0
        self.finished = False

    def encode(self, pcm: bytes) -> bytes:
        self.samples_in += len(pcm) // 2
        return pcm

    def flush(self) -> bytes:
        self.finished = True
        return b""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY), host="127.0.0.1", port=0) as simulator:
        yield simulator


@pytest.fixture
def settings(sim: Simulator) -> Settings:
    return load_settings(sim.env, dotenv=None, qwen_api_key=KEY, read_timeout=10.0)


@pytest.fixture
async def providers(settings: Settings) -> AsyncIterator[Providers]:
    built = build_providers(settings)
    try:
        yield built
    finally:
        await built.aclose()


async def speak(
    providers: Providers,
    body: dict[str, Any],
    *,
    voice: bool = True,
    events: Any = None,
    new_encoder: Any = PcmPassThrough,
) -> tuple[AnswerSpeaker, list[Recorded]]:
    sent: list[Recorded] = []

    async def emit(event: Recorded) -> None:
        sent.append(event)

    speaker = AnswerSpeaker(
        chat=providers.chat,
        synthesizer=providers.synthesizer,
        emit=emit,
        events=events or Events(),
        turn_id=1,
        tuning=AnswerTuning(read_timeout=10.0),
        clock=time.monotonic,
        new_encoder=new_encoder,
        speak=voice,
    )
    await speaker.run({"model": "qwen-plus", "stream": True, **body})
    return speaker, sent


async def test_the_endpoint_chooses_the_events_and_the_encoder(
    sim: Simulator, providers: Providers
) -> None:
    sim.set_reply("今天是晴天。适合出门散步！")
    speaker, sent = await speak(providers, {"messages": [{"role": "user", "content": "天气"}]})
    kinds = [e.kind for e in sent]
    assert kinds[-1] == "finished" and kinds.count("finished") == 1
    assert "".join(e.value[0] for e in sent if e.kind == "text") == "今天是晴天。适合出门散步！"
    assert kinds.index("speech") < kinds.index("audio")
    pcm = b"".join(e.value for e in sent if e.kind == "audio")
    result = speaker.result
    # PCM as TTS made it, untouched: every sample received was sent
    assert len(pcm) == 2 * result.pcm_samples == result.audio_bytes
    assert result.spoken and result.finish_reason == "stop" and result.tool_calls == []


async def test_a_tool_call_is_streamed_and_collected_and_only_the_text_before_it_spoken(
    sim: Simulator, providers: Providers
) -> None:
    args = json.dumps({"zone": "Asia/Shanghai"})
    sim.set_tool_call("clock", args, text="我看一下时间。")
    speaker, sent = await speak(
        providers, {"messages": [{"role": "user", "content": "几点了"}], "tools": TOOLS}
    )
    result = speaker.result
    assert result.finish_reason == "tool_calls" and result.chat_ok
    (call,) = result.tool_calls
    assert call.name == "clock" and json.loads(call.arguments) == json.loads(args)
    assert call.id.startswith("call_")
    fragments = [e.value for e in sent if e.kind == "tool"]
    assert len(fragments) > 1 and "".join(f.arguments for f in fragments) == args
    assert result.text == "我看一下时间。" and result.spoken
    # what was said before the call was spoken, and nothing else
    assert result.tts_chars == len("我看一下时间。") and "audio" in [e.kind for e in sent]


async def test_a_chat_failure_is_reported_through_the_events(
    sim: Simulator, providers: Providers
) -> None:
    sim.faults.add(Fault.http_error(400))
    speaker, sent = await speak(providers, {"messages": [{"role": "user", "content": "hi"}]})
    assert [e.value for e in sent if e.kind == "error"] == ["chat"]
    assert [e.kind for e in sent][-1] == "finished"
    assert not speaker.result.chat_ok


async def test_a_text_only_answer_opens_no_synthesis(sim: Simulator, providers: Providers) -> None:
    sim.set_reply("只要文字。不要声音。")
    speaker, sent = await speak(
        providers, {"messages": [{"role": "user", "content": "hi"}]}, voice=False
    )
    kinds = [e.kind for e in sent]
    assert "".join(e.value[0] for e in sent if e.kind == "text") == "只要文字。不要声音。"
    assert "speech" not in kinds and "audio" not in kinds and kinds[-1] == "finished"
    result = speaker.result
    assert result.chat_ok and result.tts_chars == 0 and result.segments_total == 0
    log = sim.log
    assert log.tts_sessions == [] and log.cosyvoice_sessions == [] and log.http_tts_requests == []


class ChunkRecordingEvents(Events):
    """Events that describe each chunk of a chunk encoder (:class:`ChunkEvents`)."""

    def audio_chunk(self, chunk: AudioChunk) -> Recorded:
        return Recorded("chunk", chunk)


def _opus(rate: int) -> OpusPacketEncoder:
    return OpusPacketEncoder(rate, out_rate=16000, frame_ms=20)


async def test_a_chunk_encoder_sends_one_event_per_packet(
    sim: Simulator, providers: Providers
) -> None:
    sim.set_reply("今天是晴天。适合出门散步！")
    body = {"messages": [{"role": "user", "content": "天气"}]}
    speaker, sent = await speak(providers, body, events=ChunkRecordingEvents(), new_encoder=_opus)
    chunks = [e.value for e in sent if e.kind == "chunk"]
    assert chunks and "audio" not in [e.kind for e in sent]
    assert all(c.duration_ms == 20 for c in chunks)  # never split nor joined: one Opus packet each
    assert speaker.result.audio_chunks == len(chunks)
    assert speaker.result.audio_bytes == sum(len(c.data) for c in chunks)
    # events without audio_chunk get each packet through audio(), still one event per packet
    _, plain = await speak(providers, body, new_encoder=_opus)
    packets = [e.value for e in plain if e.kind == "audio"]
    assert len(packets) == len(chunks)
