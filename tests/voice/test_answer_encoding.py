"""``AnswerSpeaker`` encodes MP3 off the event loop (all but the first audio), and a TTS failure while LAME is busy
loses none of its output.

Driven with a fake chat model and a fake synthesizer; the encoder of the second PCM chunk is held in its worker
thread until the synthesis session has been closed (the TTS failure has cancelled the reader by then).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from protocol import AudioStreamData, AudioStreamFinished, ChatChunk, ErrorEvent, Event
from qwen_gateway.errors import UpstreamError
from qwen_gateway.providers.base import ChatDelta, PcmChunk
from qwen_gateway.voice.answer import AnswerSpeaker, AnswerTuning, SeedAnswerEvents
from qwen_gateway.voice.mp3 import Mp3Encoder

RATE = 24000
SENTENCES = ("你好，今天天气很好。", "适合出门散步，记得多喝水。")


def tone(n: int, freq: float) -> bytes:
    return array.array(
        "h", (int(8000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    ).tobytes()


CHUNKS = (tone(2400, 440.0), tone(2400, 660.0))


class Chat:
    async def stream(
        self, body: Mapping[str, Any], *, api_key: str | None = None
    ) -> AsyncGenerator[ChatDelta, None]:
        for sentence in SENTENCES:
            yield ChatDelta(raw=b"{}", content=sentence)


class Session:
    """Speaks two chunks; taking the second segment fails, once LAME is busy with the second chunk."""

    def __init__(self, busy: threading.Event) -> None:
        self._busy = busy
        self._texts = 0

    async def send_text(self, text: str) -> None:
        self._texts += 1
        if self._texts == 2:
            await asyncio.to_thread(self._busy.wait, 10)
            raise UpstreamError("synthesis failed", code="InternalError")

    async def finish(self) -> None:
        pass

    async def audio(self) -> AsyncIterator[PcmChunk]:
        for pcm in CHUNKS:
            yield PcmChunk(pcm=pcm, sample_rate=RATE)
        await asyncio.Event().wait()  # more audio never comes


class Synthesizer:
    model = "fake-tts"
    sample_rate = RATE

    def __init__(self, busy: threading.Event, release: threading.Event) -> None:
        self._busy = busy
        self._release = release

    @contextlib.asynccontextmanager
    async def session(
        self, *, voice: str | None = None, api_key: str | None = None
    ) -> AsyncIterator[Session]:
        try:
            yield Session(self._busy)
        finally:
            self._release.set()  # the reader has been cancelled: let LAME finish the second chunk


class HeldEncoder(Mp3Encoder):
    """Signals ``busy`` and waits for ``release`` while it encodes the second chunk; notes its threads."""

    def __init__(self, busy: threading.Event, release: threading.Event) -> None:
        super().__init__(RATE)
        self.busy = busy
        self.release = release
        self.calls = 0
        self.threads: list[int] = []

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        self.calls += 1
        self.threads.append(threading.get_ident())
        if self.calls == 2:
            self.busy.set()
            self.release.wait(10)
        return super().encode(pcm)


async def test_tts_failure_during_an_encode_keeps_the_stream_whole() -> None:
    busy, release = threading.Event(), threading.Event()
    encoders: list[HeldEncoder] = []

    class Speaker(AnswerSpeaker):
        def _new_encoder(self, sample_rate: int) -> Mp3Encoder:
            encoders.append(HeldEncoder(busy, release))
            return encoders[-1]

    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    speaker = Speaker(
        chat=Chat(),
        synthesizer=Synthesizer(busy, release),
        emit=emit,
        events=SeedAnswerEvents(
            lambda chunk, full: ChatChunk(chunk=chunk, full_response=full, turn_id=1), 1
        ),
        turn_id=1,
        tuning=AnswerTuning(read_timeout=10.0, first_min_chars=4, min_chars=4),
        clock=time.monotonic,
        keep_audio=True,
    )
    result = await speaker.run({"model": "fake", "messages": []})

    assert not result.tts_ok and result.chat_ok
    assert [e for e in events if isinstance(e, ErrorEvent)]
    assert isinstance(events[-1], AudioStreamFinished)
    (encoder,) = encoders
    loop_thread = threading.get_ident()
    # The first audio is encoded at once on the loop, the rest in a worker thread.
    assert encoder.threads[0] == loop_thread and encoder.threads[1] != loop_thread
    reference = Mp3Encoder(RATE)
    whole = reference.encode(CHUNKS[0]) + reference.encode(CHUNKS[1]) + reference.flush()
    sent = b"".join(e.data for e in events if isinstance(e, AudioStreamData))
    assert sent == whole  # the second chunk's MP3, encoded while the reader was cancelled, went out
    assert speaker.spoken_audio == whole
