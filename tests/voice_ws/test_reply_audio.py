"""The spoken answer is kept: after a voice turn the MP3 sent in its ``audio_stream`` ``data`` events is one object
(kind ``tts``) whose key is the stored turn's ``reply_audio_key``. Off with ``store_reply_audio``; a failing object
store costs the key only; a cancelled turn keeps no answer audio."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from qwen_gateway.simulator import SimulatorConfig
from qwen_gateway.storage import ObjectStoreUnavailable, StoredObject

from .conftest import (
    UPSTREAM_KEY,
    Gateway,
    client,
    decoded_samples,
    gateway,
    packets,
    png_bytes,
    voice_tasks,
    wav_bytes,
)

QUESTION = "今天天气怎么样？"
ANSWER = "今天是晴天，气温二十五度。适合出门散步！记得带上水。"
LONG_ANSWER = "".join(f"这是第{i}句比较长的回答内容，用来测试打断。" for i in range(1, 40))

Fault = Literal["error", "stall"]


class ObjectStoreProbe:
    """The gateway's object store, recording every ``put``; ``fault`` hits the next ``fault_times`` puts of
    spoken answers (``tts/`` keys): ``error`` raises as OSS does on a 503, ``stall`` never answers."""

    def __init__(self, inner: Any, fault: Fault | None = None, fault_times: int = 1) -> None:
        self._inner = inner
        self.fault = fault
        self.fault_times = fault_times
        self.puts: list[tuple[str, str, int]] = []  # key, content type, size
        self.stalled = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        self.puts.append((key, content_type, len(data)))
        if self.fault is not None and self.fault_times > 0 and key.startswith("tts/"):
            self.fault_times -= 1
            if self.fault == "error":
                raise ObjectStoreUnavailable(
                    "service unavailable", code="ServiceUnavailable", status=503
                )
            self.stalled.set()
            await asyncio.Event().wait()
        return await self._inner.put(key, data, content_type)

    def reply_puts(self) -> list[tuple[str, str, int]]:
        return [p for p in self.puts if p[0].startswith("tts/")]


@contextmanager
def probed(
    gw: Gateway, fault: Fault | None = None, fault_times: int = 1
) -> Iterator[ObjectStoreProbe]:
    """``gw``'s object store behind a probe, for the connections opened inside the block."""
    storage = gw.services.storage
    inner = storage.objects
    probe = ObjectStoreProbe(inner, fault, fault_times)
    storage.objects = probe  # type: ignore[assignment]
    try:
        yield probe
    finally:
        storage.objects = inner


def stored_replies(gw: Gateway) -> list[Path]:
    """The spoken answers in the local object store's folder."""
    return sorted((gw.services.storage.objects.root / "tts").rglob("*.mp3"))  # type: ignore[attr-defined]


async def _audio_turn(gw: Gateway, conversation: str, **query: str) -> tuple[bytes, dict[str, Any]]:
    """One full ``/v1/chat/audio`` turn: (the MP3 received, the ``chat_tts_complete`` body)."""
    audio = wav_bytes(1.0)
    gw.sim.register_transcript(audio, QUESTION)
    gw.sim.set_reply(ANSWER)
    async with client(gw, query={"conversation_id": conversation, **query}) as c:
        await c.recv()
        await c.send_all(packets(audio))
        await c.until("audio_complete")
    (done,) = c.bodies("chat_tts_complete")
    return c.mp3(turn_id=1), done


async def test_audio_turn_stores_the_spoken_answer(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        with probed(gw) as probe:
            mp3, done = await _audio_turn(gw, "conv-reply")
        assert done["tts_success"] is True and done["db_saved"] is True
        await gw.services.storage.outbox.drained()
        (turn,) = await gw.services.storage.history.conversation("conv-reply")
        key = turn.reply_audio_key
        assert key is not None and key.startswith("tts/") and key.endswith(".mp3")
        assert turn.audio_key and turn.audio_key != key
        # The object is exactly what the client was sent, and it is playable MP3.
        stored = await gw.services.storage.objects.get(key)
        assert stored == mp3 and len(stored) > 1000
        samples, rate = decoded_samples(stored)
        assert samples > 0 and rate == gw.settings.speech_sample_rate
        assert probe.reply_puts() == [(key, "audio/mpeg", len(mp3))]
    assert not voice_tasks()


async def test_vlm_turn_stores_the_spoken_answer(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        audio, image = wav_bytes(1.0), png_bytes()
        gw.sim.register_transcript(audio, "图片里有什么？")
        gw.sim.set_reply(ANSWER)
        with probed(gw) as probe:
            async with client(gw, "vlm", query={"conversation_id": "conv-vlm-reply"}) as c:
                await c.recv()
                await c.send_all(packets(image, type="image") + packets(audio, type="audio"))
                await c.ws.send(json.dumps({"type": "end"}))
                await c.until("vlm_complete")
        mp3 = c.mp3(turn_id=1)
        (done,) = c.bodies("vlm_chat_tts_complete")
        assert done["audio_chunks"] == len(c.bodies("audio_stream:data")) > 0
        await gw.services.storage.outbox.drained()
        (turn,) = await gw.services.storage.history.conversation("conv-vlm-reply")
        assert turn.channel == "vlm" and turn.audio_key and turn.image_key
        key = turn.reply_audio_key
        assert key is not None and key.startswith("tts/")
        stored = await gw.services.storage.objects.get(key)
        assert stored == mp3
        assert decoded_samples(stored)[0] > 0
        assert probe.reply_puts() == [(key, "audio/mpeg", len(mp3))]


async def test_nothing_is_stored_when_keeping_is_off(tmp_path: Path) -> None:
    async with gateway(tmp_path, store_reply_audio=False) as gw:
        with probed(gw) as probe:
            mp3, done = await _audio_turn(gw, "conv-off")
        assert mp3 and done["tts_success"] is True and done["db_saved"] is True
        await gw.services.storage.outbox.drained()
        (turn,) = await gw.services.storage.history.conversation("conv-off")
        assert turn.reply_audio_key is None and turn.audio_key  # the upload is still stored
        assert probe.reply_puts() == [] and stored_replies(gw) == []


async def _failing_store(tmp_path: Path, fault: Fault, **overrides: Any) -> None:
    async with gateway(tmp_path, **overrides) as gw:
        with probed(gw, fault) as probe:
            mp3, done = await _audio_turn(gw, "conv-fail")
        assert mp3 and done["tts_success"] is True and done["db_saved"] is True
        assert done["assistant_response"] == ANSWER
        await gw.services.storage.outbox.drained()
        (turn,) = await gw.services.storage.history.conversation("conv-fail")
        assert turn.status == "completed" and turn.error_code is None
        assert turn.reply_audio_key is None and turn.audio_key
        assert len(probe.reply_puts()) == 1 and stored_replies(gw) == []
    assert not voice_tasks()


async def test_a_failing_object_store_leaves_the_turn_whole(tmp_path: Path) -> None:
    await _failing_store(tmp_path, "error")


async def test_a_stalled_object_store_is_given_up_on(tmp_path: Path) -> None:
    await _failing_store(tmp_path, "stall", read_timeout=1.0)


async def test_barge_in_stores_no_answer_audio(tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=UPSTREAM_KEY, tokens_per_second=60, tts_realtime_factor=0.5)
    async with gateway(tmp_path, config) as gw:
        first, second = wav_bytes(0.4, seed=1), wav_bytes(0.4, seed=2)
        gw.sim.register_transcript(first, "讲个很长的故事")
        gw.sim.register_transcript(second, "停")
        gw.sim.set_reply(
            lambda body: LONG_ANSWER if "故事" in body["messages"][-1]["content"] else ANSWER
        )
        with probed(gw) as probe:
            async with client(gw, query={"conversation_id": "conv-barge-reply"}) as c:
                await c.recv()
                await c.send_all(packets(first))
                await c.until("audio_stream:data")  # turn 1 is speaking
                await c.ws.send(json.dumps({"type": "cancel"}))
                await c.until("audio_stream:finished")
                await c.send_all(packets(second))
                await c.until("audio_complete")
        assert c.mp3(turn_id=1)  # turn 1 did send audio before it was cancelled
        await gw.services.storage.outbox.drained()
        first_turn, second_turn = await gw.services.storage.history.conversation("conv-barge-reply")
        assert first_turn.status == "interrupted" and first_turn.reply_audio_key is None
        assert second_turn.status == "completed" and second_turn.reply_audio_key
        # The only answer audio stored is turn 2's.
        ((key, _, _),) = probe.reply_puts()
        assert key == second_turn.reply_audio_key
        assert await gw.services.storage.objects.get(key) == c.mp3(turn_id=2)
        assert len(stored_replies(gw)) == 1
    assert not voice_tasks()


async def test_cancel_while_the_answer_is_stored(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        first, second = wav_bytes(0.4, seed=1), wav_bytes(0.4, seed=2)
        gw.sim.register_transcript(first, QUESTION)
        gw.sim.register_transcript(second, "再说一遍")
        gw.sim.set_reply(ANSWER)
        with probed(gw, "stall") as probe:
            async with client(gw, query={"conversation_id": "conv-cancel-store"}) as c:
                await c.recv()
                await c.send_all(packets(first))
                await c.until("audio_stream:finished")  # turn 1 has spoken its whole answer
                async with asyncio.timeout(5):
                    await probe.stalled.wait()  # ... and is storing it
                await c.ws.send(json.dumps({"type": "cancel"}))
                await c.send_all(packets(second))
                await c.until("audio_complete")
        # Turn 1 ended at the cancellation: no completion events.
        assert [b["turn_id"] for b in c.bodies("chat_tts_complete")] == [2]
        assert [b["turn_id"] for b in c.bodies("audio_complete")] == [2]
        await gw.services.storage.outbox.drained()
        first_turn, second_turn = await gw.services.storage.history.conversation(
            "conv-cancel-store"
        )
        # Turn 1's answer was whole, so its record says so; it names no answer audio.
        assert first_turn.status == "completed" and first_turn.assistant_content == ANSWER
        assert first_turn.reply_audio_key is None and first_turn.audio_key
        assert second_turn.reply_audio_key is not None
        assert [p[0] for p in probe.reply_puts()][1:] == [second_turn.reply_audio_key]
        assert stored_replies(gw) == [
            gw.services.storage.objects.path_for(second_turn.reply_audio_key)  # type: ignore[attr-defined]
        ]
        # Turn 2's context holds turn 1's answer once.
        context = gw.sim.log.chat_requests[1].messages
        assert context.count({"role": "assistant", "content": ANSWER}) == 1
    assert not voice_tasks()
