"""Transcripts: the registry (audio content -> text) and the timeline that makes results follow the audio.

:class:`TranscriptRegistry` maps the SHA-256 of some audio to its text; while audio is still arriving,
:class:`PrefixMatcher` keeps the registered recordings the received bytes are a prefix of, so partial results can
already use the right text. :func:`plan_transcript` lays a text out on a time axis (sentences, words, pauses at
punctuation), stretched to the audio's duration when known; :class:`StreamingRecognition` turns "this many seconds
of audio received" into partial and final sentence results.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .audio import AudioClock, audio_digest, char_seconds, duration_of

__all__ = [
    "PrefixMatcher",
    "RecognitionUpdate",
    "Sentence",
    "StreamingRecognition",
    "TranscriptRegistry",
    "Word",
    "plan_transcript",
]


@dataclass(frozen=True, slots=True)
class _Entry:
    audio: bytes
    text: str


class TranscriptRegistry:
    """Known audio and what it says. Keys are the SHA-256 of the exact bytes a recogniser receives."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, audio: bytes, text: str) -> str:
        """Remember that ``audio`` says ``text`` ("" means: nothing recognisable). Returns the key."""
        digest = audio_digest(audio)
        self._entries[digest] = _Entry(bytes(audio), text)
        return digest

    def lookup(self, audio: bytes) -> str | None:
        """The text registered for exactly ``audio``, or None."""
        entry = self._entries.get(audio_digest(audio))
        return None if entry is None else entry.text

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def matcher(self) -> PrefixMatcher:
        """A matcher over the recordings registered now."""
        return PrefixMatcher(list(self._entries.values()))


class PrefixMatcher:
    """Narrows registered recordings down to those the audio received so far is a prefix of."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._candidates = entries
        self._pos = 0

    def feed(self, chunk: bytes) -> None:
        """Account for the next ``chunk`` of received audio."""
        if not self._candidates or not chunk:
            self._pos += len(chunk)
            return
        start, end = self._pos, self._pos + len(chunk)
        self._candidates = [
            e for e in self._candidates if len(e.audio) >= end and e.audio[start:end] == chunk
        ]
        self._pos = end

    @property
    def candidate(self) -> _Entry | None:
        """The first recording still consistent with what was received."""
        return self._candidates[0] if self._candidates else None

    @property
    def exact(self) -> _Entry | None:
        """A recording equal to everything received, if any."""
        for entry in self._candidates:
            if len(entry.audio) == self._pos:
                return entry
        return None


# ------------------------------------------------------------------ timeline


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word: ``text`` (with a following space when there is one) and trailing punctuation."""

    text: str
    punctuation: str
    begin: float
    end: float

    def as_json(self) -> dict[str, object]:
        return {
            "begin_time": round(self.begin * 1000),
            "end_time": round(self.end * 1000),
            "text": self.text,
            "punctuation": self.punctuation,
        }


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a transcript, ``id`` from 1."""

    id: int
    text: str
    words: tuple[Word, ...]
    begin: float
    end: float

    def partial_text(self, nwords: int) -> str:
        """The sentence as recognised after its first ``nwords`` words."""
        return "".join(w.text + w.punctuation for w in self.words[:nwords]).strip()


_WORD = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
    r"|[A-Za-z0-9\u00c0-\u024f]+(?:['’.][A-Za-z0-9\u00c0-\u024f]+)*"
)
_SENTENCE_END = re.compile(r"[。！？!?；;…\n.]")


def plan_transcript(
    text: str, *, duration: float | None = None, chars_per_second: float = 4.0
) -> tuple[Sentence, ...]:
    """Lay ``text`` out in time: 4 Chinese characters / 12 letters a second scaled to ``chars_per_second``,
    pauses at punctuation, and the whole stretched to ``duration`` seconds when given."""
    matches = list(_WORD.finditer(text))
    if not matches:
        return ()
    speed = chars_per_second / 4.0
    raw: list[tuple[str, str, float, float, int, int, bool]] = []
    t = 0.0
    for i, m in enumerate(matches):
        gap_end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        gap = text[m.end() : gap_end]
        begin = t
        t += sum(char_seconds(ch) for ch in m.group()) / speed
        end = t
        t += sum(char_seconds(ch) for ch in gap) / speed
        if gap.strip():
            word, punct = m.group(), gap.replace("\n", "")
        else:
            word, punct = m.group() + gap.replace("\n", ""), ""
        raw.append((word, punct, begin, end, m.start(), gap_end, bool(_SENTENCE_END.search(gap))))
    scale = duration / t if duration and t > 0 else 1.0
    sentences: list[Sentence] = []
    current: list[Word] = []
    start_index = 0
    for word, punct, begin, end, _s, gap_end, ends in raw:
        current.append(Word(word, punct, begin * scale, end * scale))
        if ends:
            sentences.append(_sentence(len(sentences) + 1, text[start_index:gap_end], current))
            current, start_index = [], gap_end
    if current:
        sentences.append(_sentence(len(sentences) + 1, text[start_index:], current))
    return tuple(sentences)


def _sentence(sid: int, text: str, words: list[Word]) -> Sentence:
    return Sentence(sid, text.strip(), tuple(words), words[0].begin, words[-1].end)


# ------------------------------------------------------------------ streaming


@dataclass(frozen=True, slots=True)
class RecognitionUpdate:
    """A result to send: ``sentence`` recognised up to ``nwords`` words; ``final`` ends the sentence."""

    sentence: Sentence
    nwords: int
    final: bool
    audio_seconds: float

    @property
    def text(self) -> str:
        return self.sentence.text if self.final else self.sentence.partial_text(self.nwords)

    @property
    def billed_seconds(self) -> int:
        return max(1, math.ceil(self.audio_seconds))


class StreamingRecognition:
    """Partial and final results of one utterance, timed by the audio received.

    The transcript is the registered text of the recording the audio matches (by prefix while it arrives,
    exactly at the end), else ``default_text``. Once a result was produced the transcript is kept.
    """

    def __init__(
        self,
        registry: TranscriptRegistry,
        clock: AudioClock,
        *,
        default_text: str,
        format: str,
        sample_rate: int,
        chars_per_second: float = 4.0,
        silence: float = 0.8,
    ) -> None:
        self._matcher = registry.matcher()
        self._clock = clock
        self._default = default_text
        self._format = format
        self._rate = sample_rate
        self._cps = chars_per_second
        self._silence = silence
        self._plan: tuple[Sentence, ...] | None = None
        self._plan_text: str | None = None
        self._locked = False
        self._index = 0
        self._revealed = 0
        self._durations: dict[int, float] = {}

    @property
    def seconds(self) -> float:
        """Seconds of audio received."""
        return self._clock.seconds

    @property
    def transcript(self) -> str | None:
        """The text being recognised (None before any audio)."""
        return self._plan_text

    def feed(self, audio: bytes) -> list[RecognitionUpdate]:
        """Account for ``audio``; returns the results it makes due."""
        self._matcher.feed(audio)
        self._clock.feed(audio)
        if not self._locked:
            self._choose(self._matcher.candidate)
        return self._advance(final_all=False)

    def finish(self) -> list[RecognitionUpdate]:
        """No more audio: every remaining sentence becomes final."""
        if self._clock.nbytes == 0:
            return []
        if not self._locked:
            self._choose(self._matcher.exact)
        return self._advance(final_all=True)

    def _choose(self, entry: _Entry | None) -> None:
        if entry is None:
            text, duration = self._default, None
        else:
            key = id(entry)
            if key not in self._durations:
                self._durations[key] = duration_of(entry.audio, self._format, self._rate)
            text, duration = entry.text, self._durations[key]
        if text != self._plan_text or self._plan is None:
            self._plan_text = text
            self._plan = plan_transcript(text, duration=duration, chars_per_second=self._cps)

    def _advance(self, *, final_all: bool) -> list[RecognitionUpdate]:
        plan = self._plan or ()
        t = self._clock.seconds
        out: list[RecognitionUpdate] = []
        while self._index < len(plan):
            sentence = plan[self._index]
            last = self._index == len(plan) - 1
            done_at = sentence.end + self._silence if last else plan[self._index + 1].begin
            if final_all or t >= done_at:
                out.append(RecognitionUpdate(sentence, len(sentence.words), True, t))
                self._index += 1
                self._revealed = 0
                continue
            revealed = sum(1 for w in sentence.words if w.end <= t)
            if revealed > self._revealed:
                self._revealed = revealed
                out.append(RecognitionUpdate(sentence, revealed, False, t))
            break
        if out:
            self._locked = True
        return out
