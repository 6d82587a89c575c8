"""FileRecognizer (the seed's path) against the simulator: submit a URL, poll with backoff, fetch the result;
every fault family, retries where allowed, the overall task deadline."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from qwen_gateway.errors import UpstreamError, UpstreamTimeout
from qwen_gateway.providers.dashscope import FileRecognizer, Providers, build_providers
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import FAST, KEY, FileServer, cancel_after, client_tasks, make_settings

AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 64
TEXT = "帮我查一下明天北京的天气。"


@pytest.fixture(params=["paraformer-v2", "paraformer-v1", "fun-asr"])
async def files(request: pytest.FixtureRequest, sim: Simulator) -> Any:
    providers = build_providers(make_settings(sim, asr_model=request.param), tuning=FAST)
    try:
        yield providers
    finally:
        await providers.aclose()


@pytest.fixture
async def file_asr(sim: Simulator) -> Any:
    providers = build_providers(make_settings(sim, asr_model="paraformer-v2"), tuning=FAST)
    try:
        yield providers
    finally:
        await providers.aclose()


async def test_a_file_model_submits_polls_and_fetches(
    sim: Simulator, files: Providers, file_server: FileServer
) -> None:
    recognizer = files.recognizer
    assert isinstance(recognizer, FileRecognizer) and not recognizer.streaming
    sim.register_transcript(AUDIO, TEXT)
    file_server.files["turn.mp3"] = AUDIO
    url = file_server.url("turn.mp3")

    assert await recognizer.transcribe_url(url) == TEXT

    task = sim.log.file_asr_tasks[-1]
    assert task.file_urls == [url] and task.status == "SUCCEEDED"
    assert task.body["model"] == recognizer.model and task.polls >= 2  # RUNNING, then SUCCEEDED
    assert task.downloads == [(url, len(AUDIO))]
    submit = next(c for c in sim.log.connections if c.kind == "file_asr")
    assert submit.headers["x-dashscope-async"] == "enable"
    assert submit.headers["authorization"] == f"Bearer {KEY}"
    result = next(c for c in sim.log.connections if c.kind == "result")
    assert "authorization" not in result.headers  # a signed URL gets no key


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, file_asr_pending_polls=3, file_asr_running_polls=4)]
)
async def test_polling_waits_through_pending_and_running(
    sim: Simulator, file_asr: Providers, file_server: FileServer
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    file_server.files["a.mp3"] = AUDIO
    assert await file_asr.recognizer.transcribe_url(file_server.url("a.mp3")) == TEXT
    assert sim.log.file_asr_tasks[-1].polls == 8


async def test_streaming_is_refused_for_a_file_model(file_asr: Providers) -> None:
    with pytest.raises(NotImplementedError):
        file_asr.recognizer.session(format="mp3", sample_rate=16000)


async def test_api_key_override(
    sim: Simulator, file_asr: Providers, file_server: FileServer
) -> None:
    file_server.files["a.mp3"] = AUDIO
    with pytest.raises(UpstreamError) as info:
        await file_asr.recognizer.transcribe_url(file_server.url("a.mp3"), api_key="sk-other")
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert len(sim.log.connections) == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (
            Fault.http_error(400, code="InvalidParameter", endpoint="file_asr"),
            400,
            "invalid_parameter_error",
        ),
        (Fault.http_error(403, code="AccessDenied", endpoint="file_asr"), 403, "access_denied"),
        (Fault.http_error(404, code="ModelNotFound", endpoint="file_asr"), 404, "model_not_found"),
        (
            Fault.http_error(400, code="DataInspectionFailed", endpoint="file_asr"),
            400,
            "data_inspection_failed",
        ),
        (
            Fault.task_failed("file_asr", code="InternalError", message="boom"),
            500,
            "internal_error",
        ),
    ],
)
async def test_permanent_failures_surface_typed(
    sim: Simulator,
    file_asr: Providers,
    file_server: FileServer,
    fault: Fault,
    status: int,
    code: str,
) -> None:
    sim.faults.add(fault)
    file_server.files["a.mp3"] = AUDIO
    with pytest.raises(UpstreamError) as info:
        await file_asr.recognizer.transcribe_url(file_server.url("a.mp3"))
    assert (info.value.status, info.value.code) == (status, code)
    assert len([c for c in sim.log.connections if c.kind == "file_asr"]) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.http_error(429, code="Throttling.RateQuota", endpoint="file_asr", times=2),
        Fault.http_error(503, endpoint="tasks", times=2),
        Fault.http_error(500, endpoint="result", times=2),
    ],
)
async def test_transient_failures_are_retried(
    sim: Simulator, file_asr: Providers, file_server: FileServer, fault: Fault
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(fault)
    file_server.files["a.mp3"] = AUDIO
    assert await file_asr.recognizer.transcribe_url(file_server.url("a.mp3")) == TEXT
    rejected = [c for c in sim.log.connections if c.close_reason == "rejected"]
    assert len(rejected) == 2 and {c.kind for c in rejected} == {fault.endpoint}


async def test_throttling_beyond_the_retries_surfaces(
    sim: Simulator, file_asr: Providers, file_server: FileServer
) -> None:
    sim.faults.add(
        Fault.http_error(429, code="Throttling.AllocationQuota", endpoint="file_asr", times=None)
    )
    file_server.files["a.mp3"] = AUDIO
    with pytest.raises(UpstreamError) as info:
        await file_asr.recognizer.transcribe_url(file_server.url("a.mp3"))
    assert (info.value.status, info.value.code, info.value.transient) == (
        429,
        "insufficient_quota",
        True,
    )
    assert len(sim.log.connections) == 3


async def test_an_unreachable_file_is_an_invalid_file(
    sim: Simulator, file_asr: Providers, file_server: FileServer
) -> None:
    with pytest.raises(UpstreamError) as info:
        await file_asr.recognizer.transcribe_url(file_server.url("missing.mp3"))
    assert (info.value.status, info.value.code) == (400, "invalid_file")
    assert "downloaded" in info.value.message


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, file_asr_running_polls=10_000)]
)
async def test_a_task_that_never_ends_hits_the_task_deadline(
    sim: Simulator, file_server: FileServer
) -> None:
    file_server.files["a.mp3"] = AUDIO
    tuning = replace(FAST, task_timeout=0.3)
    providers = build_providers(make_settings(sim, asr_model="paraformer-v2"), tuning=tuning)
    try:
        with pytest.raises(UpstreamTimeout):
            await providers.recognizer.transcribe_url(file_server.url("a.mp3"))
    finally:
        await providers.aclose()
    assert sim.log.file_asr_tasks[-1].status == "RUNNING"


@pytest.mark.parametrize(
    "sim_config", [SimulatorConfig(api_key=KEY, file_asr_running_polls=10_000)]
)
async def test_cancelling_while_polling_leaves_nothing_running(
    sim: Simulator, file_asr: Providers, file_server: FileServer
) -> None:
    file_server.files["a.mp3"] = AUDIO
    polled = asyncio.Event()

    async def recognise() -> None:
        await file_asr.recognizer.transcribe_url(file_server.url("a.mp3"))

    async def watch() -> None:
        await sim.log.wait_for(
            lambda: bool(sim.log.file_asr_tasks) and sim.log.file_asr_tasks[-1].polls >= 2
        )
        polled.set()

    watcher = asyncio.create_task(watch())
    await cancel_after(polled, recognise)
    await watcher
    polls = sim.log.file_asr_tasks[-1].polls
    await sim.wait_closed()
    assert client_tasks() == []
    assert sim.log.file_asr_tasks[-1].polls == polls  # polling stopped with the cancellation


# --- Qwen-ASR file transcription (input.file_url) ---------------------------------------------------------
@pytest.fixture
async def qwen_files(sim: Simulator) -> Any:
    settings = make_settings(sim, asr_model="qwen3-asr-flash-filetrans")
    providers = build_providers(settings, tuning=FAST)
    try:
        yield providers
    finally:
        await providers.aclose()


async def test_qwen_filetrans_sends_one_file_url_and_reads_the_single_result(
    sim: Simulator, qwen_files: Providers, file_server: FileServer
) -> None:
    recognizer = qwen_files.recognizer
    assert isinstance(recognizer, FileRecognizer) and recognizer.protocol == "file-url"
    sim.register_transcript(AUDIO, TEXT)
    file_server.files["q.mp3"] = AUDIO
    url = file_server.url("q.mp3")

    assert await recognizer.transcribe_url(url) == TEXT

    task = sim.log.file_asr_tasks[-1]
    assert task.body == {
        "model": "qwen3-asr-flash-filetrans",
        "input": {"file_url": url},
        "parameters": {},
    }
    assert task.status == "SUCCEEDED" and task.downloads == [(url, len(AUDIO))]


async def test_a_list_model_sends_file_urls(
    sim: Simulator, files: Providers, file_server: FileServer
) -> None:
    file_server.files["l.mp3"] = AUDIO
    url = file_server.url("l.mp3")
    await files.recognizer.transcribe_url(url)
    assert sim.log.file_asr_tasks[-1].body["input"] == {"file_urls": [url]}


async def test_qwen_filetrans_unreachable_file_fails_the_task_as_invalid_file(
    sim: Simulator, qwen_files: Providers, file_server: FileServer
) -> None:
    with pytest.raises(UpstreamError) as info:
        await qwen_files.recognizer.transcribe_url(file_server.url("missing.mp3"))
    assert (info.value.status, info.value.code) == (400, "invalid_file")
    assert sim.log.file_asr_tasks[-1].status == "FAILED"


@pytest.mark.parametrize(
    ("model", "protocol"),
    [
        ("qwen3-asr-flash-filetrans", "file-urls"),  # a file_url model sent file_urls
        ("paraformer-v2", "file-url"),  # a file_urls model sent file_url
    ],
)
async def test_the_wrong_input_style_for_the_model_is_refused(
    sim: Simulator, file_server: FileServer, model: str, protocol: str
) -> None:
    settings = make_settings(sim, asr_model=model, asr_protocol=protocol)
    providers = build_providers(settings, tuning=FAST)
    file_server.files["w.mp3"] = AUDIO
    try:
        with pytest.raises(UpstreamError) as info:
            await providers.recognizer.transcribe_url(file_server.url("w.mp3"))
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (400, "invalid_parameter_error")
    assert "input must contain file_url" in info.value.message


@pytest.mark.parametrize("model", ["paraformer-realtime-v2", "no-such-model"])
async def test_a_model_the_file_endpoint_does_not_serve_is_model_not_found(
    sim: Simulator, file_server: FileServer, model: str
) -> None:
    settings = make_settings(sim, asr_model=model, asr_protocol="file-urls")
    providers = build_providers(settings, tuning=FAST)
    file_server.files["m.mp3"] = AUDIO
    try:
        with pytest.raises(UpstreamError) as info:
            await providers.recognizer.transcribe_url(file_server.url("m.mp3"))
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert sim.log.file_asr_tasks == []


async def test_a_file_recognizer_takes_only_a_file_protocol(file_asr: Providers) -> None:
    from qwen_gateway.providers.dashscope.catalogue import AsrProtocol
    from qwen_gateway.providers.dashscope.policy import Backoff, Timeouts

    with pytest.raises(ValueError, match="not a file-recognition protocol"):
        FileRecognizer(
            file_asr.http,
            http_base="http://127.0.0.1:9/api/v1",
            model="paraformer-v2",
            api_key=KEY,
            timeouts=Timeouts(),
            backoff=Backoff(),
            protocol=AsrProtocol.TASK,
        )
