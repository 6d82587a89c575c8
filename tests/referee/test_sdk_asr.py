"""Alibaba's own ``dashscope`` SDK (2.0.2) as referee for recognition.

The SDK drives the simulator and must get the registered transcripts: ``Recognition`` streaming (``start`` /
``send_audio_frame`` / ``stop``) and ``call`` (a file), ``TranslationRecognizerRealtime`` for gummy,
``Transcription`` (``async_call`` + ``wait``) and ``QwenTranscription``. Then the gateway's own clients make the
same request (same model, format, rate, audio, workspace), and what both sent is compared at the simulator, frame
by frame, up to task ids: every text frame as parsed JSON, every binary frame byte for byte, the submission body,
and the DashScope headers (the SDK's own ``user-agent`` / ``x-dashscope-sdk-*`` headers are optional, §10).

The SDK is synchronous (aiohttp in its own loop, requests): it runs in a thread (``asyncio.to_thread``) against the
simulator on loopback. Its base URLs are its module attributes ``dashscope.base_websocket_api_url`` /
``base_http_api_url`` (read at each call; ``DASHSCOPE_WEBSOCKET_BASE_URL`` / ``DASHSCOPE_HTTP_BASE_URL`` only seed
them at import).

Frames are captured where the simulator reads them (``simulator.asgi.WebSocket.receive``), by this module alone:
the simulator's records keep the ``run-task`` and the audio, not the frame sequence.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dashscope
import httpx
import pytest
from dashscope.audio.asr import (
    Recognition,
    RecognitionCallback,
    RecognitionResult,
    Transcription,
    TranslationRecognizerCallback,
    TranslationRecognizerRealtime,
)
from dashscope.audio.qwen_asr import QwenTranscription

from qwen_gateway.config import load_settings
from qwen_gateway.providers.dashscope import Providers, Tuning, build_providers
from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator import asgi as sim_asgi

KEY = "sk-referee-key"
WORKSPACE = "ws-referee"
FAST = Tuning(poll_initial=0.05, poll_max=0.2, retry_base=0.01, retry_cap=0.05)
#: DashScope's headers; the rest (user-agent, x-dashscope-sdk-client/-session-id, accept...) are the client's.
DASHSCOPE_HEADERS = ("authorization", "x-dashscope-async", "x-dashscope-workspace")


# ------------------------------------------------------------------------------------------ audio


def pcm(seconds: float, *, rate: int = 16000, freq: float = 300.0) -> bytes:
    """Mono 16-bit PCM of a tone (distinct per ``freq``)."""
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )


# ------------------------------------------------------------------------------------------ capture


@dataclass
class Socket:
    """One WebSocket the simulator accepted: what the client sent on it, in order."""

    path: str
    headers: dict[str, str]
    frames: list[str | bytes] = field(default_factory=list)


class Capture:
    """Every client frame the simulator reads, per socket."""

    def __init__(self) -> None:
        self._sockets: dict[int, Socket] = {}

    def record(self, ws: Any, message: str | bytes) -> None:
        sock = self._sockets.setdefault(id(ws), Socket(ws.path, dict(ws.headers)))
        sock.frames.append(message)

    @property
    def sockets(self) -> list[Socket]:
        return list(self._sockets.values())

    def clear(self) -> None:
        self._sockets.clear()


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Capture:
    found = Capture()
    receive = sim_asgi.WebSocket.receive

    async def recording(self: Any) -> str | bytes:
        message = await receive(self)
        found.record(self, message)
        return message

    monkeypatch.setattr(sim_asgi.WebSocket, "receive", recording)
    return found


def normalised(frames: list[str | bytes]) -> list[Any]:
    """Frames up to task ids: text as JSON with ``header.task_id`` blanked and the parameters the SDK sends as
    null (unset optional arguments) left out; binary as it is."""
    out: list[Any] = []
    for frame in frames:
        if isinstance(frame, bytes):
            out.append(frame)
            continue
        message = json.loads(frame)
        message["header"]["task_id"] = "<task>"
        params = message.get("payload", {}).get("parameters")
        if isinstance(params, dict):
            message["payload"]["parameters"] = {k: v for k, v in params.items() if v is not None}
        out.append(message)
    return out


def dashscope_headers(headers: dict[str, str]) -> dict[str, str]:
    found = {k: headers[k] for k in DASHSCOPE_HEADERS if k in headers}
    if "authorization" in found:  # the SDK's WebSocket sends "Bearer"; any case is valid
        scheme, _, token = found["authorization"].partition(" ")
        found["authorization"] = f"{scheme.lower()} {token}"
    return found


# ------------------------------------------------------------------------------------------ fixtures


class FileServer:
    """A loopback HTTP server for the URLs the simulator downloads (in the test's loop)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FileServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def add(self, name: str, data: bytes) -> str:
        assert self._server is not None
        self.files[name] = data
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/{name}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            body = self.files.get(head.split(b" ", 2)[1].decode().lstrip("/"))
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body or b""
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(api_key=KEY, file_asr_pending_polls=0, file_asr_running_polls=1)
    async with Simulator(config, host="127.0.0.1", port=0) as simulator:
        monkeypatch.setattr(dashscope, "api_key", KEY)
        monkeypatch.setattr(
            dashscope, "base_websocket_api_url", simulator.env["DASHSCOPE_WEBSOCKET_BASE_URL"]
        )
        monkeypatch.setattr(
            dashscope, "base_http_api_url", simulator.env["DASHSCOPE_HTTP_BASE_URL"]
        )
        yield simulator


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with FileServer() as server:
        yield server


def ours(sim: Simulator, model: str, *, workspace: str = "") -> Providers:
    """The gateway's engines for ``model``, pointed at ``sim``."""
    settings = load_settings(
        sim.env, dotenv=None, qwen_api_key=KEY, asr_model=model, workspace=workspace
    )
    return build_providers(settings, tuning=FAST)


@pytest.fixture(params=[WORKSPACE, ""], ids=["workspace", "no-workspace"])
def workspace(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def sdk_workspace(workspace: str) -> str | None:
    return workspace or None


def chunks(audio: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


# ------------------------------------------------------------------------------------------ the SDK's side


class _Collect(RecognitionCallback):
    """Final sentences of a streaming ``Recognition``."""

    def __init__(self) -> None:
        self.finals: list[str] = []
        self.errors: list[Any] = []

    def on_event(self, result: RecognitionResult) -> None:
        sentence = result.get_sentence()
        if isinstance(sentence, dict) and RecognitionResult.is_sentence_end(sentence):
            self.finals.append(sentence["text"])

    def on_error(self, result: RecognitionResult) -> None:
        self.errors.append(result)


def sdk_stream(model: str, audio: bytes, rate: int, frame: int, workspace: str) -> list[str]:
    callback = _Collect()
    recognition = Recognition(
        model=model,
        callback=callback,
        format="pcm",
        sample_rate=rate,
        workspace=sdk_workspace(workspace),
    )
    recognition.start()
    for piece in chunks(audio, frame):
        recognition.send_audio_frame(piece)
    recognition.stop()
    assert not callback.errors, callback.errors
    return callback.finals


def sdk_call(model: str, path: Path, rate: int, workspace: str) -> list[str]:
    recognition = Recognition(
        model=model,
        callback=None,  # type: ignore[arg-type]
        format="pcm",
        sample_rate=rate,
        workspace=sdk_workspace(workspace),
    )
    result = recognition.call(str(path))
    assert result.status_code == 200, result
    sentences = result.get_sentence() or []
    assert isinstance(sentences, list)
    return [s["text"] for s in sentences]


class _Gummy(TranslationRecognizerCallback):
    def __init__(self) -> None:
        self.finals: list[str] = []
        self.errors: list[Any] = []
        self.complete = False

    def on_event(self, request_id: Any, transcription: Any, translation: Any, usage: Any) -> None:
        if transcription is not None and transcription.is_sentence_end:
            self.finals.append(transcription.text)

    def on_error(self, message: Any) -> None:
        self.errors.append(message)

    def on_complete(self) -> None:
        self.complete = True


def sdk_gummy_stream(audio: bytes, frame: int, workspace: str) -> list[str]:
    callback = _Gummy()
    recognizer = TranslationRecognizerRealtime(
        model="gummy-realtime-v1",
        callback=callback,
        format="pcm",
        sample_rate=16000,
        workspace=sdk_workspace(workspace),
    )
    recognizer.start()
    for piece in chunks(audio, frame):
        recognizer.send_audio_frame(piece)
    recognizer.stop()
    assert not callback.errors and callback.complete, callback.errors
    return callback.finals


def sdk_gummy_call(path: Path, workspace: str) -> list[str]:
    recognizer = TranslationRecognizerRealtime(
        model="gummy-realtime-v1",
        callback=None,  # type: ignore[arg-type]
        format="pcm",
        sample_rate=16000,
        workspace=sdk_workspace(workspace),
    )
    pack = recognizer.call(str(path))
    assert pack.error_message is None, pack.error_message
    return [t.text for t in pack.transcription_result_list if t is not None]


# ------------------------------------------------------------------------------------------ our side


async def our_stream(
    sim: Simulator, model: str, audio: bytes, rate: int, frame: int | None, workspace: str
) -> list[str]:
    """Our RealtimeRecognizer fed ``audio`` in ``frame``-byte pieces (None: in one feed)."""
    providers = ours(sim, model, workspace=workspace)
    finals: list[str] = []
    try:
        async with providers.recognizer.session(format="pcm", sample_rate=rate) as session:

            async def read() -> None:
                async for result in session.results():
                    if result.is_final and result.text:
                        finals.append(result.text)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(read())
                for piece in chunks(audio, frame) if frame else [audio]:
                    await session.feed(piece)
                await session.finish()
    finally:
        await providers.aclose()
    return finals


def only_socket(capture: Capture) -> Socket:
    (sock,) = capture.sockets
    assert sock.path.startswith("/api-ws/v1/inference")
    return sock


async def compare_streams(
    capture: Capture, sdk: Any, ours_: Any, text: str
) -> tuple[list[Any], list[Any]]:
    """Run the SDK's session then ours; both must recognise ``text``; return both sockets' frames."""
    capture.clear()
    assert "".join(await asyncio.to_thread(sdk)) == text
    theirs = only_socket(capture)
    capture.clear()
    assert "".join(await ours_) == text
    mine = only_socket(capture)
    assert dashscope_headers(mine.headers) == dashscope_headers(theirs.headers)
    return normalised(theirs.frames), normalised(mine.frames)


# ------------------------------------------------------------------------------------------ streaming


STREAM_MODELS = [
    ("paraformer-realtime-v2", 16000),
    ("paraformer-realtime-8k-v2", 8000),
    ("fun-asr-realtime", 16000),
    ("qwen-audio-3.1-asr-flash-streaming", 16000),
]


@pytest.mark.parametrize(("model", "rate"), STREAM_MODELS)
async def test_recognition_stream(
    sim: Simulator, capture: Capture, workspace: str, model: str, rate: int
) -> None:
    audio = pcm(1.5, rate=rate)
    text = "今天天气怎么样？我们去公园吧。"
    sim.register_transcript(audio, text)
    frame = rate // 10 * 2  # 100 ms of 16-bit PCM, as the SDK's examples send
    theirs, mine = await compare_streams(
        capture,
        lambda: sdk_stream(model, audio, rate, frame, workspace),
        our_stream(sim, model, audio, rate, frame, workspace),
        text,
    )
    assert mine == theirs
    assert isinstance(theirs[0], dict) and theirs[0]["header"]["action"] == "run-task"
    assert theirs[0]["payload"]["model"] == model
    assert theirs[0]["payload"]["parameters"] == {"format": "pcm", "sample_rate": rate}
    assert theirs[-1]["header"]["action"] == "finish-task"
    assert b"".join(f for f in theirs if isinstance(f, bytes)) == audio


@pytest.mark.parametrize(("model", "rate"), STREAM_MODELS)
async def test_recognition_call_with_a_file(
    sim: Simulator, capture: Capture, tmp_path: Path, model: str, rate: int
) -> None:
    audio = pcm(2.2, rate=rate, freq=440.0)
    text = "请把客厅的灯打开。"
    sim.register_transcript(audio, text)
    path = tmp_path / "speech.pcm"
    path.write_bytes(audio)
    theirs, mine = await compare_streams(
        capture,
        lambda: sdk_call(model, path, rate, ""),
        our_stream(sim, model, audio, rate, None, ""),  # the whole file in one feed
        text,
    )
    # The SDK reads the file 12,800 bytes at a time; our client splits a feed the same way.
    assert next(len(f) for f in theirs if isinstance(f, bytes)) == 12_800
    assert mine == theirs


async def test_gummy_stream(sim: Simulator, capture: Capture, workspace: str) -> None:
    audio = pcm(1.5, freq=520.0)
    text = "你好，很高兴认识你。"
    sim.register_transcript(audio, text)
    theirs, mine = await compare_streams(
        capture,
        lambda: sdk_gummy_stream(audio, 3200, workspace),
        our_stream(sim, "gummy-realtime-v1", audio, 16000, 3200, workspace),
        text,
    )
    assert mine == theirs
    assert theirs[0]["payload"]["parameters"] == {
        "format": "pcm",
        "sample_rate": 16000,
        "transcription_enabled": True,
        "translation_enabled": False,
    }


async def test_gummy_call_with_a_file(sim: Simulator, capture: Capture, tmp_path: Path) -> None:
    audio = pcm(2.0, freq=610.0)
    text = "明天早上八点叫我起床。"
    sim.register_transcript(audio, text)
    path = tmp_path / "gummy.pcm"
    path.write_bytes(audio)
    theirs, mine = await compare_streams(
        capture,
        lambda: sdk_gummy_call(path, ""),
        our_stream(sim, "gummy-realtime-v1", audio, 16000, None, ""),
        text,
    )
    assert mine == theirs


# ------------------------------------------------------------------------------------------ file recognition


def _result_text(url: str) -> str:
    """The text of a result file (signed URL: fetched without a key, as the SDK's examples do)."""
    document = httpx.get(url, timeout=10).json()
    return "\n".join(t["text"] for t in document["transcripts"])


def sdk_transcription(model: str, url: str, workspace: str) -> str:
    submitted = Transcription.async_call(
        model=model, file_urls=[url], workspace=sdk_workspace(workspace)
    )
    assert submitted.status_code == 200, submitted
    done = Transcription.wait(task=submitted.output.task_id, workspace=sdk_workspace(workspace))
    assert done.output.task_status == "SUCCEEDED", done
    (result,) = done.output["results"]
    assert result["subtask_status"] == "SUCCEEDED"
    return _result_text(result["transcription_url"])


def sdk_qwen_transcription(model: str, url: str, workspace: str) -> str:
    submitted = QwenTranscription.async_call(
        model=model, file_url=url, workspace=sdk_workspace(workspace)
    )
    assert submitted.status_code == 200, submitted
    done = QwenTranscription.wait(task=submitted.output.task_id, workspace=sdk_workspace(workspace))
    assert done.output.task_status == "SUCCEEDED", done
    return _result_text(done.output["result"]["transcription_url"])


def _requests(sim: Simulator, start: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(submit headers, poll headers) of the requests recorded from ``start`` on."""
    recorded = sim.log.connections[start:]
    (submit,) = [c for c in recorded if c.kind == "file_asr"]
    polls = [dashscope_headers(c.headers) for c in recorded if c.kind == "tasks"]
    assert polls
    headers = dashscope_headers(submit.headers) | {
        "content-type": submit.headers["content-type"].split(";")[0]
    }
    return headers, polls


@pytest.mark.parametrize(
    ("model", "sdk"),
    [
        ("paraformer-v2", sdk_transcription),
        ("fun-asr", sdk_transcription),
        ("qwen-audio-3.1-asr-flash-filetrans", sdk_transcription),
        ("qwen3-asr-flash-filetrans", sdk_qwen_transcription),
    ],
)
async def test_file_transcription(
    sim: Simulator, files: FileServer, workspace: str, model: str, sdk: Any
) -> None:
    audio = pcm(1.0, freq=700.0)
    text = "录音文件识别。"
    sim.register_transcript(audio, text)
    url = files.add("turn.pcm", audio)

    assert await asyncio.to_thread(sdk, model, url, workspace) == text
    (theirs,) = sim.log.file_asr_tasks
    their_submit, their_polls = _requests(sim, 0)

    start = len(sim.log.connections)
    providers = ours(sim, model, workspace=workspace)
    try:
        assert await providers.recognizer.transcribe_url(url) == text
    finally:
        await providers.aclose()
    mine = sim.log.file_asr_tasks[1]
    my_submit, my_polls = _requests(sim, start)

    assert mine.body == theirs.body
    assert my_submit == their_submit
    assert set(map(json.dumps, my_polls)) == set(map(json.dumps, their_polls))
    assert their_submit.get("x-dashscope-workspace") == (workspace or None)
    key = "file_url" if model == "qwen3-asr-flash-filetrans" else "file_urls"
    assert set(theirs.body["input"]) == {key}


def test_normalised_keeps_what_matters() -> None:
    frame = json.dumps(
        {
            "header": {"action": "run-task", "task_id": "abc", "streaming": "duplex"},
            "payload": {"parameters": {"format": "pcm", "source_language": None}},
        }
    )
    (out,) = normalised([frame])
    assert out["header"] == {"action": "run-task", "task_id": "<task>", "streaming": "duplex"}
    assert out["payload"]["parameters"] == {"format": "pcm"}
    assert normalised([b"\x00\x01"]) == [b"\x00\x01"]


# ------------------------------------------------------------------------------------------ the 2.x client API
# The SDK's newer entry point (``dashscope.Client``, marked preview): its defaults are the qwen-audio models,
# streaming on the task socket and file transcription with ``file_urls``.


def v2_client(sim: Simulator, workspace: str) -> Any:
    return dashscope.Client(
        api_key=KEY,
        base_url=sim.env["DASHSCOPE_HTTP_BASE_URL"],
        workspace=workspace or None,
        max_retries=0,
    )


def v2_stream(sim: Simulator, model: str, audio: bytes, frame: int, workspace: str) -> list[str]:
    client = v2_client(sim, workspace)
    try:
        recognition = client.audio.asr.recognize(
            model=model,
            format="pcm",
            sample_rate=16000,
            ws_url=sim.env["DASHSCOPE_WEBSOCKET_BASE_URL"],
        )
        recognition.start()
        try:
            for piece in chunks(audio, frame):
                recognition.send_audio_frame(piece)
            recognition.stop()
            return [r.get_sentence()["text"] for r in recognition.results() if r.is_sentence_end()]
        finally:
            recognition.close()
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore:dashscope 2.0 audio API is a preview:FutureWarning")
async def test_v2_client_recognition_of_qwen_audio_streaming(
    sim: Simulator, capture: Capture, workspace: str
) -> None:
    model = "qwen-audio-3.1-asr-flash-streaming"
    audio = pcm(1.2, freq=820.0)
    text = "千问音频流式识别。"
    sim.register_transcript(audio, text)
    theirs, mine = await compare_streams(
        capture,
        lambda: v2_stream(sim, model, audio, 3200, workspace),
        our_stream(sim, model, audio, 16000, 3200, workspace),
        text,
    )
    assert mine == theirs


def v2_transcribe(sim: Simulator, model: str, url: str, workspace: str) -> str:
    client = v2_client(sim, workspace)
    try:
        job = client.audio.asr.transcribe([url], model=model, poll_interval=0.1, timeout=30)
        assert job.status == "SUCCEEDED", job
        assert job.output is not None
        (result,) = job.output["results"]
        return _result_text(result["transcription_url"])
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore:dashscope 2.0 audio API is a preview:FutureWarning")
async def test_v2_client_transcription_of_qwen_audio_filetrans(
    sim: Simulator, files: FileServer, workspace: str
) -> None:
    model = "qwen-audio-3.1-asr-flash-filetrans"  # the 2.x client's default file model
    audio = pcm(1.0, freq=910.0)
    text = "千问音频文件转写。"
    sim.register_transcript(audio, text)
    url = files.add("v2.pcm", audio)

    assert await asyncio.to_thread(v2_transcribe, sim, model, url, workspace) == text
    their_submit, _ = _requests(sim, 0)
    start = len(sim.log.connections)
    providers = ours(sim, model, workspace=workspace)
    try:
        assert await providers.recognizer.transcribe_url(url) == text
    finally:
        await providers.aclose()
    theirs, mine = sim.log.file_asr_tasks
    assert theirs.body["input"] == {"file_urls": [url]}
    assert mine.body == theirs.body
    assert _requests(sim, start)[0] == their_submit
