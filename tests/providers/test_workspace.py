"""``DASHSCOPE_WORKSPACE``: every HTTP request and WebSocket handshake the DashScope engines make carries
``X-DashScope-WorkSpace`` (as the official SDK sends it), and none does when no workspace is set. Checked at the
simulator, on what it received."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qwen_gateway.providers.dashscope import Providers, build_providers
from qwen_gateway.simulator import Simulator

from .conftest import FAST, FileServer, make_settings

AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 32
PCM = bytes(range(256)) * 50
HEADER = "x-dashscope-workspace"


@pytest.fixture(params=["ws-42", ""], ids=["workspace", "no-workspace"])
def workspace(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


async def _build(sim: Simulator, workspace: str, **settings: Any) -> Providers:
    return build_providers(make_settings(sim, workspace=workspace, **settings), tuning=FAST)


def _seen(sim: Simulator, kinds: set[str]) -> list[str | None]:
    """The workspace header of every connection of ``kinds`` the simulator received."""
    found = [c.headers.get(HEADER) for c in sim.log.connections if c.kind in kinds]
    assert found, f"no {kinds} connection"
    return found


async def test_task_socket_recognition(sim: Simulator, workspace: str) -> None:
    providers = await _build(sim, workspace, asr_model="paraformer-realtime-v2")
    try:
        async with providers.recognizer.session(format="pcm", sample_rate=16000) as session:
            await session.feed(PCM)
            await session.finish()
            async for _ in session.results():
                pass
    finally:
        await providers.aclose()
    assert _seen(sim, {"inference"}) == [workspace or None]


@pytest.mark.parametrize("model", ["paraformer-v2", "qwen3-asr-flash-filetrans"])
async def test_file_recognition_submit_and_polls_but_not_the_signed_result(
    sim: Simulator, file_server: FileServer, workspace: str, model: str
) -> None:
    providers = await _build(sim, workspace, asr_model=model)
    file_server.files["a.mp3"] = AUDIO
    try:
        await providers.recognizer.transcribe_url(file_server.url("a.mp3"))
    finally:
        await providers.aclose()
    seen = _seen(sim, {"file_asr", "tasks"})
    assert len(seen) >= 2 and set(seen) == {workspace or None}
    # The transcription_url is a pre-signed object URL, not a DashScope API call.
    assert _seen(sim, {"result"}) == [None]


@pytest.mark.parametrize("model", ["qwen-tts-realtime", "cosyvoice-v2"])
async def test_synthesis(sim: Simulator, workspace: str, model: str) -> None:
    providers = await _build(sim, workspace, tts_model=model)
    try:
        async with providers.synthesizer.session() as session:

            async def read() -> None:
                async for _ in session.audio():
                    pass

            async with asyncio.TaskGroup() as tg:
                tg.create_task(read())
                await session.send_text("你好。")
                await session.finish()
    finally:
        await providers.aclose()
    assert _seen(sim, {"tts", "inference"}) == [workspace or None]


async def test_chat(sim: Simulator, workspace: str) -> None:
    providers = await _build(sim, workspace)
    body = {"messages": [{"role": "user", "content": "你好"}]}
    try:
        await providers.chat.complete(body)
        async for _ in providers.vlm.stream(body):
            pass
    finally:
        await providers.aclose()
    assert _seen(sim, {"chat"}) == [workspace or None] * 2
