"""No key ever reaches the logs of the clients or of the libraries they drive, even at DEBUG."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.dashscope import Providers
from qwen_gateway.simulator import Fault, Simulator

from .conftest import KEY

OTHER = "sk-override-secret-0123456789"
CLIENT_LOGGERS = ("qwen_gateway.providers", "websockets", "httpx", "httpcore")


async def test_keys_never_reach_the_logs(
    sim: Simulator, providers: Providers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.set_reply("好的。")
    sim.faults.add(Fault.http_error(429, code="limit_requests", endpoint="chat"))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    assert [d async for d in providers.chat.stream(body)]
    with pytest.raises(UpstreamError):
        await providers.chat.complete(body, api_key=OTHER)
    async with providers.synthesizer.session() as session:
        await session.send_text("你好。")
        await session.finish()
        assert [c async for c in session.audio()]
    with pytest.raises(UpstreamError):
        async with providers.recognizer.session(format="pcm", sample_rate=16000, api_key=OTHER):
            pass

    records = [r for r in caplog.records if r.name.startswith(CLIENT_LOGGERS)]
    assert any(r.name.startswith("websockets") or "wire" in r.name for r in records)
    text = "\n".join(r.getMessage() for r in records)
    assert "Bearer ***" in text  # the handshake headers were logged, masked
    assert KEY not in text and OTHER not in text
    assert KEY[3:] not in text and OTHER[3:] not in text
