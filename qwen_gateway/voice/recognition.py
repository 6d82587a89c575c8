"""Reading a streaming recognition session: its partial and final results joined into one transcript.

Shared by the seed's voice turns (:mod:`.turn`) and ``/v1/realtime`` (:mod:`qwen_gateway.realtime`): a recogniser
sends results per sentence (``sentence_id``), partial ones replaced by later ones and by the sentence's final one;
the transcript so far is the sentences in order, each as its final text or else its latest partial.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..providers.base import RecognitionResult, RecognitionSession

__all__ = ["OnTranscript", "collect_transcript", "joined"]

#: Called with the transcript so far and the result that changed it.
OnTranscript = Callable[[str, RecognitionResult], Awaitable[None]]


def joined(finals: dict[int, str], partials: dict[int, str]) -> str:
    """The sentences in order: each one's final text, else its latest partial."""
    ids = sorted(finals.keys() | partials.keys())
    return "".join(finals.get(i, partials.get(i, "")) for i in ids)


async def collect_transcript(rec: RecognitionSession, on_update: OnTranscript | None = None) -> str:
    """Read ``rec``'s results to their end (call ``on_update`` after each); return the final transcript."""
    finals: dict[int, str] = {}
    partials: dict[int, str] = {}
    async for result in rec.results():
        if result.is_final:
            finals[result.sentence_id] = result.text
            partials.pop(result.sentence_id, None)
        else:
            partials[result.sentence_id] = result.text
        if on_update is not None:
            await on_update(joined(finals, partials), result)
    return joined(finals, partials).strip()
