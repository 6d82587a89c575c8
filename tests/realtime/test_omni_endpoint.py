"""The Omni backend through ``/v1/realtime?model=qwen3-omni-flash-realtime``, driven by the official openai SDK
against the gateway and the simulator's Omni socket: a spoken turn found by Omni's own VAD with audio in G.711,
the history row and the usage it leaves, and the connection's end closing the upstream socket."""

from __future__ import annotations

from pathlib import Path

from qwen_gateway.realtime.server import backend_for
from qwen_gateway.voice.convert import G711Decoder, wire_format
from tests.realtime.harness import realtime, silence, speech
from tests.voice_ws.conftest import GATEWAY_KEY, gateway

MODEL = "qwen3-omni-flash-realtime"
ANSWER = "今天是晴天，气温二十度。适合出门散步！"


def test_omni_models_pick_the_omni_backend() -> None:
    assert backend_for(MODEL) == "omni"
    assert backend_for("qwen-omni-turbo-realtime-2025-05-08") == "omni"
    assert backend_for("qwen-plus") == backend_for("qwen3-omni-flash") == "cascade"


async def test_a_spoken_omni_turn_through_the_endpoint(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        gw.sim.set_reply(ANSWER)
        async with realtime(gw, MODEL, extra_query={"conversation_id": "conv-omni"}) as s:
            created = s.events[0]["session"]
            assert created["model"] == MODEL and created["audio"]["output"]["voice"] == "Cherry"
            await s.conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Answer briefly.",
                    "tools": [{"type": "function", "name": "clock", "parameters": {}}],
                    "audio": {
                        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                        "output": {"format": {"type": "audio/pcmu"}},
                    },
                }
            )
            updated = (await s.until("session.updated"))[-1]["session"]
            assert updated["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            await s.send_audio(silence(0.5) + speech() + silence(1.2))
            events = await s.until("response.done")
        types = s.types(events)
        for kind in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
            "response.output_audio.delta",
            "response.output_audio_transcript.done",
        ):
            assert kind in types, kind
        transcript = "".join(d["delta"] for d in s.of("response.output_audio_transcript.delta"))
        assert transcript == ANSWER
        ulaw = s.audio(events)  # G.711 mu-law, 8 kHz: one byte a sample
        assert len(ulaw) / 8000 > 1.0
        assert any(G711Decoder(wire_format("audio/pcmu")).decode(ulaw))
        (done,) = s.of("response.done", events)
        assert done["response"]["status"] == "completed"
        # what reached DashScope: one Omni session with its own session fields, closed with the connection
        (record,) = gw.sim.log.omni_sessions
        assert record.session["instructions"] == "Answer briefly."
        assert record.session["input_audio_format"] == "pcm16"
        # the endpoint's decoder leaves defaults out (format type, tool type): put back for DashScope
        assert record.session["tools"] == [{"type": "function", "name": "clock", "parameters": {}}]
        await gw.sim.wait_closed("omni")
        # the history row and the usage, as for the cascade
        await gw.services.storage.outbox.drained()
        owner = gw.services.keys.owner(GATEWAY_KEY)
        (row,) = await gw.services.storage.history.conversation("conv-omni", owner=owner)
        assert row.channel == "realtime" and row.model == MODEL
        assert row.assistant_content == ANSWER and row.user_content
        assert (
            row.status == "completed"
            and row.total_tokens == done["response"]["usage"]["total_tokens"]
        )
