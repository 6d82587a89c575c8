"""A voice connection while the server drains (in-process; the subprocess test is tests/gateway/test_drain.py):
a new utterance is not started, and the connection is told ``shutting_down`` and closed with 1001."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from qwen_gateway.lifecycle import Lifecycle
from qwen_gateway.simulator import SimulatorConfig

from .conftest import UPSTREAM_KEY, client, gateway, packets, wav_bytes


async def test_a_new_utterance_during_the_drain_is_not_started(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=60, tts_realtime_factor=2)
    async with gateway(tmp_path, config) as gw:
        life: Lifecycle = gw.app.config["QG_LIFECYCLE"]
        life.drain_seconds = 3600  # the running turn could go on; the new one must not start
        first, second = wav_bytes(1.0, seed=1), wav_bytes(1.0, seed=2)
        gw.sim.register_transcript(first, "第一个问题")
        gw.sim.register_transcript(second, "第二个问题")
        gw.sim.set_reply("这是一个很长的回答。" * 10)
        async with client(gw) as c:
            await c.recv()
            await c.send_all(packets(first))
            await c.until("audio_stream:data")
            life.begin_drain()
            await c.send_all(packets(second))  # a barge-in: would start turn 2
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await c.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        errors = c.bodies("error")
        assert [e["code"] for e in errors][-1:] == ["shutting_down"]
        started = c.bodies("chat_started")
        assert [s["user_message"] for s in started] == ["第一个问题"]
        assert (
            "audio_stream:finished" in c.names()
        )  # the first answer's audio was ended for the player
        assert c.names().count("transcription_started") <= 1
