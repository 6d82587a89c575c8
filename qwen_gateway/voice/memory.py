"""The conversation a voice connection carries from turn to turn, within a turn and token budget.

Turns are written through the outbox, which reaches the history database a little later; a turn cannot wait for
that to see the previous one. So a :class:`ConversationMemory` loads the conversation's earlier turns from the
history store once (a client may resume a conversation with ``?conversation_id=``), then keeps the turns of this
connection itself. :meth:`ConversationMemory.context` returns the most recent turns, at most ``max_turns`` of them
and at most ``max_tokens`` (estimated) in all, oldest first, as OpenAI ``messages``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from ..errors import StorageError
from ..storage.history import HistoryStore

__all__ = ["ConversationMemory", "estimate_tokens"]

log = logging.getLogger("qwen_gateway.voice.memory")


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning estimate of the tokens of ``text``: one per CJK character, one per 4 others."""
    wide = sum(1 for c in text if ord(c) >= 0x2E80)
    return wide + (len(text) - wide + 3) // 4


class ConversationMemory:
    """Previous turns of one conversation, for the chat context of the next turn.

    Args:
        history: the history store (read once, lazily).
        conversation_id: the conversation to load and extend.
        owner: whose conversation it is (only that owner's turns are loaded).
        max_turns: most turns given as context (0: none).
        max_tokens: most estimated tokens of context; older turns are left out first.
        load_timeout: longest wait for the history store; on timeout or failure the memory starts empty.
    """

    def __init__(
        self,
        history: HistoryStore | None,
        conversation_id: str,
        *,
        owner: str,
        max_turns: int,
        max_tokens: int,
        load_timeout: float = 2.0,
    ) -> None:
        self.conversation_id = conversation_id
        self.owner = owner
        self._history = history
        self._max_turns = max_turns
        self._max_tokens = max_tokens
        self._load_timeout = load_timeout
        self._turns: deque[tuple[str, str]] = deque(maxlen=max(max_turns, 1))
        self._loaded = history is None
        self._loading = asyncio.Lock()

    async def load(self) -> None:
        """Read the conversation's earlier turns from the history store (once; later calls return at once).

        A turn calls it while recognition runs, so that the chat request does not wait for the database.
        """
        if self._loaded:
            return
        async with self._loading:
            if not self._loaded:
                await self._load()

    async def context(self) -> list[dict[str, str]]:
        """The recent turns as ``[{"role": "user", ...}, {"role": "assistant", ...}, ...]``, oldest first."""
        await self.load()
        if self._max_turns == 0:
            return []
        chosen: list[tuple[str, str]] = []
        budget = self._max_tokens
        for user, assistant in reversed(self._turns):
            cost = estimate_tokens(user) + estimate_tokens(assistant)
            if cost > budget:
                break
            budget -= cost
            chosen.append((user, assistant))
        messages: list[dict[str, str]] = []
        for user, assistant in reversed(chosen):
            messages.append({"role": "user", "content": user})
            if assistant:
                messages.append({"role": "assistant", "content": assistant})
        return messages

    def add(self, user: str, assistant: str) -> None:
        """Remember a finished (or interrupted) turn: what the user said and what was answered."""
        if user:
            self._turns.append((user, assistant))

    async def _load(self) -> None:
        # Marked loaded only once the read is over: a caller of load() meanwhile waits on the lock for it
        # (marked before, a chat starting while the database answered got no context at all).
        try:
            await self._read()
        finally:
            self._loaded = True

    async def _read(self) -> None:
        if self._history is None or self._max_turns == 0:
            return
        try:
            async with asyncio.timeout(self._load_timeout):
                messages = await self._history.recent_messages(
                    self.conversation_id, 2 * self._max_turns, owner=self.owner
                )
        except (StorageError, TimeoutError) as exc:
            log.warning(
                "conversation history not loaded (%s); going on without it",
                type(exc).__name__,
                extra={"fields": {"conversation_id": self.conversation_id}},
            )
            return
        earlier: list[tuple[str, str]] = []
        user: str | None = None
        for message in messages:
            if message.role == "user":
                if user is not None:
                    earlier.append((user, ""))
                user = message.content
            elif user is not None:
                earlier.append((user, message.content))
                user = None
        if user is not None:
            earlier.append((user, ""))
        # Turns of this connection (if any were added before the load) stay the most recent.
        mine = list(self._turns)
        self._turns.clear()
        self._turns.extend(earlier + mine)
