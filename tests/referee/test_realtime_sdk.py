"""The official ``dashscope`` SDK as referee of the realtime family (``/api-ws/v1/realtime``).

1. The SDK drives the simulator: ``OmniRealtimeConversation`` with ``qwen3-asr-flash-realtime`` (manual commit and
   server VAD) and ``qwen3-omni-flash-realtime``, ``QwenTtsRealtime`` (``server_commit`` default and ``commit``).
   The SDK runs its websocket-client thread; the test waits for it with ``asyncio.to_thread``.
2. Frame comparison: the same request made by our client and by the SDK, both captured at the simulator
   (``SimulatorConfig(capture_frames=True)``, ``ConnectionRecord.frames_in``), must match frame by frame up to
   ``event_id``. Where the SDK sends a field Alibaba's docs do not list for the model, the difference is named in
   :data:`ASR_SDK_ONLY` (and nowhere else).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import dashscope
import pytest
from dashscope.audio.qwen_omni import (
    MultiModality,
    OmniRealtimeCallback,
    OmniRealtimeConversation,
)
from dashscope.audio.qwen_omni.omni_realtime import TranscriptionParams
from dashscope.audio.qwen_tts_realtime import QwenTtsRealtime, QwenTtsRealtimeCallback

from qwen_gateway.providers.dashscope.asr_qwen_realtime import (
    MAX_AUDIO_CHUNK,
    QwenRealtimeRecognizer,
)
from qwen_gateway.providers.dashscope.policy import Backoff, Timeouts
from qwen_gateway.providers.dashscope.tts_qwen import QwenRealtimeSynthesizer
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator.audio import synthesize

KEY = "sk-referee"
ASR = "qwen3-asr-flash-realtime"
OMNI = "qwen3-omni-flash-realtime"
TEXT = "今天天气怎么样？我想出去走走。"
SPEECH = synthesize(TEXT, 16000)
SILENCE = bytes(16000 * 2)
TIMEOUTS = Timeouts(connect=5, read=10, write=5, close=1)
BACKOFF = Backoff(retries=0)

#: Fields the SDK's generic ``OmniRealtimeConversation.update_session`` puts in every ``session.update`` that the
#: Qwen-ASR-Realtime client-events page does not list for the model (it is text-only: no voice, no output audio).
#: Our client leaves them out; everything else must be equal.
ASR_SDK_ONLY = {"voice": None, "output_audio_format": "pcm16"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY, capture_frames=True)) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def sdk_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope, "api_key", KEY)


def realtime_url(sim: Simulator) -> str:
    """What the SDK's realtime classes take as ``url`` (they append ``?model=``)."""
    return f"{sim.ws_base_url}/api-ws/v1/realtime"


class Events(OmniRealtimeCallback, QwenTtsRealtimeCallback):
    """Collects what the SDK hands its callback; ``wait_for`` blocks (in the SDK's thread) for an event type."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed: tuple[Any, Any] | None = None
        self._cond = threading.Condition()

    def on_event(self, message: Any) -> None:
        with self._cond:
            self.events.append(message)
            self._cond.notify_all()

    def on_close(self, close_status_code: Any, close_msg: Any) -> None:
        with self._cond:
            self.closed = (close_status_code, close_msg)
            self._cond.notify_all()

    def wait_for(self, type: str, count: int = 1, timeout: float = 10.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.of(type)) >= count, timeout)
        assert ok, f"no {type} (got {self.types()})"

    def of(self, type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type]

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]


def chunks(audio: bytes, size: int = MAX_AUDIO_CHUNK) -> list[str]:
    return [base64.b64encode(audio[i : i + size]).decode() for i in range(0, len(audio), size)]


def normalised(frames: list[Any], sdk_only: dict[str, Any] | None = None) -> list[Any]:
    """Client frames without ``event_id`` (random on both sides); ``sdk_only``: session fields removed from
    ``session.update`` after checking their value (:data:`ASR_SDK_ONLY`)."""
    out = []
    for frame in frames:
        assert isinstance(frame, dict), frame
        frame = {k: v for k, v in frame.items() if k != "event_id"}
        if frame.get("type") == "session.update" and sdk_only:
            session = dict(frame["session"])
            for key, value in sdk_only.items():
                if key in session:
                    assert session.pop(key) == value, key
            frame["session"] = session
        out.append(frame)
    return out


def frames_of(sim: Simulator, index: int) -> list[Any]:
    return list(sim.log.connections[index].frames_in)


# ---------------------------------------------------------------------------------------- realtime ASR


def sdk_asr(sim: Simulator, audio: bytes, *, vad: bool) -> Events:
    """The Qwen-ASR-Realtime Python SDK example's calls, manual commit or server VAD."""
    events = Events()
    conv = OmniRealtimeConversation(model=ASR, callback=events, url=realtime_url(sim))
    conv.connect()
    events.wait_for("session.created")
    conv.update_session(
        output_modalities=[MultiModality.TEXT],
        enable_turn_detection=vad,
        turn_detection_threshold=0.0,
        turn_detection_silence_duration_ms=500,
        transcription_params=TranscriptionParams(sample_rate=16000, input_audio_format="pcm"),
    )
    events.wait_for("session.updated")
    for piece in chunks(audio):
        conv.append_audio(piece)
    if not vad:
        conv.commit()
    conv.end_session(timeout=10)
    conv.close()
    return events


async def test_sdk_recognises_with_manual_commit(sim: Simulator) -> None:
    sim.register_transcript(SPEECH, TEXT)
    events = await asyncio.to_thread(sdk_asr, sim, SPEECH, vad=False)
    (completed,) = events.of("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == TEXT
    partials = events.of("conversation.item.input_audio_transcription.text")
    assert partials and all(TEXT.startswith(p["text"] + p["stash"]) for p in partials)
    types = events.types()
    assert types[:2] == ["session.created", "session.updated"]
    assert types.index("input_audio_buffer.committed") < types.index(
        "conversation.item.input_audio_transcription.completed"
    )
    assert types[-1] == "session.finished"
    assert "input_audio_buffer.speech_started" not in types
    (record,) = sim.log.realtime_asr_sessions
    assert record.session["turn_detection"] is None and record.finished


async def test_sdk_recognises_with_server_vad(sim: Simulator) -> None:
    audio = SILENCE + SPEECH + SILENCE + SPEECH + SILENCE
    events = await asyncio.to_thread(sdk_asr, sim, audio, vad=True)
    types = events.types()
    assert types.count("input_audio_buffer.speech_started") == 2
    assert types.count("input_audio_buffer.speech_stopped") == 2
    completed = events.of("conversation.item.input_audio_transcription.completed")
    assert len(completed) == 2 and all(c["transcript"] for c in completed)
    started = events.of("input_audio_buffer.speech_started")
    stopped = events.of("input_audio_buffer.speech_stopped")
    assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"] < started[1]["audio_start_ms"]
    assert types[-1] == "session.finished"
    (record,) = sim.log.realtime_asr_sessions
    assert record.session["turn_detection"]["type"] == "server_vad"
    assert [i.via for i in record.items] == ["vad", "vad"]


async def test_our_recogniser_sends_what_the_sdk_sends(sim: Simulator) -> None:
    sim.register_transcript(SPEECH, TEXT)
    await asyncio.to_thread(sdk_asr, sim, SPEECH, vad=False)
    recognizer = QwenRealtimeRecognizer(
        url=realtime_url(sim), model=ASR, api_key=KEY, timeouts=TIMEOUTS, backoff=BACKOFF
    )
    async with recognizer.session(format="pcm", sample_rate=16000) as session:
        await session.feed(SPEECH)
        await session.finish()
        finals = [r.text async for r in session.results() if r.is_final]
    assert finals == [TEXT]
    await sim.wait_closed()
    sdk, ours = frames_of(sim, 0), frames_of(sim, 1)
    assert normalised(ours) == normalised(sdk, ASR_SDK_ONLY)
    assert "voice" in sdk[0]["session"] and "voice" not in ours[0]["session"]
    assert [f["type"] for f in ours] == [
        "session.update",
        *["input_audio_buffer.append"] * len(chunks(SPEECH)),
        "input_audio_buffer.commit",
        "session.finish",
    ]
    assert all(f["event_id"].startswith("event_") for f in ours)


# ---------------------------------------------------------------------------------------- Qwen-Omni


def sdk_omni(sim: Simulator, audio: bytes, *, vad: bool) -> Events:
    events = Events()
    conv = OmniRealtimeConversation(model=OMNI, callback=events, url=realtime_url(sim))
    conv.connect()
    events.wait_for("session.created")
    conv.update_session(
        output_modalities=[MultiModality.AUDIO, MultiModality.TEXT],
        voice="Cherry",
        enable_turn_detection=vad,
        turn_detection_threshold=0.0,
        turn_detection_silence_duration_ms=500,
    )
    events.wait_for("session.updated")
    conv.append_video(base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg").decode())
    for piece in chunks(audio):
        conv.append_audio(piece)
    if not vad:
        conv.commit()
        conv.create_response()
    events.wait_for("response.done")
    conv.end_session(timeout=10)
    conv.close()
    return events


@pytest.mark.parametrize("vad", [False, True], ids=["manual", "server_vad"])
async def test_sdk_talks_to_omni(sim: Simulator, vad: bool) -> None:
    sim.register_transcript(SPEECH, TEXT)
    sim.set_reply("今天晴，适合散步。记得带水。")
    audio = SPEECH + SILENCE if vad else SPEECH
    events = await asyncio.to_thread(sdk_omni, sim, audio, vad=vad)
    types = events.types()
    (completed,) = events.of("conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == TEXT
    cycle = [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.audio_transcript.done",
        "response.audio.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert [t for t in types if t in cycle] == cycle
    transcript = "".join(e["delta"] for e in events.of("response.audio_transcript.delta"))
    assert transcript == "今天晴，适合散步。记得带水。"
    pcm = b"".join(base64.b64decode(e["delta"]) for e in events.of("response.audio.delta"))
    assert len(pcm) > 24000  # over half a second of 24 kHz PCM16
    (done,) = events.of("response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens_details"]["audio_tokens"] > 0
    assert types[-1] == "session.finished"
    (record,) = sim.log.omni_sessions
    assert record.images == 1 and record.responses[0].audio_bytes == len(pcm)
    if vad:
        assert (
            "input_audio_buffer.speech_stopped" in types and "response.create" not in record.events
        )


async def test_omni_response_cancel(sim: Simulator) -> None:
    sim.configure(tts_realtime_factor=1.0)
    sim.set_reply("一段很长的回答。" * 20)

    def run() -> Events:
        events = Events()
        conv = OmniRealtimeConversation(model=OMNI, callback=events, url=realtime_url(sim))
        conv.connect()
        conv.update_session(
            output_modalities=[MultiModality.AUDIO, MultiModality.TEXT],
            voice="Cherry",
            enable_turn_detection=False,
        )
        for piece in chunks(SPEECH):
            conv.append_audio(piece)
        conv.commit()
        conv.create_response()
        events.wait_for("response.audio.delta")
        conv.cancel_response()
        events.wait_for("response.done")
        conv.end_session(timeout=10)
        conv.close()
        return events

    events = await asyncio.to_thread(run)
    (done,) = events.of("response.done")
    assert done["response"]["status"] == "cancelled"


# ---------------------------------------------------------------------------------------- Qwen-TTS-Realtime

SENTENCES = ["你好，我是千问。", "今天天气不错。"]


def sdk_tts(sim: Simulator, *, mode: str | None) -> Events:
    events = Events()
    tts = QwenTtsRealtime(model="qwen-tts-realtime", callback=events, url=realtime_url(sim))
    tts.connect()
    if mode is None:
        tts.update_session(voice="Cherry")  # the SDK's default: server_commit
    else:
        tts.update_session(voice="Cherry", mode=mode)
    events.wait_for("session.updated")
    for sentence in SENTENCES:
        tts.append_text(sentence)
        if mode == "commit":
            tts.commit()
    tts.finish()
    events.wait_for("session.finished")
    return events


@pytest.mark.parametrize("mode", [None, "commit"], ids=["server_commit", "commit"])
async def test_sdk_synthesises(sim: Simulator, mode: str | None) -> None:
    events = await asyncio.to_thread(sdk_tts, sim, mode=mode)
    (updated,) = events.of("session.updated")
    assert updated["session"]["mode"] == (mode or "server_commit")
    dones = events.of("response.done")
    assert len(dones) == len(SENTENCES) and all(
        d["response"]["status"] == "completed" for d in dones
    )
    pcm = b"".join(base64.b64decode(e["delta"]) for e in events.of("response.audio.delta"))
    assert len(pcm) > 24000
    if mode == "commit":
        assert len(events.of("input_text_buffer.committed")) == len(SENTENCES)
    (record,) = sim.log.tts_sessions
    assert record.text == "".join(SENTENCES) and record.finished


async def test_our_synthesiser_sends_what_the_sdk_sends(sim: Simulator) -> None:
    await asyncio.to_thread(sdk_tts, sim, mode="commit")
    synthesizer = QwenRealtimeSynthesizer(
        url=f"{realtime_url(sim)}?model=qwen-tts-realtime",
        voice="Cherry",
        sample_rate=24000,
        api_key=KEY,
        timeouts=TIMEOUTS,
        backoff=BACKOFF,
    )
    async with synthesizer.session() as session:
        for sentence in SENTENCES:
            await session.send_text(sentence)
        await session.finish()
        audio = b"".join([chunk.pcm async for chunk in session.audio()])
    assert audio
    await sim.wait_closed()
    sdk, ours = frames_of(sim, 0), frames_of(sim, 1)
    assert normalised(ours) == normalised(sdk)


# ---------------------------------------------------------------------------------------- refusals


async def test_sdk_sees_a_wrong_model_refused(sim: Simulator) -> None:
    """The error event reaches the callback, then the 1008 close (the SDK's connect() may already find the socket
    closed: it polls for the connection every 100 ms and then raises its own TimeoutError)."""

    def run() -> Events:
        events = Events()
        conv = OmniRealtimeConversation(
            model="paraformer-v2", callback=events, url=realtime_url(sim)
        )
        with contextlib.suppress(TimeoutError):
            conv.connect()
        events.wait_for("error")
        with events._cond:
            events._cond.wait_for(lambda: events.closed is not None, 5.0)
        return events

    events = await asyncio.to_thread(run)
    (error,) = events.of("error")
    assert error["error"]["code"] == "model_not_found"
    assert events.closed is not None and events.closed[0] == 1008
