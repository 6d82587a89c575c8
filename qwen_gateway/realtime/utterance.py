"""One user utterance on its way to the recogniser: a bounded queue of 16 kHz PCM, fed while the user speaks,
and a streaming recognition session reading it (:func:`recognise`).

The recognition's deadline is owned here: ``read_timeout`` from the last audio received while the user speaks,
and from the end of the audio (the commit) for the last results. When the recognition ends (done, failed or
cancelled) the queue is released, so a reader blocked on it goes on and later audio is dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from protocol import realtime as rt

from ..errors import UpstreamError, detached
from ..providers.base import RecognitionSession, Recognizer
from ..tasks import forget_frames
from ..voice.convert import Resampler
from ..voice.recognition import OnTranscript, collect_transcript

__all__ = [
    "RECOGNISER_RATES",
    "RECOGNITION_RATE",
    "UTTERANCE_QUEUE",
    "Utterance",
    "recognise",
    "recogniser_rate",
    "with_transcript",
]

#: The recogniser's input: pcm16 mono at 16 kHz (every streaming recogniser of the catalogue takes it).
RECOGNITION_RATE = 16000
#: Audio chunks waiting for the recogniser before the reader waits.
UTTERANCE_QUEUE = 64


@dataclass(eq=False, slots=True)
class Utterance:
    """The audio of one user item on its way to the recogniser, and the item's transcript once known.

    Attributes:
        item_id: the user item it becomes.
        queue: audio for the recogniser (None: the end).
        transcript: settled once recognition ended: the transcript, or None (failed, cleared).
        committed: the item was committed (deltas may go out); ``committed_at`` / ``transcript_at``: clock times.
        text_so_far / sent_so_far: the transcript so far, and what transcription deltas carried of it.
        read_timeout: the longest wait for more audio while the user speaks, and for the results after.
        closed: recognition has ended: audio for it is dropped.
    """

    item_id: str
    queue: asyncio.Queue[bytes | None]
    transcript: asyncio.Future[str | None]
    audio_bytes: int = 0
    committed: bool = False
    committed_at: float | None = None
    transcript_at: float | None = None
    text_so_far: str = ""
    sent_so_far: str = ""
    deadline: asyncio.Timeout | None = None
    task: asyncio.Task[None] | None = None
    read_timeout: float = 60.0
    closed: bool = False

    @classmethod
    def new(cls, item_id: str, read_timeout: float) -> Utterance:
        loop = asyncio.get_running_loop()
        return cls(
            item_id,
            asyncio.Queue(maxsize=UTTERANCE_QUEUE),
            loop.create_future(),
            read_timeout=read_timeout,
        )

    @property
    def seconds(self) -> float:
        """Audio received, in seconds."""
        return round(self.audio_bytes / 2 / RECOGNITION_RATE, 3)

    async def put(self, pcm: bytes | None) -> None:
        """More audio (None: the end) for the recogniser; waits while the recogniser is behind."""
        if self.closed:
            return
        if pcm is not None:
            self.audio_bytes += len(pcm)
            self.extend_deadline()
        await self.queue.put(pcm)

    def close(self) -> None:
        """Recognition ended: drop what waits in the queue (a reader blocked on it goes on)."""
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()

    def extend_deadline(self) -> None:
        """Bound the recognition from now: ``read_timeout`` for more audio or for the last results."""
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.read_timeout)

    def settle(self, transcript: str | None) -> None:
        if not self.transcript.done():
            self.transcript.set_result(transcript)

    def delta(self) -> str:
        """The transcript's text not yet sent as a delta ("" when none, or when the recogniser revised what was
        sent: deltas only add, a revision shows in the final transcript)."""
        text, sent = self.text_so_far, self.sent_so_far
        if len(text) > len(sent) and text.startswith(sent):
            self.sent_so_far = text
            return text[len(sent) :]
        return ""


#: The PCM rates a recogniser may be fed, best first (the utterance's 16 kHz is resampled for an 8 kHz model).
RECOGNISER_RATES = (RECOGNITION_RATE, 8000)


def recogniser_rate(recognizer: Recognizer) -> int | None:
    """The rate ``recognizer`` takes pcm16 at (None: it takes none of :data:`RECOGNISER_RATES`)."""
    return next((r for r in RECOGNISER_RATES if recognizer.accepts("pcm", r)), None)


async def _feed(
    rec: RecognitionSession, queue: asyncio.Queue[bytes | None], resampler: Resampler | None
) -> None:
    while (chunk := await queue.get()) is not None:
        data = resampler.process(chunk) if resampler is not None else chunk
        if data:
            await rec.feed(data)
    if resampler is not None and (tail := resampler.flush()):
        await rec.feed(tail)
    await rec.finish()


async def recognise(
    utterance: Utterance,
    recognizer: Recognizer,
    *,
    api_key: str | None,
    on_update: OnTranscript,
) -> tuple[str | None, BaseException | None]:
    """Recognise the utterance while its audio arrives: (transcript, None), or (None, the upstream failure)."""
    transcript: str | None = None
    failure: BaseException | None = None
    rate = recogniser_rate(recognizer) or RECOGNITION_RATE
    resampler = Resampler(RECOGNITION_RATE, rate) if rate != RECOGNITION_RATE else None
    try:
        async with asyncio.timeout(None) as deadline:
            utterance.deadline = deadline
            utterance.extend_deadline()
            async with (
                recognizer.session(format="pcm", sample_rate=rate, api_key=api_key) as rec,
                asyncio.TaskGroup() as group,
            ):
                group.create_task(_feed(rec, utterance.queue, resampler), name="realtime-asr-feed")
                transcript = await collect_transcript(rec, on_update)
    except* (UpstreamError, TimeoutError) as eg:
        failure = detached(eg.exceptions[0])
        forget_frames(eg)
    finally:
        utterance.deadline = None
        utterance.close()
    return transcript, failure


def with_transcript(item: rt.Item | None, transcript: str | None) -> rt.MessageItem | None:
    """A user audio item with its transcript (None: the item is gone)."""
    if not isinstance(item, rt.MessageItem):
        return None
    parts = [
        msgspec.structs.replace(p, transcript=transcript) if p.type == "input_audio" else p
        for p in item.content
    ]
    return msgspec.structs.replace(item, content=parts, status="completed")
