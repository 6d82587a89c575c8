"""``ConversationMemory``: a context asked for while the history is still being read waits for the read."""

from __future__ import annotations

import asyncio
from typing import Any

from qwen_gateway.storage.history import Message
from qwen_gateway.voice.memory import ConversationMemory


class SlowHistory:
    """A history store whose ``recent_messages`` answers only when the test says so."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.release = asyncio.Event()
        self.reading = asyncio.Event()

    async def recent_messages(
        self, conversation_id: str, limit: int, *, owner: str
    ) -> list[Message]:
        assert owner == "k_owner"
        self.reading.set()
        await self.release.wait()
        return self.messages


async def test_context_waits_for_a_load_in_progress() -> None:
    history = SlowHistory(
        [Message("user", "earlier question"), Message("assistant", "earlier answer")]
    )
    memory = ConversationMemory(history, "conv-1", owner="k_owner", max_turns=10, max_tokens=4000)  # type: ignore[arg-type]
    loading = asyncio.create_task(memory.load())  # the turn starts the read while recognition runs
    await history.reading.wait()
    context: asyncio.Task[Any] = asyncio.create_task(
        memory.context()
    )  # the chat starts before it ends
    await asyncio.sleep(0)
    assert not context.done()
    history.release.set()
    await loading
    assert await context == [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
    ]
