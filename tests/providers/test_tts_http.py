"""HTTP streaming synthesis (qwen3-tts-flash, qwen-tts) against the simulator: one POST per segment, in order,
base64 PCM from the SSE stream; retries only before a segment's first audio; typed failures; cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.dashscope import HttpSynthesizer, Providers, build_providers
from qwen_gateway.simulator import Fault, Simulator

from .conftest import FAST, KEY, cancel_after, client_tasks, make_settings
from .test_tts import SEGMENTS, speak


@pytest.fixture(params=["qwen3-tts-flash", "qwen-tts"])
async def http_tts(request: pytest.FixtureRequest, sim: Simulator) -> AsyncIterator[Providers]:
    providers = build_providers(make_settings(sim, tts_model=request.param), tuning=FAST)
    try:
        yield providers
    finally:
        await providers.aclose()


def unwrap(error: BaseException) -> UpstreamError:
    """The UpstreamError itself, or the one inside the group ``speak``'s TaskGroup raised."""
    if isinstance(error, BaseExceptionGroup):
        error = next(e for e in error.exceptions if isinstance(e, UpstreamError))
    assert isinstance(error, UpstreamError)
    return error


def audio_sent(sim: Simulator) -> int:
    return sum(r.audio_bytes for r in sim.log.http_tts_requests if r.status == 200)


async def test_segments_are_spoken_in_order_one_request_each(
    sim: Simulator, http_tts: Providers
) -> None:
    synth = http_tts.synthesizer
    assert isinstance(synth, HttpSynthesizer) and synth.sample_rate == 24000
    async with synth.session() as session:
        chunks = await speak(session, ["  ", *SEGMENTS])
    assert chunks and all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert sum(len(c.pcm) for c in chunks) == audio_sent(sim)
    records = sim.log.http_tts_requests
    assert [r.text for r in records] == SEGMENTS  # whitespace is not sent
    for record in records:
        assert record.stream and record.completed and record.status == 200
        assert record.headers["authorization"] == f"Bearer {KEY}"
        assert record.headers["x-dashscope-sse"] == "enable"
        assert record.body["model"] == synth.model
        assert record.body["input"]["voice"] == "Cherry"  # the catalogue's default
    assert client_tasks() == []


async def test_the_workspace_is_sent_when_set(sim: Simulator) -> None:
    settings = make_settings(sim, tts_model="qwen3-tts-flash", workspace="ws-123")
    providers = build_providers(settings, tuning=FAST)
    try:
        async with providers.synthesizer.session(voice="Ethan") as session:
            await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    record = sim.log.http_tts_requests[-1]
    assert record.headers["x-dashscope-workspace"] == "ws-123"
    assert record.body["input"]["voice"] == "Ethan"


async def test_a_throttled_segment_is_retried(sim: Simulator, http_tts: Providers) -> None:
    sim.faults.add(Fault.http_error(429, code="limit_requests", endpoint="http_tts", times=2))
    async with http_tts.synthesizer.session() as session:
        chunks = await speak(session, SEGMENTS[:2])
    assert [r.status for r in sim.log.http_tts_requests] == [429, 429, 200, 200]
    assert sum(len(c.pcm) for c in chunks) == audio_sent(sim)


async def test_a_bad_key_is_refused_without_retry(sim: Simulator, http_tts: Providers) -> None:
    with pytest.raises((UpstreamError, ExceptionGroup)) as info:
        async with http_tts.synthesizer.session(api_key="sk-wrong") as session:
            await speak(session, SEGMENTS[:1])
    error = unwrap(info.value)
    assert (error.status, error.code) == (401, "invalid_api_key")
    assert len(sim.log.http_tts_requests) == 1


async def test_a_stream_dropped_before_its_audio_is_retried(
    sim: Simulator, http_tts: Providers
) -> None:
    sim.faults.add(Fault.drop(0, endpoint="http_tts"))
    async with http_tts.synthesizer.session() as session:
        chunks = await speak(session, SEGMENTS[:1])
    assert [r.connection.close_reason for r in sim.log.http_tts_requests] == [
        "dropped",
        "complete",
    ]
    assert sum(len(c.pcm) for c in chunks) == sim.log.http_tts_requests[-1].audio_bytes


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        (Fault.drop(2, endpoint="http_tts"), "upstream_closed", 502),
        (Fault.malformed("http_tts", after=1), "upstream_bad_response", 502),
        (
            Fault.stream_error(1, "InternalError", "Internal error.", endpoint="http_tts"),
            "internal_error",
            500,
        ),
    ],
)
async def test_a_failure_after_audio_is_typed_and_not_retried(
    sim: Simulator, http_tts: Providers, fault: Fault, code: str, status: int
) -> None:
    sim.faults.add(fault)
    heard: list[bytes] = []
    with pytest.raises(UpstreamError) as info:
        async with http_tts.synthesizer.session() as session:
            await session.send_text(SEGMENTS[0])
            await session.send_text(SEGMENTS[1])
            await session.finish()
            async for chunk in session.audio():
                heard.append(chunk.pcm)
    assert (info.value.code, info.value.status) == (code, status)
    assert heard  # the audio before the failure was handed on, once
    assert len(sim.log.http_tts_requests) == 1
    with pytest.raises(UpstreamError):
        await session.send_text(SEGMENTS[2])  # the session stays failed
    assert client_tasks() == []


async def test_a_model_the_http_endpoint_does_not_serve_is_model_not_found(sim: Simulator) -> None:
    settings = make_settings(sim, tts_model="cosyvoice-v2", tts_protocol="http")
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises((UpstreamError, ExceptionGroup)) as info:
            async with providers.synthesizer.session() as session:
                await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    error = unwrap(info.value)
    assert (error.status, error.code) == (404, "model_not_found")
    assert len(sim.log.http_tts_requests) == 1


async def test_cancelling_mid_answer_drops_the_request(sim: Simulator, http_tts: Providers) -> None:
    sim.faults.add(Fault.stall(2, None, endpoint="http_tts"))
    started = asyncio.Event()

    async def body() -> None:
        async with http_tts.synthesizer.session() as session:
            await session.send_text(SEGMENTS[0])
            async for _ in session.audio():
                started.set()

    await cancel_after(started, body)
    await sim.log.wait_for(lambda: sim.log.http_tts_requests[-1].closed, timeout=5)
    assert sim.log.http_tts_requests[-1].connection.close_reason == "client"
    assert client_tasks() == []


async def test_the_request_body_is_the_sdks(sim: Simulator) -> None:
    providers = build_providers(make_settings(sim, tts_model="qwen3-tts-flash"), tuning=FAST)
    try:
        async with providers.synthesizer.session() as session:
            await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    record = sim.log.http_tts_requests[-1]
    assert msgspec.json.decode(record.raw) == {
        "model": "qwen3-tts-flash",
        "parameters": {},
        "input": {"text": SEGMENTS[0], "voice": "Cherry"},
    }


def test_keyless_mode_sends_http_synthesis_to_the_simulator(sim: Simulator) -> None:
    from qwen_gateway.config import Settings
    from qwen_gateway.services import simulated_settings

    settings = Settings(tts_model="qwen3-tts-flash", tts_http_url="https://real.example/tts")
    pointed = simulated_settings(settings, sim.env, KEY)
    assert pointed.tts_http_endpoint == (
        sim.env["DASHSCOPE_HTTP_BASE_URL"] + "/services/aigc/multimodal-generation/generation"
    )


async def test_an_answer_that_is_not_a_stream_is_a_bad_response(sim: Simulator) -> None:
    # an endpoint answering 200 with JSON where the SSE stream was asked for
    settings = make_settings(
        sim, tts_model="qwen3-tts-flash", tts_http_url=sim.base_url + "/health"
    )
    providers = build_providers(settings, tuning=FAST)
    try:
        with pytest.raises((UpstreamError, ExceptionGroup)) as info:
            async with providers.synthesizer.session() as session:
                await speak(session, SEGMENTS[:1])
    finally:
        await providers.aclose()
    error = unwrap(info.value)
    assert (error.status, error.code) == (502, "upstream_bad_response")
    assert "application/json" in error.message
