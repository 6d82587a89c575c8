"""Text for speech: the cleaned answer cut into TTS segments while it streams.

The :class:`~qwen_gateway.voice.cleaner.StreamingCleaner` turns the answer's deltas into speakable text; this
module cuts that text into segments at sentence ends (``。！？!?；;``, line ends, and ``.`` only where it ends a
sentence, not in ``3.14``, ``e.g.``, ``Dr. Smith`` or ``...``, nor ``?`` in ``example.com/a?b=1``), with a short
first segment (time to first audio) and a maximum length, never inside a number or a construct still arriving; a
segment that ends with ``。！？；`` or an ASCII ``?`` or ``;`` leaves as soon as that mark arrives, not with the next
delta, and so does a first segment ending at ``，、：`` or at an ASCII ``,`` after a word (``Great question,``;
``:`` after a label: ``Note:``); one ending with ``.`` leaves with the first character of the next word
(``Paris. I``), which tells it from ``etc. and``.

Which character ends a sentence or makes a pause, and in which context, is data rather than code spread over
functions: :data:`_RULES` maps each mark to its kind, what it allows (a sentence end or a pause) and what it takes
along (the marks and closing quotes after a full stop, the rest of a run of dots); the small ordered table
:data:`_CONTEXT` lists the contexts that make a mark no boundary or keep it undecided until more text arrives
(``3.14``, ``Mr.``, ``etc. and``, ``example.com/a?b``, ``1,000``). One function, :func:`_boundary_at`, reads
both; :class:`SpeechSegmenter` decides from its answer where to cut.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import NamedTuple

from .cleaner import CLOSERS, StreamingCleaner, is_speakable, is_token_break, is_wide

__all__ = ["SpeechSegmenter"]


class SpeechSegmenter:
    """Cuts a streamed chat answer into sanitised segments for TTS.

    Feed each content delta to :meth:`feed`; send what it returns to TTS at once; call :meth:`flush` when the
    answer ends. After :meth:`flush` the segmenter starts over, ready for another answer.

    Args:
        min_chars: a segment ends at the first sentence end once it holds this many letters/digits (shorter
            sentences are joined to the next).
        max_chars: a segment without a sentence end is cut (at the last comma-like pause, else the last space,
            else between two CJK characters) before it grows past this many characters.
        first_min_chars: the first segment may end at a sentence end *or* a comma-like pause once it holds this
            many letters/digits, so that speech starts early.

    When a segment is released: by the delta that brings its sentence end, if that end is one of
    ``。！？；｡`` or an ASCII ``?`` or ``;`` (``好吗?``, ``you?``, ``"OK?"``); marks and closing quotes
    that arrive after it (``？！``, ``。”``, ``?!``) are dropped from the next segment. The first segment's
    pause leaves with its mark too when that is ``，``, ``、`` or ``：``, an ASCII ``,`` after a plain word
    (``Great question,``, ``Sure,``, ``好的,``), or an ASCII ``:`` after a plain word that does not start
    lowercase (``Note:``, ``注意:``): such a mark is a pause whatever follows (``Yes,1`` too), and no
    number has a letter before its ``,`` or ``:``. A ``.`` after a word (not ``e.g.``, ``Mr.``, ``U.S.``)
    needs the first character of the next word (lowercase: ``etc. and`` goes on; ``3.14``, ``example.com``
    and ``...`` are no ends), and the cleaner writes that character as soon as it arrives, so the sentence
    leaves with the delta that brings it (``Paris.`` + `` It``: one delta after the ``.``); a word that may
    be a URL (``H``, ``Ht``, ``Www``) is written only once it cannot be one (``Here``). Other ends wait for
    the next character, so the segment leaves with a later delta: an ASCII ``!`` (it may open
    ``![image](...)`` or ``!=``), a ``?!;`` inside an address-like word (``example.com/a?b=1``), a ``,`` or
    ``:`` after a digit or a word that is not plain (``1,000``, ``10:30``, ``example.com/a,b``,
    ``f(a,1)``), and a ``:`` after a lowercase word (``localhost:8080``, ``python:3.12``; ``here's how:``
    waits too).
    """

    def __init__(
        self, min_chars: int = 12, max_chars: int = 100, *, first_min_chars: int = 6
    ) -> None:
        if not 1 <= first_min_chars <= max_chars // 2 or not 1 <= min_chars <= max_chars // 2:
            raise ValueError(
                "need 1 <= first_min_chars <= max_chars/2 and 1 <= min_chars <= max_chars/2, got "
                f"first_min_chars={first_min_chars}, min_chars={min_chars}, max_chars={max_chars}"
            )
        self._min = min_chars
        self._max = max_chars
        self._first_min = first_min_chars
        self._cleaner = StreamingCleaner()
        self._buf = ""
        self._segments = 0
        self._open_end = False  # the last cut: a sentence end that ended the text so far

    @property
    def pending(self) -> str:
        """Sanitised text that is held back until it can be cut (for diagnostics)."""
        return self._buf

    def feed(self, delta: str) -> list[str]:
        """Take the next delta; return the segments now ready (possibly none)."""
        self._buf += self._cleaner.feed(delta)
        return self._take(final=False)

    def flush(self) -> list[str]:
        """End of the answer: return the remaining segments, and start over."""
        self._buf += self._cleaner.finish()
        out = self._take(final=True)
        rest = _tidy(self._buf)
        if is_speakable(rest):
            out.append(rest)
        self._cleaner = StreamingCleaner()
        self._buf = ""
        self._segments = 0
        self._open_end = False
        return out

    # ------------------------------------------------------------------
    def _take(self, *, final: bool) -> list[str]:
        out: list[str] = []
        if self._open_end:  # the rest of the marks and closing quotes of the sentence last cut
            rest = self._buf.lstrip(_STOP_TAIL)
            self._open_end = not rest
            self._buf = rest
        while self._buf:
            cut = self._find_cut(final)
            if cut is None:
                break
            segment = self._buf[:cut]
            self._buf = self._buf[cut:]
            self._open_end = not self._buf and segment[-1] in _STOP_TAIL
            segment = _tidy(segment)
            if is_speakable(segment):
                out.append(segment)
                self._segments += 1
        return out

    def _find_cut(self, final: bool) -> int | None:
        """Where the next segment ends in the buffer, or None to wait for more text."""
        buf = self._buf
        first = self._segments == 0
        need = self._first_min if first else self._min
        count = 0  # letters/digits in buf[:i]
        last_pause: int | None = None
        last_space: int | None = None
        i = 0
        while i < len(buf):
            if i >= self._max:
                return self._forced_cut(buf, last_pause, last_space)
            c = buf[i]
            boundary = _boundary_at(buf, i, final) if c in _RULES else None
            if boundary is None:
                if c.isalnum():
                    count += 1
                elif c == " ":
                    last_space = i + 1
                i += 1
                continue
            end = boundary.end
            if boundary.cut is Cut.END:
                if end is None:
                    return (
                        None
                        if len(buf) <= self._max
                        else self._forced_cut(buf, last_pause, last_space)
                    )
                count += sum(1 for c in buf[i:end] if c.isalnum())
                if end > self._max:
                    return self._forced_cut(buf, last_pause, last_space)
                if count >= need:
                    return end
                last_pause = end
                i = end
                continue
            if end is None:  # a pause still undecided: wait, unless the buffer is already too long
                if len(buf) <= self._max:
                    return None
            elif end <= self._max:
                last_pause = end
                if first and count >= self._first_min:
                    return end
            i += 1  # a pause's run is read on: a sentence may end inside it ("……。")
        return None

    def _forced_cut(self, buf: str, last_pause: int | None, last_space: int | None) -> int:
        """A cut at or before ``max_chars`` for text that has no sentence end in time."""
        if last_pause:
            return last_pause
        if last_space:
            return last_space
        for k in range(self._max, 0, -1):
            if is_wide(buf[k - 1]) or is_wide(buf[k]):
                return k
        for k in range(self._max, 0, -1):  # not inside a number or a word
            a, b = buf[k - 1], buf[k]
            if not ((_numeric(a) and _numeric(b)) or (a.isalpha() and b.isalpha())):
                return k
        return self._max


# ======================================================================================================
# sentence ends and pauses (on sanitised text): one table of marks, one table of contexts
# ======================================================================================================


class Cut(enum.Enum):
    """What a boundary lets the segmenter do there."""

    END = "sentence end"  # a segment may end here once long enough
    PAUSE = "pause"  # a first segment may end here; a long one is cut here rather than mid-clause


class Kind(enum.Enum):
    """The kinds of mark in :data:`_RULES`; :data:`_CONTEXT` refines them by kind."""

    LINE = "line end"
    STOP = "full stop"  # CJK, fullwidth: an end at once
    ASCII_STOP = "ASCII ! ? ;"  # an end, but also found inside an address or a query string
    PERIOD = "ASCII ."  # an end only after a word, before the next sentence
    PAUSE = "CJK pause"  # at once
    ASCII_PAUSE = "ASCII , :"  # also found inside numbers (1,000, 10:30) and addresses
    LONG_PAUSE = "dash, ellipsis"


class _Rule(NamedTuple):
    kind: Kind
    cut: Cut
    takes: frozenset[str] = frozenset()  # taken into the boundary when they follow the mark


def _rules() -> dict[str, _Rule]:
    stops = "。！？；｡"
    ascii_stops = "!?;"
    # a full stop takes along the marks and the closing quotes and brackets after it: "？！", "。”", "?)"
    stop_tail = frozenset(stops + ascii_stops) | CLOSERS
    return {
        "\n": _Rule(Kind.LINE, Cut.END),
        **{c: _Rule(Kind.STOP, Cut.END, stop_tail) for c in stops},
        **{c: _Rule(Kind.ASCII_STOP, Cut.END, stop_tail) for c in ascii_stops},
        ".": _Rule(Kind.PERIOD, Cut.END, CLOSERS),
        **{c: _Rule(Kind.PAUSE, Cut.PAUSE) for c in "，、："},
        **{c: _Rule(Kind.ASCII_PAUSE, Cut.PAUSE, frozenset(c + ".")) for c in ",:"},
        **{c: _Rule(Kind.LONG_PAUSE, Cut.PAUSE, frozenset(c + ".")) for c in "…—"},
    }


#: Every character that may end a sentence or make a pause, with what it takes along after it (a closing
#: quote or bracket is never a boundary itself: the stop or the period before it takes it along).
_RULES = _rules()
#: The dots of ``..`` and ``...``: read as one long pause (the ``.`` rule's ellipsis context).
_ELLIPSIS = _Rule(Kind.LONG_PAUSE, Cut.PAUSE, frozenset("."))
#: What may follow a sentence cut at the end of the text so far, and still belongs to it.
_STOP_TAIL = "".join(sorted(_RULES["。"].takes))


class Verdict(enum.Enum):
    """What a context makes of a mark."""

    NONE = "no boundary"
    WAIT = "undecided until more text arrives; at the end of the answer, the rule's boundary"
    CUT = "the rule's boundary, after what the mark takes along"
    AT_MARK = "the rule's boundary right after the mark, taking nothing along"
    ELLIPSIS = "the first dot of a run of dots: a long pause"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ABBREVIATIONS = _words(
    """mr mrs ms dr prof sr jr st mt vs cf al fig figs no nos vol pp approx est dept inc ltd co corp
    jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e a.m p.m u.s u.k ph.d"""
)
_ABBREV_WORD = re.compile(r"[A-Za-z][A-Za-z.]*$")
#: A word that is an address or a path: a domain (letter.letter) or a "/" not between digits (1/2).
_ADDRESS = re.compile(r"[A-Za-z]\.[A-Za-z]|(?<!\d)/|/(?!\d)")
#: A word of letters (in any script), maybe joined by an apostrophe or a hyphen (``don't``, ``well-known``).
_PLAIN_WORD_TAIL = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*\Z")

# The contexts read ``buf``, the mark's index ``i`` and ``j``, the index after what the mark takes along.


def _dot_follows(buf: str, i: int, j: int) -> bool:
    return i + 1 < len(buf) and buf[i + 1] == "."


def _dot_before(buf: str, i: int, j: int) -> bool:
    return i > 0 and buf[i - 1] == "."


def _word_pause(buf: str, i: int, j: int) -> bool:
    """A ``,`` after a plain word (``question,``, ``Sure,``, ``好的,``), a ``:`` after one not lowercase.

    A ``:`` after a label (``Note:``, ``Tip:``, ``注意:``) is a pause; after a lowercase word it may be a host
    or an image name with a number to come (``localhost:8080``, ``python:3.12``). No number has a letter
    before its ``,`` or ``:``, so such a pause ends right after its mark (a ``.`` after it is not taken in),
    and the cut is the same whether the next character has arrived or not.
    """
    word = _plain_word_before(buf, i)
    return word is not None and (buf[i] == "," or not word[0].islower())


def _at_end(buf: str, i: int, j: int) -> bool:
    return j == len(buf)


def _address_at_end(buf: str, i: int, j: int) -> bool:
    return j == len(buf) and _in_address(buf, i)


def _address_goes_on(buf: str, i: int, j: int) -> bool:
    """A query string or a path that goes on after its ``?``: ``example.com/a?b=1``."""
    return j < len(buf) and not is_token_break(buf[j]) and _in_address(buf, i)


def _line_or_wide_follows(buf: str, i: int, j: int) -> bool:
    return j < len(buf) and (buf[j] == "\n" or is_wide(buf[j]))


def _word_goes_on(buf: str, i: int, j: int) -> bool:
    """``3.14``, ``e.g``, ``example.com``, ``"a.b"``."""
    return j < len(buf) and not buf[j].isspace()


def _after_abbreviation(buf: str, i: int, j: int) -> bool:
    """``e.g.``, ``Mr.``, ``U.S.``, ``J.`` (one capital letter), ``a.m.``."""
    word = _ABBREV_WORD.search(buf, max(0, i - 12), i)
    if word is None:
        return False
    w = word.group(0)
    return w.lower() in _ABBREVIATIONS or (len(w) == 1 and w.isupper()) or "." in w


def _spaces_then_end(buf: str, i: int, j: int) -> bool:
    return _after_spaces(buf, j) == len(buf)


def _spaces_then_lowercase(buf: str, i: int, j: int) -> bool:
    """``etc. and``: the sentence goes on."""
    m = _after_spaces(buf, j)
    return m < len(buf) and buf[m].islower()


def _digit_follows(buf: str, i: int, j: int) -> bool:
    """``1,000``, ``10:30``."""
    return j < len(buf) and buf[j].isdigit()


_Context = Callable[[str, int, int], bool]

#: The contexts that change what a mark of :data:`_RULES` is, by kind, in order: the first that holds decides,
#: and a mark that none holds for is its rule's boundary (``Verdict.CUT``).
_CONTEXT: tuple[tuple[tuple[Kind, ...], _Context, Verdict], ...] = (
    # "..." is one long pause (its first dot), not sentence ends
    ((Kind.PERIOD,), _dot_follows, Verdict.ELLIPSIS),
    ((Kind.PERIOD,), _dot_before, Verdict.NONE),
    # "question," "Note:": a pause whatever follows
    ((Kind.ASCII_PAUSE,), _word_pause, Verdict.AT_MARK),
    # "example.com/a?b=1": an ASCII stop inside an address waits to see whether the word goes on
    ((Kind.ASCII_STOP,), _address_at_end, Verdict.WAIT),
    ((Kind.ASCII_STOP,), _address_goes_on, Verdict.NONE),
    # "3." "1," "10:" "……": a number or a longer run may follow
    ((Kind.PERIOD, Kind.ASCII_PAUSE, Kind.LONG_PAUSE), _at_end, Verdict.WAIT),
    # a "." ends a sentence before a line end or CJK text, else only after a word, before the next sentence
    ((Kind.PERIOD,), _line_or_wide_follows, Verdict.CUT),
    ((Kind.PERIOD,), _word_goes_on, Verdict.NONE),
    ((Kind.PERIOD,), _after_abbreviation, Verdict.NONE),
    ((Kind.PERIOD,), _spaces_then_end, Verdict.WAIT),
    ((Kind.PERIOD,), _spaces_then_lowercase, Verdict.NONE),
    ((Kind.ASCII_PAUSE,), _digit_follows, Verdict.NONE),
)


#: :data:`_CONTEXT` by kind, in its order.
_CONTEXT_OF = {
    kind: tuple((holds, verdict) for kinds, holds, verdict in _CONTEXT if kind in kinds)
    for kind in Kind
}


class Boundary(NamedTuple):
    """A sentence end or pause at a mark: ``end`` is the index after it, or None while undecided."""

    cut: Cut
    end: int | None


def _boundary_at(buf: str, i: int, final: bool) -> Boundary | None:
    """Whether a sentence ends or a pause is made at ``buf[i]``, by :data:`_RULES` and :data:`_CONTEXT`.

    ``final``: no more text will come, so nothing is left undecided.
    """
    rule = _RULES.get(buf[i])
    if rule is None:
        return None
    while True:
        j = i + 1
        while j < len(buf) and buf[j] in rule.takes:
            j += 1
        verdict = Verdict.CUT
        for holds, context_verdict in _CONTEXT_OF[rule.kind]:
            if holds(buf, i, j):
                verdict = context_verdict
                break
        if verdict is not Verdict.ELLIPSIS:
            break
        rule = _ELLIPSIS
    if verdict is Verdict.NONE:
        return None
    if verdict is Verdict.WAIT and not final:
        return Boundary(rule.cut, None)
    return Boundary(rule.cut, i + 1 if verdict is Verdict.AT_MARK else j)


def _after_spaces(buf: str, j: int) -> int:
    while j < len(buf) and buf[j] == " ":
        j += 1
    return j


def _in_address(buf: str, i: int) -> bool:
    """True when the word that ``buf[i]`` ends looks like an address (``example.com``, ``/docs/a``)."""
    k = i
    while k > 0 and not is_token_break(buf[k - 1]):
        k -= 1
    return _ADDRESS.search(buf, k, i) is not None


def _plain_word_before(buf: str, i: int) -> str | None:
    """The plain word that ``buf[:i]`` ends with, if it starts after a space, wide text, ``"`` or the start.

    None after a digit, or after a word with other characters in it (``example.com/a``, ``f(a``,
    ``x=a``, ``MP3``).
    """
    m = _PLAIN_WORD_TAIL.search(buf, max(0, i - 40), i)
    if m is None:
        return None
    k = m.start()
    return m.group(0) if k == 0 or is_token_break(buf[k - 1]) or buf[k - 1] == '"' else None


# ======================================================================================================
# segments
# ======================================================================================================


def _numeric(c: str) -> bool:
    return c.isdigit() or c in ".,:%"


def _tidy(segment: str) -> str:
    """One segment as TTS gets it: one line, single spaces, none between CJK, no leading pause."""
    text = " ".join(segment.split())
    text = _SPACE_BETWEEN_WIDE.sub("", text)
    return text.strip().lstrip("，、；：。,;:.!?！？ ").strip()


_WIDE_CLASS = "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef“”‘’…—"
_WIDE_PUNCT_CLASS = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff1f"
_SPACE_BETWEEN_WIDE = re.compile(
    f"(?:(?<=[{_WIDE_CLASS}]) (?=[{_WIDE_CLASS}]))|(?:(?<=[{_WIDE_PUNCT_CLASS}]) )|(?: (?=[{_WIDE_PUNCT_CLASS}]))"
)
