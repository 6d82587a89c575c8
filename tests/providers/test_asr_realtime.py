"""RealtimeRecognizer against the simulator's task WebSocket: streaming while audio arrives, every fault,
retries only before the task started, cancellation closing the upstream socket."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import lameenc  # type: ignore[import-not-found]
import pytest

from qwen_gateway.errors import UpstreamError, UpstreamTimeout
from qwen_gateway.providers.base import RecognitionResult
from qwen_gateway.providers.dashscope import (
    RealtimeRecognitionSession,
    RealtimeRecognizer,
    build_providers,
)
from qwen_gateway.simulator import Fault, Simulator, SimulatorConfig

from .conftest import FAST, KEY, FileServer, cancel_after, client_tasks, make_settings

#: 3.2 s of 16 kHz 16-bit mono PCM (content only matters as a key of the transcript registry).
AUDIO = bytes(range(256)) * 400
TEXT = "今天天气怎么样？我想出去走走。"
PACKET = 3200  # 100 ms


def packets(audio: bytes = AUDIO) -> list[bytes]:
    return [audio[i : i + PACKET] for i in range(0, len(audio), PACKET)]


def wav(pcm: bytes, rate: int = 16000) -> bytes:
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


async def run_utterance(
    session: RealtimeRecognitionSession, audio: bytes
) -> list[RecognitionResult]:
    """Feed ``audio`` while reading results concurrently, then finish; every result in order."""
    results: list[RecognitionResult] = []

    async def read() -> None:
        async for result in session.results():
            results.append(result)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        for packet in packets(audio):
            await session.feed(packet)
        await session.finish()
    return results


def finals(results: list[RecognitionResult]) -> str:
    return "".join(r.text for r in results if r.is_final)


# --- happy paths -------------------------------------------------------------------------------------------
async def test_first_partial_arrives_before_the_last_packet_is_fed(
    sim: Simulator, providers: Any
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    recognizer = providers.recognizer
    assert isinstance(recognizer, RealtimeRecognizer) and recognizer.streaming
    parts = packets()
    async with recognizer.session(format="pcm", sample_rate=16000) as session:
        results = session.results()
        for packet in parts[: len(parts) // 2]:
            await session.feed(packet)
        async with asyncio.timeout(10):  # a guard against hanging, not a timing assertion
            first = await anext(results)
        fed_when_first_arrived = session.audio_bytes
        for packet in parts[len(parts) // 2 :]:
            await session.feed(packet)
        await session.finish()
        rest = [r async for r in results]

    assert not first.is_final and first.text and TEXT.startswith(first.text)
    assert fed_when_first_arrived < len(AUDIO)
    assert finals([first, *rest]) == TEXT
    record = sim.log.asr_sessions[-1]
    assert bytes(record.audio) == AUDIO and record.finished
    assert (record.model, record.params["format"], record.params["sample_rate"]) == (
        "paraformer-realtime-v2",
        "pcm",
        16000,
    )
    assert record.connection.headers["authorization"] == f"Bearer {KEY}"


async def test_final_sentences_carry_ids_and_times(sim: Simulator, providers: Any) -> None:
    sim.register_transcript(AUDIO, TEXT)
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        results = await run_utterance(session, AUDIO)
    done = [r for r in results if r.is_final]
    assert [r.text for r in done] == ["今天天气怎么样？", "我想出去走走。"]
    assert [r.sentence_id for r in done] == [1, 2]
    assert all(r.end_ms is not None and r.begin_ms is not None for r in done)
    await sim.wait_closed("inference")
    assert sim.log.asr_sessions[-1].connection.close_reason == "client"
    assert client_tasks() == []


@pytest.mark.parametrize("model", ["fun-asr-realtime", "gummy-realtime-v1"])
async def test_other_realtime_models(sim: Simulator, model: str) -> None:
    sim.register_transcript(AUDIO, TEXT)
    providers = build_providers(make_settings(sim, asr_model=model), tuning=FAST)
    try:
        async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
            results = await run_utterance(session, AUDIO)
    finally:
        await providers.aclose()
    assert finals(results) == TEXT
    assert sim.log.asr_sessions[-1].model == model


@pytest.mark.parametrize("sim_config", [SimulatorConfig(api_key=KEY, asr_partial_end_time=True)])
async def test_partials_with_a_numeric_end_time_stay_partial(
    sim: Simulator, providers: Any
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        results = await run_utterance(session, AUDIO)
    assert any(not r.is_final and r.end_ms is not None for r in results)
    assert finals(results) == TEXT


async def test_the_pipeline_format_reaches_the_upstream(sim: Simulator, providers: Any) -> None:
    audio = wav(AUDIO)
    sim.register_transcript(audio, TEXT)
    async with providers.recognizer.session(format="wav", sample_rate=16000) as session:
        results = await run_utterance(session, audio)
    assert finals(results) == TEXT
    assert sim.log.asr_sessions[-1].params["format"] == "wav"


async def test_transcribe_url_streams_a_downloaded_file(
    sim: Simulator, providers: Any, file_server: FileServer
) -> None:
    audio = wav(AUDIO)
    sim.register_transcript(audio, TEXT)
    file_server.files["q.wav"] = audio
    text = await providers.recognizer.transcribe_url(file_server.url("q.wav"))
    assert text == TEXT
    assert sim.log.asr_sessions[-1].params["format"] == "wav"
    missing = file_server.url("missing.wav")
    with pytest.raises(UpstreamError) as info:
        await providers.recognizer.transcribe_url(missing)
    assert info.value.status == 404


def mp3(rate: int) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(32)
    encoder.set_in_sample_rate(rate)
    encoder.set_out_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(7)
    return bytes(encoder.encode(AUDIO) + encoder.flush())


def ogg_opus(input_rate: int) -> bytes:
    """An Ogg stream's first page holding an ``OpusHead`` (the rest is filler: only the head is sniffed)."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, input_rate, 0, 0)
    page = struct.pack("<4sBBqIIIB", b"OggS", 0, 2, 0, 1, 0, 0, 1) + bytes([len(head)]) + head
    return page + AUDIO


@pytest.mark.parametrize(
    ("audio", "fmt", "rate"),
    [
        (wav(AUDIO, 8000), "wav", 8000),
        (mp3(24000), "mp3", 24000),
        (b"ID3\x04\0\0\0\0\0\0" + b"\0" * 20 + mp3(16000), "mp3", 16000),
        (ogg_opus(16000), "opus", 16000),
    ],
    ids=["wav-8k", "mp3-24k", "id3-mp3", "ogg-opus"],
)
async def test_transcribe_url_tells_the_upstream_the_file_format_and_rate(
    sim: Simulator, providers: Any, file_server: FileServer, audio: bytes, fmt: str, rate: int
) -> None:
    sim.register_transcript(audio, TEXT)
    file_server.files["a"] = audio
    assert await providers.recognizer.transcribe_url(file_server.url("a")) == TEXT
    params = sim.log.asr_sessions[-1].params
    assert (params["format"], params["sample_rate"]) == (fmt, rate)


@pytest.mark.parametrize(
    ("audio", "named"),
    [(AUDIO, "unrecognised audio format"), (b"\x1a\x45\xdf\xa3" + AUDIO, "WebM")],
    ids=["raw-pcm", "webm"],
)
async def test_transcribe_url_refuses_a_file_that_is_not_accepted_audio(
    sim: Simulator, providers: Any, file_server: FileServer, audio: bytes, named: str
) -> None:
    file_server.files["a"] = audio
    with pytest.raises(UpstreamError) as info:
        await providers.recognizer.transcribe_url(file_server.url("a"))
    assert (info.value.code, info.value.status) == ("unsupported_audio_format", 415)
    assert named in info.value.message
    assert sim.log.asr_sessions == [] and sim.log.connections == []


# --- faults ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sim_config", "status", "code"),
    [
        (SimulatorConfig(api_key=KEY, ws_reject_status=401), 401, "invalid_api_key"),
        (SimulatorConfig(api_key=KEY, ws_reject_status=403), 403, "invalid_api_key"),
    ],
)
async def test_a_bad_key_is_refused_at_the_handshake(
    sim: Simulator, providers: Any, status: int, code: str
) -> None:
    with pytest.raises(UpstreamError) as info:
        async with providers.recognizer.session(
            format="pcm", sample_rate=16000, api_key="sk-wrong"
        ):
            pass
    assert (info.value.status, info.value.code, info.value.transient) == (status, code, False)
    assert len(sim.log.connections) == 1  # not retried


async def test_throttled_handshakes_are_retried(sim: Simulator, providers: Any) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(Fault.http_error(429, code="limit_requests", endpoint="inference", times=2))
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        results = await run_utterance(session, AUDIO)
    assert finals(results) == TEXT
    assert [c.close_reason for c in sim.log.connections] == ["rejected", "rejected", "client"]


async def test_a_failing_handshake_surfaces_after_the_retries(
    sim: Simulator, providers: Any
) -> None:
    sim.faults.add(Fault.http_error(503, endpoint="inference", times=None))
    with pytest.raises(UpstreamError) as info:
        async with providers.recognizer.session(format="pcm", sample_rate=16000):
            pass
    assert (info.value.status, info.value.transient) == (503, True)
    assert len(sim.log.connections) == 3


async def test_a_throttled_run_task_is_retried(sim: Simulator, providers: Any) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(Fault.http_error(429, code="Throttling.RateQuota", endpoint="asr"))
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        results = await run_utterance(session, AUDIO)
    assert finals(results) == TEXT
    assert len(sim.log.connections) == 2


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (
            Fault.http_error(400, code="InvalidParameter", endpoint="asr"),
            400,
            "invalid_parameter_error",
        ),
        (
            Fault.task_failed("asr", before_start=True, code="DataInspectionFailed", message="bad"),
            400,
            "data_inspection_failed",
        ),
        (Fault.http_error(403, code="AccessDenied", endpoint="inference"), 403, "access_denied"),
    ],
)
async def test_permanent_start_failures_are_not_retried(
    sim: Simulator, providers: Any, fault: Fault, status: int, code: str
) -> None:
    sim.faults.add(fault)
    with pytest.raises(UpstreamError) as info:
        async with providers.recognizer.session(format="pcm", sample_rate=16000):
            pass
    assert (info.value.status, info.value.code) == (status, code)
    assert len(sim.log.connections) == 1
    await sim.wait_closed("inference")
    assert client_tasks() == []


@pytest.mark.parametrize(
    "model",
    [
        "whisper-realtime",  # unknown upstream
        "paraformer-v2",  # a file model
        "qwen3-asr-flash-realtime",  # a realtime-protocol model
    ],
)
async def test_a_model_the_task_socket_does_not_serve_is_model_not_found(
    sim: Simulator, model: str
) -> None:
    # QG_ASR_PROTOCOL sends any name down the task socket; the simulator refuses what DashScope would.
    settings = make_settings(sim, asr_model=model, asr_protocol="task")
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamError) as info:
            async with providers.recognizer.session(format="pcm", sample_rate=16000):
                pass
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    (conn,) = sim.log.connections
    assert conn.close_reason == "failed"


async def test_task_failed_mid_utterance_surfaces_in_results_and_feed(
    sim: Simulator, providers: Any
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(Fault.task_failed("asr", after=2, code="InternalError", message="boom"))
    got: list[RecognitionResult] = []
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:

                async def read() -> None:
                    async for result in session.results():
                        got.append(result)

                tg.create_task(read())
                for packet in packets():
                    await session.feed(packet)
                await session.finish()
        error = info.value.exceptions[0]
        assert isinstance(error, UpstreamError)
        assert (error.status, error.code, error.message) == (500, "internal_error", "boom")
        # two partials were sent before the failure; an unread partial is superseded by the next one
        sent = sim.log.asr_sessions[-1].results
        assert len(sent) == 2 and 1 <= len(got) <= 2
        assert got[-1].text == sent[-1]["output"]["sentence"]["text"]
        with pytest.raises(UpstreamError) as again:
            await session.feed(b"\0" * 10)
        # The recorded failure again (a copy: the session keeps it without a traceback, see errors.detached).
        repeated = again.value
        assert (repeated.status, repeated.code, repeated.message) == (500, "internal_error", "boom")
        assert repeated.request_id == error.request_id


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.drop(2, endpoint="asr"), "upstream_closed"),
        (Fault.malformed("asr", after=1), "upstream_bad_response"),
    ],
)
async def test_broken_streams_surface_typed(
    sim: Simulator, providers: Any, fault: Fault, code: str
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(fault)
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        with pytest.raises(ExceptionGroup) as info:
            await run_utterance(session, AUDIO)
    errors = [e for e in info.value.exceptions if isinstance(e, UpstreamError)]
    assert errors and {e.code for e in errors} == {code}


async def test_server_idle_rule_fails_the_task(sim: Simulator, providers: Any) -> None:
    sim.faults.add(Fault.idle_timeout(0.2, endpoint="asr"))
    async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
        with pytest.raises(UpstreamError) as info:
            async for _ in session.results():
                pass
    assert info.value.code == "CLIENT_ERROR"
    assert "request timeout" in info.value.message


async def test_upstream_silence_is_an_idle_timeout(sim: Simulator) -> None:
    sim.register_transcript(AUDIO, TEXT)
    sim.faults.add(Fault.stall(1, None, endpoint="asr"))
    providers = build_providers(make_settings(sim, read_timeout=0.3), tuning=FAST)
    try:
        async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
            with pytest.raises(ExceptionGroup) as info:
                await run_utterance(session, AUDIO)
        assert any(isinstance(e, UpstreamTimeout) for e in info.value.exceptions)
        await sim.wait_closed("inference")
        assert client_tasks() == []
    finally:
        await providers.aclose()


# --- cancellation ------------------------------------------------------------------------------------------
async def test_cancelling_a_session_mid_utterance_closes_the_upstream(
    sim: Simulator, providers: Any
) -> None:
    sim.register_transcript(AUDIO, TEXT)
    got_partial = asyncio.Event()

    async def utterance() -> None:
        async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
            results = session.results()
            for packet in packets()[:12]:
                await session.feed(packet)
            await anext(results)
            got_partial.set()
            await asyncio.Event().wait()  # the client's upload stalls here

    await cancel_after(got_partial, utterance)
    await sim.wait_closed("inference", timeout=5)
    record = sim.log.asr_sessions[-1]
    assert record.connection.close_reason == "client"
    assert record.aborted and not record.finished
    assert client_tasks() == []


async def test_a_task_that_does_not_start_in_time_is_a_timeout(sim: Simulator) -> None:
    sim.faults.add(Fault.delay(5.0, endpoint="asr"))
    settings = make_settings(sim, connect_timeout=0.2, upstream_retries=0)
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises(UpstreamError) as info:
            async with providers.recognizer.session(format="pcm", sample_rate=16000):
                pass
    finally:
        await providers.aclose()
    assert (info.value.status, info.value.code, info.value.transient) == (
        504,
        "upstream_timeout",
        True,
    )
    await sim.wait_closed("inference")
    assert client_tasks() == []
