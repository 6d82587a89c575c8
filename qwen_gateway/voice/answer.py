"""The spoken answer of one turn, for every voice endpoint: streaming chat -> speakable segments -> streaming TTS
-> audio encoder -> events.

:class:`AnswerSpeaker` runs three concurrent stages under one ``asyncio.TaskGroup``, joined by a small bounded
queue of segments:

* **chat**: streams the completion; every content delta goes out at once as a text event and into a
  :class:`~qwen_gateway.voice.segmenter.SpeechSegmenter`; each segment it releases (the first one early, then sentence
  by sentence) is queued for TTS; fragments of tool calls go out as tool-call events and are collected in
  :attr:`AnswerResult.tool_calls` (the text said before a call is spoken; the call ends the answer);
* **TTS feeder**: opens one synthesis session at once (its handshake overlaps the chat's first token), announces
  the speech with the first segment and sends the segments in order, then ``finish()``;
* **TTS reader**: encodes the PCM as it arrives with one incremental encoder (MP3 after the first audio in a worker
  thread, off the event loop) and sends audio events as encoded bytes come out.

What the events are is the endpoint's business (:class:`AnswerEvents`): the seed endpoints send ``chat_chunk`` /
``vlm_chat_chunk``, ``tts_started`` and ``audio_stream`` with MP3 (:class:`SeedAnswerEvents`, :class:`Mp3Encoder`);
``/v1/realtime`` sends its transcript and audio deltas in the negotiated format.

Every event goes through ``emit``, which waits while the client is slow: the TTS reader then stops reading, the
provider's bounded buffer fills and the upstream is flow-controlled. Nothing is dropped.

Upstream failures do not escape: a chat failure (429, 5xx, mid-stream error, timeout) stops the text, and what was
already segmented is still spoken; a TTS failure (error, drop, timeout) stops the audio while the text goes on. Each
is reported once with a typed ``error`` event and in :class:`AnswerResult`. Whatever audio was produced is flushed and
``audio_stream`` ``finished`` is always sent (:meth:`AnswerSpeaker.run`). Cancelling :meth:`run` (barge-in)
cancels every stage and closes both upstream connections; the partial text stays readable in :attr:`result`.

With ``keep_audio`` the speaker also keeps the MP3 it sends (the ``data`` events' bytes, in order, the flush
included) for the turn to store as the spoken answer (:attr:`AnswerSpeaker.spoken_audio`). Keeping is bounded by
``keep_audio_limit`` (:data:`MAX_KEPT_AUDIO`): an answer whose audio grows beyond it is not kept at all (nothing
rather than a truncated file).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from msgspec import UNSET, UnsetType

from protocol import (
    MSG_TTS_STARTED,
    AudioStreamData,
    AudioStreamFinished,
    ErrorCode,
    ErrorEvent,
    Event,
    OutputAudio,
    TtsStarted,
)

from ..errors import UpstreamError, UpstreamTimeout, detached
from ..providers.base import ChatModel, Synthesizer, ToolCallDelta, Usage
from ..tasks import forget_frames
from .encoders import AudioChunk
from .mp3 import Mp3Encoder
from .segmenter import SpeechSegmenter

__all__ = [
    "MAX_AUDIO_CHUNK",
    "MAX_KEPT_AUDIO",
    "AnswerEvents",
    "AnswerResult",
    "AnswerSpeaker",
    "AnswerTuning",
    "AudioChunk",
    "AudioEncoder",
    "ChunkEncoder",
    "ChunkEvents",
    "DeviceAnswerEvents",
    "Emit",
    "SeedAnswerEvents",
    "ToolCall",
    "error_code_for",
    "upstream_error_event",
]

log = logging.getLogger("qwen_gateway.voice.answer")

#: Sends one event to the client; waits while the client is slower than the pipeline.
Emit = Callable[[Any], Awaitable[None]]

#: Largest MP3 payload of one ``audio_stream`` event (base64 makes it 4/3 larger on the wire).
MAX_AUDIO_CHUNK = 32 * 1024

#: Most MP3 bytes of one answer kept for storing (8 MiB: about 17 minutes at 64 kbps); beyond it none are kept.
MAX_KEPT_AUDIO = 8 * 1024 * 1024

T = TypeVar("T")

_RATE_LIMIT_CODES = frozenset(
    {"limit_requests", "insufficient_quota", "rate_limited", "Throttling", "rate_limit_exceeded"}
)


def error_code_for(exc: BaseException) -> ErrorCode:
    """The ``error.code`` of an upstream failure: ``rate_limited``, ``upstream_timeout`` or ``upstream_error``."""
    if isinstance(exc, UpstreamTimeout | TimeoutError):
        return ErrorCode.UPSTREAM_TIMEOUT
    if isinstance(exc, UpstreamError) and (exc.status == 429 or exc.code in _RATE_LIMIT_CODES):
        return ErrorCode.RATE_LIMITED
    return ErrorCode.UPSTREAM_ERROR


def upstream_error_event(stage: str, exc: BaseException, turn_id: int) -> ErrorEvent:
    """The ``error`` event reporting that ``stage`` (recognition, chat, speech synthesis) failed with ``exc``."""
    if isinstance(exc, UpstreamError):
        detail = exc.message
    elif isinstance(exc, TimeoutError):
        detail = "no answer in time"
    else:
        detail = type(exc).__name__
    return ErrorEvent(
        message=f"{stage} failed: {detail}", code=error_code_for(exc), turn_id=turn_id
    )


async def _next(iterator: AsyncIterator[T], seconds: float) -> T | None:
    """The next item of ``iterator`` within ``seconds``, or None at its end."""
    async with asyncio.timeout(seconds):
        try:
            return await anext(iterator)
        except StopAsyncIteration:
            return None


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class AnswerEvents(Protocol):
    """The events an endpoint sends for what the answer stage does; ``None``: nothing to send."""

    def text(self, delta: str, so_far: str) -> Any | None:
        """A delta of the answer's text (``so_far`` includes it)."""
        ...

    def speech_started(self) -> Any | None:
        """The first segment went to TTS (the seed's ``tts_started``)."""
        ...

    def audio(self, payload: bytes) -> Any:
        """Encoded audio, at most :data:`MAX_AUDIO_CHUNK` bytes."""
        ...

    def finished(self) -> Any | None:
        """The last event of the answer, always sent (the seed's ``audio_stream`` ``finished``)."""
        ...

    def error(self, stage: str, exc: BaseException) -> Any | None:
        """``stage`` (``chat``, ``speech synthesis``) failed with ``exc``; reported once per stage."""
        ...

    def tool_call(self, fragment: ToolCallDelta) -> Any | None:
        """A fragment of a tool call the model makes."""
        ...


class AudioEncoder(Protocol):
    """Encodes the answer's PCM (mono 16-bit) for the client, incrementally: MP3, PCM at another rate, G.711..."""

    @property
    def sample_rate(self) -> int:
        """The rate of the PCM it takes."""
        ...

    @property
    def samples_in(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def encode(self, pcm: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@runtime_checkable
class ChunkEncoder(Protocol):
    """An :class:`AudioEncoder` whose output comes in chunks that must each be one event (an Opus packet, Ogg
    pages), with their durations; the speaker sends one audio event per chunk (never split or joined)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def samples_in(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def encode_chunks(self, pcm: bytes) -> list[AudioChunk]: ...

    def flush_chunks(self) -> list[AudioChunk]: ...


@runtime_checkable
class ChunkEvents(Protocol):
    """:class:`AnswerEvents` that describe each chunk of a :class:`ChunkEncoder` (its duration...); without
    it, a chunk goes out through ``audio(chunk.data)``."""

    def audio_chunk(self, chunk: AudioChunk) -> Any: ...


#: (type, protocol) -> whether instances of that type conform (see _conforms)
_CONFORMS: dict[tuple[type, type], bool] = {}


def _conforms(obj: object, protocol: type) -> bool:
    """``isinstance(obj, protocol)`` for a runtime-checkable Protocol, answered once per type of ``obj``.

    Python checks such a protocol member by member on every call (about 10 us); asked for every audio chunk of
    every answer, that was 5% of the event loop's Python time under the 1000/100 load. The speaker's encoders and
    event builders conform by their class, not by attributes set on an instance.
    """
    key = (type(obj), protocol)
    known = _CONFORMS.get(key)
    if known is None:
        known = _CONFORMS[key] = isinstance(obj, protocol)
    return known


@dataclass(frozen=True, slots=True)
class SeedAnswerEvents:
    """The answer's events on ``/v1/chat/audio`` and ``/v1/chat/vlm``: ``chunk_event`` builds ``chat_chunk`` (or
    ``vlm_chat_chunk``) from (delta, answer so far); audio is ``audio_stream`` with MP3. Tool calls are not part
    of the seed protocol (its requests offer no tools)."""

    chunk_event: Callable[[str, str], Event]
    turn_id: int

    def text(self, delta: str, so_far: str) -> Event:
        return self.chunk_event(delta, so_far)

    def speech_started(self) -> Event:
        return TtsStarted(message=MSG_TTS_STARTED, turn_id=self.turn_id)

    def audio(self, payload: bytes) -> Event:
        return AudioStreamData(data=payload, turn_id=self.turn_id)

    def finished(self) -> Event:
        return AudioStreamFinished(turn_id=self.turn_id)

    def error(self, stage: str, exc: BaseException) -> Event:
        return upstream_error_event(stage, exc, self.turn_id)

    def tool_call(self, fragment: ToolCallDelta) -> None:
        return None


@dataclass(slots=True)
class DeviceAnswerEvents:
    """The seed's answer events for a client that asked for an audio format at the handshake: each
    ``audio_stream`` ``data`` event also says ``format``, ``sample_rate``, ``frame_ms`` (Opus), ``seq`` (1, 2, ...
    within the turn) and ``duration_ms``."""

    seed: SeedAnswerEvents
    output: OutputAudio
    #: the rate of the audio sent (the asked one, or the speech engine's for MP3 at its own rate)
    sample_rate: int
    #: audio events made so far
    seq: int = 0

    def text(self, delta: str, so_far: str) -> Event:
        return self.seed.text(delta, so_far)

    def speech_started(self) -> Event:
        return self.seed.speech_started()

    def audio(self, payload: bytes) -> Event:
        return self._data(payload, UNSET)

    def audio_chunk(self, chunk: AudioChunk) -> Event:
        return self._data(chunk.data, round(chunk.duration_ms, 3))

    def _data(self, payload: bytes, duration_ms: float | UnsetType) -> Event:
        self.seq += 1
        return AudioStreamData(
            data=payload,
            turn_id=self.seed.turn_id,
            format=self.output.format,
            sample_rate=self.sample_rate,
            frame_ms=self.output.frame_ms if self.output.frame_ms is not None else UNSET,
            seq=self.seq,
            duration_ms=duration_ms,
        )

    def finished(self) -> Event:
        return self.seed.finished()

    def error(self, stage: str, exc: BaseException) -> Event:
        return self.seed.error(stage, exc)

    def tool_call(self, fragment: ToolCallDelta) -> None:
        return None


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made, assembled from its fragments."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerTuning:
    """Knobs of the answer stage.

    Attributes:
        read_timeout: longest wait for the next chat delta or TTS audio chunk, and for TTS to take a segment.
        voice: TTS voice (None: the synthesizer's default).
        bitrate_kbps: MP3 bitrate.
        segment_queue: segments waiting for TTS before the chat stage waits.
        first_min_chars / min_chars / max_chars: the segmenter's cut points (see ``SpeechSegmenter``).
    """

    read_timeout: float = 60.0
    voice: str | None = None
    bitrate_kbps: int = 64
    segment_queue: int = 16
    first_min_chars: int = 6
    min_chars: int = 12
    max_chars: int = 100


@dataclass(slots=True)
class AnswerResult:
    """What the answer stage did (readable at any time, also after a cancellation).

    Attributes:
        text: the answer so far (the whole answer when ``chat_ok``).
        chat_ok: the completion ended normally.
        tts_ok: no synthesis failure (see ``spoken`` for "the whole answer was spoken").
        error: the first upstream failure, if any.
        segments_total: segments the answer was cut into.
        segments_sent: segments handed to TTS (all of them spoken when ``spoken``).
        tts_chars: characters handed to TTS (the spoken text, counted against the key's daily quota).
        audio_chunks: ``audio_stream`` data events sent.
        audio_bytes: MP3 bytes sent.
        pcm_samples: PCM samples received from TTS (and encoded).
        sample_rate: the PCM's rate (0 before the first audio).
        tts_started: ``tts_started`` was sent.
        first_token_at / first_audio_at: clock times of the first text delta and the first audio event.
        usage: token usage, when the upstream reported it.
        tool_calls: the tool calls the model made, by index (their arguments complete once ``chat_ok``).
        finish_reason: why the completion ended (``stop``, ``length``, ``tool_calls`` ...), when it said.
    """

    text: str = ""
    chat_ok: bool = False
    tts_ok: bool = True
    error: BaseException | None = None
    segments_total: int = 0
    segments_sent: int = 0
    tts_chars: int = 0
    audio_chunks: int = 0
    audio_bytes: int = 0
    pcm_samples: int = 0
    sample_rate: int = 0
    tts_started: bool = False
    first_token_at: float | None = None
    first_audio_at: float | None = None
    usage: Usage | None = None
    # metrics: the first segment cut from the answer, handed to TTS, and the first PCM received from TTS
    first_segment_at: float | None = None
    first_tts_text_at: float | None = None
    first_pcm_at: float | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def spoken(self) -> bool:
        """The whole answer was generated and spoken: the seed's ``tts_success``."""
        return self.chat_ok and self.tts_ok and self.segments_sent == self.segments_total


class AnswerSpeaker:
    """Generates and speaks one answer (see the module docstring).

    Args:
        chat: the chat (or VLM) model.
        synthesizer: the TTS engine.
        emit: sends an event to the client.
        events: builds the endpoint's events.
        turn_id: names the turn in logs.
        tuning: timeouts, voice, bitrate, segmenting.
        api_key: upstream key (None: the provider's configured key).
        clock: monotonic seconds.
        keep_audio: keep the encoded audio sent, for :attr:`spoken_audio`.
        keep_audio_limit: most bytes kept; an answer whose audio grows beyond it keeps none.
        new_encoder: makes the encoder for PCM at a rate (default: MP3 at ``tuning.bitrate_kbps``); raises
            ``ValueError`` for a rate it cannot take.
        speak: False for a text-only answer (``/v1/realtime`` with ``output_modalities: ["text"]``): no
            synthesis session is opened and nothing is segmented; the text and tool-call events go out as usual.
    """

    def __init__(
        self,
        *,
        chat: ChatModel,
        synthesizer: Synthesizer,
        emit: Emit,
        events: AnswerEvents,
        turn_id: int,
        tuning: AnswerTuning,
        api_key: str | None = None,
        clock: Callable[[], float],
        keep_audio: bool = False,
        keep_audio_limit: int = MAX_KEPT_AUDIO,
        new_encoder: Callable[[int], AudioEncoder] | None = None,
        speak: bool = True,
    ) -> None:
        self._chat = chat
        self._synth = synthesizer
        self._emit = emit
        self._events = events
        # None: MP3 (not the bound method ``self._mp3_encoder``, which would make every speaker a reference cycle)
        self._new_encoder_for = new_encoder
        self._speak = speak
        self._turn_id = turn_id
        self._tuning = tuning
        self._api_key = api_key
        self._clock = clock
        self._encoder: AudioEncoder | None = None
        # An encoder call running in a worker thread (see _off_loop).
        self._encoding: asyncio.Future[bytes] | None = None
        self._tts_failed = False
        self._segments_ended = False  # the chat stage's end marker was taken from the queue
        # The MP3 sent so far, while it is kept (None: not kept, or dropped beyond the limit).
        self._kept: bytearray | None = bytearray() if keep_audio else None
        self._keep_limit = keep_audio_limit
        self.result = AnswerResult()

    @property
    def spoken_audio(self) -> bytes:
        """The MP3 sent in ``audio_stream`` ``data`` events, in order (complete once :meth:`run` returned).

        Empty when audio is not kept, or when it grew beyond the keeping limit.
        """
        return bytes(self._kept) if self._kept is not None else b""

    async def run(self, body: Mapping[str, Any]) -> AnswerResult:
        """Stream the completion for ``body`` (an OpenAI request body) and speak it; return what happened.

        Sends text events, the speech start, audio and always, last, the finished event (see
        :class:`AnswerEvents`). Upstream failures are reported as error events and in the result, never raised.
        """
        segments: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self._tuning.segment_queue)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._chat_stage(body, segments), name="answer-chat")
                if self._speak:
                    group.create_task(self._speech_stage(segments), name="answer-tts")
        finally:
            # LAME's native state (about 250 KiB) goes now, not whenever a reference cycle holding this
            # speaker (an exception's traceback, say) is collected.
            self._encoder = None
        await self._send(self._events.finished())
        return self.result

    async def _send(self, event: Any | None) -> None:
        if event is not None:
            await self._emit(event)

    def release(self) -> None:
        """Drop the kept MP3 (:attr:`spoken_audio` is empty from now on) and the encoder."""
        self._kept = None
        self._encoder = None

    # ------------------------------------------------------------------ chat
    async def _chat_stage(
        self, body: Mapping[str, Any], segments: asyncio.Queue[str | None]
    ) -> None:
        result = self.result
        segmenter = SpeechSegmenter(
            self._tuning.min_chars,
            self._tuning.max_chars,
            first_min_chars=self._tuning.first_min_chars,
        )
        parts: list[str] = []
        stream = self._chat.stream(body, api_key=self._api_key)
        try:
            while (delta := await _next(stream, self._tuning.read_timeout)) is not None:
                if delta.usage is not None:
                    result.usage = delta.usage
                if delta.choice_index != 0:
                    continue
                if delta.finish_reason is not None:
                    result.finish_reason = delta.finish_reason
                for fragment in delta.tool_calls:
                    self._tool_fragment(fragment)
                    await self._send(self._events.tool_call(fragment))
                if not delta.content:
                    continue
                if result.first_token_at is None:
                    result.first_token_at = self._clock()
                parts.append(delta.content)
                result.text = "".join(parts)
                # Speech first: a segment this delta completes goes to TTS before the text event.
                for segment in segmenter.feed(delta.content) if self._speak else ():
                    await self._segment(segment, segments)
                await self._send(self._events.text(delta.content, result.text))
            result.chat_ok = True
        except (UpstreamError, TimeoutError) as exc:
            self._fail("chat", exc)
            await self._send(self._events.error("chat", exc))
        finally:
            await _aclose(stream)
        # What was said so far is still spoken, also after a chat failure.
        for segment in segmenter.flush() if self._speak else ():
            await self._segment(segment, segments)
        if self._speak:
            await segments.put(None)

    def _tool_fragment(self, fragment: ToolCallDelta) -> None:
        calls = self.result.tool_calls
        call = next((c for c in calls if c.index == fragment.index), None)
        if call is None:
            call = ToolCall(fragment.index)
            calls.append(call)
        call.id = call.id or fragment.id or ""
        call.name = call.name or fragment.name or ""
        call.arguments += fragment.arguments

    async def _segment(self, segment: str, segments: asyncio.Queue[str | None]) -> None:
        self.result.segments_total += 1
        if self.result.first_segment_at is None:  # metrics
            self.result.first_segment_at = self._clock()
        if not self._tts_failed:
            await segments.put(segment)
            # Let the TTS feeder send it now, before the rest of this read's deltas are handled.
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ speech
    async def _speech_stage(self, segments: asyncio.Queue[str | None]) -> None:
        # The session is opened at once, while the chat request is still waiting for its first token, and its
        # feeder waits for the first segment: the handshake is not on the way of the first audio. (A task-
        # WebSocket engine starts its task with the first segment, one round trip, so that a slow first token
        # cannot break DashScope's 23 s rule; HTTP synthesis connects per segment.)
        # Set once the first segment went to TTS (and tts_started out), or once nothing will.
        started = asyncio.Event()
        try:
            async with (
                self._synth.session(voice=self._tuning.voice, api_key=self._api_key) as tts,
                asyncio.TaskGroup() as group,
            ):
                group.create_task(self._feed_tts(tts, segments, started), name="answer-tts-feed")
                # Set up the encoder after the handshake, while the chat is still on its way to the first
                # sentence (made again at the PCM's own rate if it differs), in a worker thread: LAME's set-up
                # takes 0.6 ms, and the answers of many sessions often start in the same loop iteration.
                with contextlib.suppress(ValueError):
                    self._encoder = await asyncio.get_running_loop().run_in_executor(
                        None, self._new_encoder, self._synth.sample_rate
                    )
                await started.wait()
                if self.result.tts_started:
                    await self._read_tts(tts)
        except* (UpstreamError, TimeoutError) as eg:
            # A copy, without the traceback: the original's traceback holds this frame, which holds the local.
            exc = detached(eg.exceptions[0])
            if self.result.segments_total == 0 and not self._segments_ended:
                # Failed before anything was said: it only matters if something is to be said.
                self._segments_ended = await segments.get() is None
            self._tts_failed = True
            if self.result.segments_total:
                self.result.tts_ok = False
                self._fail("speech synthesis", exc)
                await self._send(self._events.error("speech synthesis", exc))
            # Let the chat stage go on: take (and drop) the segments it still produces.
            while not self._segments_ended:
                self._segments_ended = await segments.get() is None
            forget_frames(eg)
        await self._flush_audio()

    async def _feed_tts(
        self, tts: Any, segments: asyncio.Queue[str | None], started: asyncio.Event
    ) -> None:
        timeout = self._tuning.read_timeout
        try:
            segment = await segments.get()
            if segment is None:
                self._segments_ended = True
                return  # nothing to say
            while segment is not None:
                if self.result.first_tts_text_at is None:  # metrics
                    self.result.first_tts_text_at = self._clock()
                async with asyncio.timeout(timeout):
                    await tts.send_text(segment)
                self.result.segments_sent += 1
                self.result.tts_chars += len(segment)
                if not self.result.tts_started:
                    await self._send(self._events.speech_started())
                    self.result.tts_started = True
                    started.set()
                segment = await segments.get()
            self._segments_ended = True
            async with asyncio.timeout(timeout):
                await tts.finish()
        finally:
            started.set()

    async def _read_tts(self, tts: Any) -> None:
        audio = tts.audio()
        try:
            while (chunk := await _next(audio, self._tuning.read_timeout)) is not None:
                if not chunk.pcm:
                    continue
                if self.result.first_pcm_at is None:  # metrics
                    self.result.first_pcm_at = self._clock()
                if self._encoder is None or self._encoder.sample_rate != chunk.sample_rate:
                    if self._encoder is not None and self._encoder.samples_in:
                        await self._flush_audio()  # a provider changing rates
                    self._encoder = self._new_encoder(chunk.sample_rate)
                    self.result.sample_rate = chunk.sample_rate
                self.result.pcm_samples += len(chunk.pcm) // 2
                encoder = self._encoder
                if _conforms(encoder, ChunkEncoder):
                    await self._send_chunks(encoder.encode_chunks(chunk.pcm))
                elif isinstance(encoder, Mp3Encoder) and self.result.audio_chunks:
                    # LAME off the loop (it releases the GIL): the chunks of many sessions often arrive in one
                    # loop iteration, and encoding them all there stalled the loop (docs/benchmarks.md). The
                    # first audio is what the user waits for: it is encoded at once, below (a worker thread may
                    # wait up to the switch interval, 5 ms, for the GIL while the loop is busy).
                    await self._send_audio(
                        await self._off_loop(functools.partial(encoder.encode, chunk.pcm))
                    )
                else:
                    await self._send_audio(encoder.encode(chunk.pcm))
        finally:
            await _aclose(audio)

    def _new_encoder(self, sample_rate: int) -> AudioEncoder:
        if self._new_encoder_for is None:
            return Mp3Encoder(sample_rate, bitrate_kbps=self._tuning.bitrate_kbps)
        return self._new_encoder_for(sample_rate)

    async def _flush_audio(self) -> None:
        if self._encoding is not None:
            # The reader was cancelled (a TTS failure) while LAME was encoding: its MP3 still goes out first.
            await self._send_audio(await self._encoding)
            self._encoding = None
        encoder = self._encoder
        if encoder is None or encoder.finished:
            return
        if _conforms(encoder, ChunkEncoder):
            await self._send_chunks(encoder.flush_chunks())
        else:
            await self._send_audio(encoder.flush())

    async def _off_loop(self, call: Callable[[], bytes]) -> bytes:
        """Run one of the encoder's calls in a worker thread.

        The call is shielded: if the waiting task is cancelled, the encoder finishes anyway (its state has
        advanced) and :meth:`_flush_audio` sends what it returned, so the stream stays whole.
        """
        running = asyncio.get_running_loop().run_in_executor(None, call)
        self._encoding = running
        encoded = await asyncio.shield(running)
        self._encoding = None
        return encoded

    async def _send_chunks(self, chunks: list[AudioChunk]) -> None:
        """One audio event per chunk, as the encoder cut them."""
        events = self._events
        for chunk in chunks:
            if self.result.first_audio_at is None:
                self.result.first_audio_at = self._clock()
            if _conforms(events, ChunkEvents):
                await self._emit(events.audio_chunk(chunk))
            else:
                await self._emit(events.audio(chunk.data))
            self.result.audio_chunks += 1
            self.result.audio_bytes += len(chunk.data)
            if self._kept is not None:
                self._keep(self._kept, chunk.data)
            await asyncio.sleep(0)

    async def _send_audio(self, encoded: bytes) -> None:
        for start in range(0, len(encoded), MAX_AUDIO_CHUNK):
            piece = encoded[start : start + MAX_AUDIO_CHUNK]
            if self.result.first_audio_at is None:
                self.result.first_audio_at = self._clock()
            await self._emit(self._events.audio(piece))
            self.result.audio_chunks += 1
            self.result.audio_bytes += len(piece)
            if self._kept is not None:
                self._keep(self._kept, piece)
            # Let the connection's writer put it on the wire now, before the next chunk of a burst is encoded.
            await asyncio.sleep(0)

    def _keep(self, kept: bytearray, piece: bytes) -> None:
        if len(kept) + len(piece) <= self._keep_limit:
            kept += piece
            return
        self._kept = None  # nothing rather than a truncated file
        log.info(
            "spoken answer too long to keep",
            extra={"fields": {"turn_id": self._turn_id, "limit": self._keep_limit}},
        )

    def _fail(self, stage: str, exc: BaseException) -> None:
        if self.result.error is None:
            self.result.error = detached(exc)
        log.warning(
            "%s failed during a turn",
            stage,
            extra={
                "fields": {
                    "turn_id": self._turn_id,
                    "error": type(exc).__name__,
                    "code": getattr(exc, "code", None),
                    "status": getattr(exc, "status", None),
                    "upstream_request_id": getattr(exc, "request_id", None) or "",
                }
            },
        )
