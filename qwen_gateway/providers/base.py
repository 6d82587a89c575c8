"""The interfaces the voice pipeline and the chat route depend on.

Engines (DashScope, the simulator's own clients in tests, local engines later) implement these. They are blind
to sessions and sockets of our clients; every call is cancellable at any ``await`` and cancelling (leaving the
``async with`` or cancelling the task) closes the upstream connection.

Errors: every engine raises :class:`qwen_gateway.errors.UpstreamError` (or ``UpstreamTimeout``) and nothing else
for upstream failures.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

__all__ = [
    "AudioFormat",
    "ChatDelta",
    "ChatModel",
    "PcmChunk",
    "RecognitionResult",
    "RecognitionSession",
    "Recognizer",
    "RelayBatch",
    "SynthesisSession",
    "Synthesizer",
    "ToolCallDelta",
    "Usage",
    "relay_one_by_one",
]

#: Audio container/codec names as DashScope's recognisers take them.
AudioFormat = Literal["pcm", "wav", "mp3", "opus", "speex", "aac", "amr"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a streamed tool call (OpenAI's ``delta.tool_calls[]``): fragments with the same ``index``
    belong to one call; the first carries its ``id`` and ``name``, the others more of its ``arguments`` text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One parsed chunk of a streamed chat completion.

    Attributes:
        raw: the chunk's JSON exactly as the upstream sent it (the ``data:`` payload, without the prefix),
            so the OpenAI-compatible route can relay it without re-encoding.
        content: text delta ("" when none).
        reasoning: ``reasoning_content`` delta of thinking models, kept apart from ``content``.
        role: set on the first chunk.
        finish_reason: set on the chunk that ends the choice.
        usage: set on the usage chunk (``choices: []``) when the caller asked for usage.
        choice_index: the choice the delta belongs to (``n > 1``).
        tool_calls: fragments of tool calls the model makes (requests with ``tools``).
    """

    raw: bytes
    content: str = ""
    reasoning: str = ""
    role: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    choice_index: int = 0
    tool_calls: tuple[ToolCallDelta, ...] = ()


class RelayBatch(NamedTuple):
    """Chunks of a streamed completion that arrived together, for a relay that forwards them byte for byte."""

    #: each chunk's JSON exactly as the upstream sent it (the ``data:`` payloads), in order.
    payloads: list[bytes]
    #: the text the chunks add to choice 0.
    content: str
    #: usage reported by one of them.
    usage: Usage | None
    #: positions in ``payloads`` of usage chunks (no choices: a relay may leave them out).
    usage_only: tuple[int, ...]
    #: the upstream ended the stream (``[DONE]``, or the end of the body after a ``finish_reason``) with these.
    final: bool


async def relay_one_by_one(
    stream: AsyncGenerator[ChatDelta, None],
) -> AsyncGenerator[RelayBatch, None]:
    """``stream``'s deltas as one-chunk batches: :meth:`ChatModel.relay_batches` for a model that cannot tell
    which chunks arrived together. Closing the batches closes ``stream``."""
    async with aclosing(stream):
        async for d in stream:
            content = d.content if d.choice_index == 0 else ""
            # a chunk without choices parses to a delta with usage and nothing else
            bare = not (d.content or d.reasoning or d.role or d.finish_reason or d.tool_calls)
            usage_only = (0,) if d.usage is not None and bare else ()
            yield RelayBatch([d.raw], content, d.usage, usage_only, False)


class ChatModel(Protocol):
    """OpenAI-compatible chat completions (text, or text + image parts for VLM)."""

    def stream(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[ChatDelta, None]:
        """Stream a completion. ``body`` is the OpenAI request body (``stream`` is forced on).

        Retries (429/5xx/connection errors) happen only before the first delta is yielded.
        Raises UpstreamError before or during the stream (a mid-stream ``{"error":...}`` included).
        The iterator owns the upstream response: a caller that stops early closes it
        (``async with contextlib.aclosing(model.stream(...))``) or cancels its task, which drops the connection.
        ``[DONE]`` is not yielded: the stream just ends.
        """
        ...

    def relay_batches(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[RelayBatch, None]:
        """Like :meth:`stream`, for a relay that forwards chunks byte for byte: the chunks that arrived together
        come as one :class:`RelayBatch`; the last batch may be ``final`` (the upstream's end was seen).

        A model that cannot tell what arrived together returns ``relay_one_by_one(self.stream(...))``.
        """
        ...

    async def complete(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> dict[str, Any]:
        """Non-streaming call: the upstream's JSON response body."""
        ...


@dataclass(frozen=True, slots=True)
class RecognitionResult:
    """A partial or final recognition result for one sentence."""

    text: str
    is_final: bool
    sentence_id: int = 0
    begin_ms: int | None = None
    end_ms: int | None = None


class RecognitionSession(Protocol):
    """One utterance being recognised while its audio is still arriving."""

    async def feed(self, audio: bytes) -> None:
        """Send more audio bytes (in order). May wait (upstream flow control)."""
        ...

    async def finish(self) -> None:
        """No more audio: the upstream flushes its remaining results."""
        ...

    def results(self) -> AsyncIterator[RecognitionResult]:
        """Partial and final results as they arrive; ends after the upstream finished."""
        ...


class Recognizer(Protocol):
    """Speech recognition. ``streaming`` engines consume audio while it arrives."""

    @property
    def model(self) -> str: ...

    @property
    def streaming(self) -> bool: ...

    def accepts(self, format: str, sample_rate: int) -> bool:
        """True when the model takes ``format`` audio at ``sample_rate`` Hz as it is; otherwise the caller
        decodes it to 16-bit mono ``pcm`` at a rate this accepts (streaming engines)."""
        ...

    def session(
        self, *, format: AudioFormat, sample_rate: int, api_key: str | None = None
    ) -> AbstractAsyncContextManager[RecognitionSession]:
        """Open a streaming session; leaving the context closes the upstream connection."""
        ...

    async def transcribe_url(self, url: str, *, api_key: str | None = None) -> str:
        """File mode: recognise the audio at ``url`` (submit, poll, fetch the result)."""
        ...


@dataclass(frozen=True, slots=True)
class PcmChunk:
    """Mono signed 16-bit little-endian PCM."""

    pcm: bytes
    sample_rate: int


class SynthesisSession(Protocol):
    """One answer being spoken: text segments in, PCM out, on one upstream connection."""

    async def send_text(self, text: str) -> None:
        """Queue a segment of text for synthesis (a sentence, usually)."""
        ...

    async def finish(self) -> None:
        """No more text: the upstream speaks the remainder, then :meth:`audio` ends."""
        ...

    def audio(self) -> AsyncIterator[PcmChunk]:
        """PCM as it is produced; ends after :meth:`finish` once everything was spoken."""
        ...


class Synthesizer(Protocol):
    """Text to speech."""

    @property
    def model(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AbstractAsyncContextManager[SynthesisSession]:
        """Open a synthesis session; leaving the context early cancels and closes the upstream."""
        ...
