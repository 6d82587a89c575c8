"""The cascade through ``/v1/realtime``, driven by the official openai SDK: a spoken turn found by server VAD, a
manual commit, a typed question with a text-only answer."""

from __future__ import annotations

from pathlib import Path

from tests.realtime.harness import realtime, silence, speech
from tests.voice_ws.conftest import gateway


async def test_a_spoken_turn_found_by_server_vad(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, realtime(gw) as s:
        await s.send_audio(silence(0.5) + speech() + silence(1.2))
        events = await s.until("response.done")
        print(s.types(events))
        print([e for e in events if e["type"].startswith("conversation.item.input")])
