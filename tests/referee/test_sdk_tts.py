"""The official ``dashscope`` SDK (2.0.2) as referee of speech synthesis.

1. The SDK drives the simulator: ``tts_v2.SpeechSynthesizer`` sync (``call``) and streaming (``streaming_call`` +
   ``streaming_complete``) for a CosyVoice and a qwen-audio model, with the SDK's default format (MP3 at 22050 Hz)
   and with PCM; the HTTP synthesis call (``qwen_tts.SpeechSynthesizer.call(..., stream=True)``); the v2 client's
   duplex session (``client.audio.tts.connect``) and HTTP stream (``client.audio.tts.http.stream``).
2. What the gateway's own clients send is compared with what the SDK sends for the same request, captured at the
   simulator: the task-WebSocket frames (up to task ids) and the HTTP request (body, and the headers that carry
   meaning). A disagreement fails here.

The SDK is synchronous (``websocket-client`` and ``requests`` in threads): it runs in ``asyncio.to_thread`` while
the simulator serves on this test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dashscope
import msgspec
import pytest
from dashscope.audio.qwen_tts import SpeechSynthesizer as QwenHttpSynthesizer
from dashscope.audio.tts_v2 import AudioFormat, ResultCallback, SpeechSynthesizer

from qwen_gateway.config import load_settings
from qwen_gateway.providers.base import SynthesisSession
from qwen_gateway.providers.dashscope import Tuning, build_providers
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator.audio import duration_of, synthesize

KEY = "sk-referee-key"
SEGMENTS = ["你好，我是通义千问。", "今天天气很好。"]
FAST = Tuning(retry_base=0.01, retry_cap=0.05, close_timeout=0.5)
VOICES = {"cosyvoice-v2": "longxiaochun_v2", "qwen-audio-3.1-tts-flash": "longanhuan_v3.1"}


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY), host="127.0.0.1", port=0) as simulator:
        # The SDK reads its endpoints and key from module attributes at call time.
        monkeypatch.setattr(dashscope, "api_key", KEY)
        monkeypatch.setattr(
            dashscope, "base_websocket_api_url", simulator.env["DASHSCOPE_WEBSOCKET_BASE_URL"]
        )
        monkeypatch.setattr(
            dashscope, "base_http_api_url", simulator.env["DASHSCOPE_HTTP_BASE_URL"]
        )
        yield simulator


class _Collect(ResultCallback):
    def __init__(self) -> None:
        self.audio = bytearray()
        self.complete = threading.Event()
        self.errors: list[str] = []

    def on_data(self, data: bytes) -> None:
        self.audio += data

    def on_complete(self) -> None:
        self.complete.set()

    def on_error(self, message: Any) -> None:
        self.errors.append(str(message))


def _sdk_call(model: str, fmt: AudioFormat, text: str) -> bytes:
    synthesizer = SpeechSynthesizer(model=model, voice=VOICES[model], format=fmt)
    audio = synthesizer.call(text)
    assert isinstance(audio, bytes)
    return audio


def _sdk_stream(model: str, fmt: AudioFormat, segments: list[str]) -> bytes:
    callback = _Collect()
    synthesizer = SpeechSynthesizer(model=model, voice=VOICES[model], format=fmt, callback=callback)
    for text in segments:
        synthesizer.streaming_call(text)
    synthesizer.streaming_complete()
    assert callback.complete.is_set() and not callback.errors
    return bytes(callback.audio)


def _expected_seconds(segments: list[str]) -> float:
    return sum(len(synthesize(t, 24000)) for t in segments) / 48000


# --- 1. the SDK against the simulator ---------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(VOICES))
async def test_sync_call_with_the_default_format_is_mp3_at_22050(
    sim: Simulator, model: str
) -> None:
    audio = await asyncio.to_thread(_sdk_call, model, AudioFormat.DEFAULT, "".join(SEGMENTS))
    assert duration_of(audio, "mp3") == pytest.approx(_expected_seconds(SEGMENTS), abs=0.15)
    record = sim.log.cosyvoice_sessions[-1]
    assert (record.params["format"], record.params["sample_rate"]) == ("Default", 0)
    assert record.finished and record.model == model


@pytest.mark.parametrize("model", sorted(VOICES))
async def test_sync_call_with_pcm(sim: Simulator, model: str) -> None:
    fmt = AudioFormat.PCM_24000HZ_MONO_16BIT
    audio = await asyncio.to_thread(_sdk_call, model, fmt, "".join(SEGMENTS))
    assert audio == synthesize(SEGMENTS[0], 24000) + synthesize(SEGMENTS[1], 24000)


@pytest.mark.parametrize("model", sorted(VOICES))
@pytest.mark.parametrize(
    "fmt", [AudioFormat.DEFAULT, AudioFormat.PCM_24000HZ_MONO_16BIT], ids=["default", "pcm"]
)
async def test_streaming_call(sim: Simulator, model: str, fmt: AudioFormat) -> None:
    audio = await asyncio.to_thread(_sdk_stream, model, fmt, SEGMENTS)
    if fmt is AudioFormat.DEFAULT:
        assert duration_of(audio, "mp3") == pytest.approx(_expected_seconds(SEGMENTS), abs=0.15)
    else:
        assert audio == b"".join(synthesize(t, 24000) for t in SEGMENTS)
    record = sim.log.cosyvoice_sessions[-1]
    assert record.texts == SEGMENTS and record.finished


def _sdk_http_stream(model: str, text: str) -> tuple[bytes, list[Any]]:
    responses = list(QwenHttpSynthesizer.call(model=model, text=text, voice="Cherry", stream=True))
    pcm = b"".join(
        base64.b64decode(r.output["audio"]["data"])
        for r in responses
        if r.status_code == 200 and r.output["audio"]["data"]
    )
    return pcm, responses


@pytest.mark.parametrize("model", ["qwen3-tts-flash", "qwen-tts"])
async def test_http_stream(sim: Simulator, model: str) -> None:
    pcm, responses = await asyncio.to_thread(_sdk_http_stream, model, SEGMENTS[0])
    assert all(r.status_code == 200 for r in responses)
    assert pcm == synthesize(SEGMENTS[0], 24000)
    last = responses[-1].output
    assert last["finish_reason"] == "stop" and last["audio"]["url"]


async def test_http_call_for_a_model_it_does_not_serve(sim: Simulator) -> None:
    def call() -> Any:
        return QwenHttpSynthesizer.call(model="cosyvoice-v2", text="你好", voice="Cherry")

    response = await asyncio.to_thread(call)
    assert (response.status_code, response.code) == (404, "ModelNotFound")


# --- 2. our clients send what the SDK sends ----------------------------------------------------------------
async def _gateway_speaks(sim: Simulator, model: str, segments: list[str]) -> None:
    settings = load_settings(
        sim.env, dotenv=None, qwen_api_key=KEY, tts_model=model, tts_voice=VOICES.get(model, "")
    )
    providers = build_providers(settings, tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await _speak(session, segments)
    finally:
        await providers.aclose()


async def _speak(session: SynthesisSession, segments: list[str]) -> None:
    async def read() -> None:
        async for _ in session.audio():
            pass

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        for text in segments:
            await session.send_text(text)
        await session.finish()


def _without_task_id(frames: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for frame in frames:
        header = {k: v for k, v in frame["header"].items() if k != "task_id"}
        yield {**frame, "header": header}


@pytest.mark.parametrize("model", sorted(VOICES))
async def test_task_frames_match_the_sdks(sim: Simulator, model: str) -> None:
    await asyncio.to_thread(_sdk_stream, model, AudioFormat.PCM_24000HZ_MONO_16BIT, SEGMENTS)
    await _gateway_speaks(sim, model, SEGMENTS)
    sdk, ours = sim.log.cosyvoice_sessions
    assert list(_without_task_id(ours.instructions)) == list(_without_task_id(sdk.instructions))
    assert len({f["header"]["task_id"] for f in ours.instructions}) == 1
    sdk_headers, our_headers = sdk.connection.headers, ours.connection.headers
    assert our_headers["authorization"] == sdk_headers["authorization"]
    assert ("x-dashscope-workspace" in our_headers) == ("x-dashscope-workspace" in sdk_headers)


def _media(headers: dict[str, str], name: str) -> str:
    return headers.get(name, "").split(";", 1)[0].strip().lower()


@pytest.mark.parametrize("model", ["qwen3-tts-flash", "qwen-tts"])
async def test_http_request_matches_the_sdks(sim: Simulator, model: str) -> None:
    await asyncio.to_thread(_sdk_http_stream, model, SEGMENTS[0])
    await _gateway_speaks(sim, model, SEGMENTS[:1])
    sdk, ours = sim.log.http_tts_requests
    assert msgspec.json.decode(ours.raw) == msgspec.json.decode(sdk.raw)
    for name in ("authorization", "x-dashscope-sse", "accept"):
        assert ours.headers.get(name) == sdk.headers.get(name), name
    assert _media(ours.headers, "content-type") == _media(sdk.headers, "content-type")
    assert ours.connection.path == sdk.connection.path


# --- the SDK's v2 client (dashscope.Client) ------------------------------------------------------------------
V2_PREVIEW = pytest.mark.filterwarnings("ignore:dashscope 2.0 audio API is a preview:FutureWarning")


def _v2_client(sim: Simulator) -> Any:
    return dashscope.Client(api_key=KEY, base_url=sim.env["DASHSCOPE_HTTP_BASE_URL"], timeout=10)


@V2_PREVIEW
@pytest.mark.parametrize("model", sorted(VOICES))
async def test_v2_duplex_session(sim: Simulator, model: str) -> None:
    def run() -> bytes:
        client = _v2_client(sim)
        try:
            with client.audio.tts.connect(
                model=model,
                voice=VOICES[model],
                format="pcm",
                sample_rate=24000,
                ws_url=sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"],
            ) as session:
                for text in SEGMENTS:
                    session.send_text(text)
                session.stop()
                return b"".join(session.audio_chunks())
        finally:
            client.close()

    audio = await asyncio.to_thread(run)
    assert audio == b"".join(synthesize(t, 24000) for t in SEGMENTS)
    record = sim.log.cosyvoice_sessions[-1]
    assert record.texts == SEGMENTS and record.finished


@V2_PREVIEW
@pytest.mark.parametrize("model", ["qwen3-tts-flash", "qwen-tts"])
async def test_v2_http_stream(sim: Simulator, model: str) -> None:
    def run() -> tuple[bytes, Any]:
        client = _v2_client(sim)
        try:
            stream = client.audio.tts.http.stream(SEGMENTS[0], model=model, voice="Cherry")
            try:
                chunks = list(stream)
            finally:
                stream.close()
            return b"".join(c.audio or b"" for c in chunks), chunks[-1]
        finally:
            client.close()

    pcm, last = await asyncio.to_thread(run)
    assert pcm == synthesize(SEGMENTS[0], 24000)
    assert last.is_final and last.audio_url
