"""Text for speech: a chat answer made speakable, whole or while it streams.

A chat model writes for the eye: markdown, code, tables, links, emoji, LaTeX. Sent to TTS as is, those produce
strange sounds (the seed service's first admitted problem). This module

* removes what cannot be spoken: markdown syntax (headings, emphasis, lists, quotes, rules, table pipes; a link
  is kept as its text, an image is dropped), fenced code blocks (skipped), URLs, HTML tags, emoji and pictographs
  (ZWJ sequences, flags, keycaps keep their digit), stray symbols; LaTeX is turned into plain text
  (``\\frac{a}{b}`` -> ``a/b``, ``x^2`` -> ``x²``, ``\\alpha`` -> ``α``);
* keeps words in every script, numbers as written (``3.14``, ``1,000``, ``50%``, ``-2``, ``2024-01-01``,
  ``10:30``), Chinese and English punctuation, and pauses: each line (heading, list item, table row,
  paragraph) ends with a sentence stop, table cells are separated by a comma.

:func:`sanitize` cleans a complete text. :class:`StreamingCleaner` takes the deltas of a streamed answer (the
:class:`~qwen_gateway.voice.segmenter.SpeechSegmenter` reads its output). Both are one incremental cleaner whose
output depends only on the text, not on how it was split into deltas: it consumes a construct only once it is
complete (an open code block, link, inline code or math span, a table row, a URL or number still arriving is held
back) and a word once the character after it shows it complete (or once it ends with ``?``, ``!`` or ``;``, or a
``,`` or ``:`` right after a letter, which nothing before them reads past; a URL scheme like ``https:`` still
waits); after ``. `` it writes the first character of the next word at once when that is a letter, a digit or an
opening ``"'(`` that cannot start a URL, so the segments of any split say the same words as ``sanitize`` of the
whole answer, and a sentence leaves as soon as its end can be told (see the segmenter's module).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable

__all__ = ["CLOSERS", "StreamingCleaner", "is_speakable", "is_token_break", "is_wide", "sanitize"]


def sanitize(text: str) -> str:
    """The speakable form of a complete text: one line per source line that has something to say.

    Lines end with a sentence stop (``。`` after Chinese, ``.`` otherwise) unless they already end with
    punctuation. The result may be empty (an answer that is all code or emoji).
    """
    cleaner = StreamingCleaner()
    return (cleaner.feed(text) + cleaner.finish()).strip()


def is_speakable(text: str) -> bool:
    """True when ``text`` has at least one letter or digit (in any script) to speak."""
    return any(c.isalnum() for c in text)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ======================================================================================================
# characters
# ======================================================================================================


def _is_cjk(c: str) -> bool:
    """A CJK ideograph, kana, bopomofo or hangul character."""
    o = ord(c)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x3040 <= o <= 0x30FF
        or 0xAC00 <= o <= 0xD7AF
        or 0xF900 <= o <= 0xFAFF
        or 0x2E80 <= o <= 0x2FDF
        or 0x3100 <= o <= 0x312F
        or 0x20000 <= o <= 0x3134F
    )


def is_wide(c: str) -> bool:
    """CJK text or CJK/fullwidth punctuation: no spaces are needed around it."""
    o = ord(c)
    return _is_cjk(c) or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF or c in "“”‘’…—"


#: Closing quotes and brackets: they stay with the sentence stop or pause before them.
CLOSERS = frozenset("\"'”’」』）)】》〉]")


def is_token_break(c: str) -> bool:
    """A character after which a held-back token cannot continue (whitespace or wide text)."""
    return c.isspace() or is_wide(c)


_KEEP_PUNCT = frozenset(
    "，。！？；：、,.!?;:…‥'\"“”‘’「」『』【】〔〕〖〗（）()《》〈〉—–-·・%‰℃℉°×÷±≤≥≠≈√∞∑∏∫∂∆∇∈¬∧∨′″&⁺⁻⁼⁽⁾"
)
_PAUSE_AFTER_PUNCT = frozenset("，。！？；：、,.!?;:…")
_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%，。、；：！？）」』》〉】…‰")
_NO_SPACE_AFTER = frozenset("([{（「『《〈【")
_CURRENCY = frozenset("¥￥€£₩₹$＄")
_OPERATORS = frozenset("+=<>")
_SUPERSCRIPT = str.maketrans("0123456789+-=()ni", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ")
_SUPERSCRIPTABLE = frozenset("0123456789+-=()ni")


def _plain(c: str, prev: str, nxt: str) -> str:
    """What a character outside any construct becomes, given its neighbours ("" = dropped)."""
    if c.isspace():
        return " "
    cat = unicodedata.category(c)
    if cat[0] in "LN":
        return c
    if cat in ("Mn", "Mc"):
        o = ord(c)
        return "" if 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF else c
    if c == "_":
        return " " if prev.isalnum() and nxt.isalnum() else ""
    if c == "/":
        return c if prev and nxt and not prev.isspace() and not nxt.isspace() else " "
    if c == "@":
        return c if prev.isalnum() and nxt.isalnum() else ""
    if c in ("~", "～"):
        return c if prev.isdigit() and nxt.isdigit() else ""
    if c in _CURRENCY:
        return c if nxt.isdigit() or prev.isdigit() else ""
    if c in _OPERATORS:
        ok = (prev == "" or prev.isalnum() or prev.isspace()) and (nxt.isalnum() or nxt.isspace())
        return c if ok else ""
    if c in _KEEP_PUNCT:
        return c
    if c == "•":
        return " "
    return ""


def _filter_text(text: str) -> str:
    """``_plain`` over a standalone string (code span content, LaTeX output)."""
    out = []
    for k, c in enumerate(text):
        out.append(_plain(c, text[k - 1] if k else "", text[k + 1] if k + 1 < len(text) else ""))
    return "".join(out)


# ======================================================================================================
# LaTeX
# ======================================================================================================

_GREEK = {
    name: chr(code)
    for name, code in {
        "alpha": 0x3B1, "beta": 0x3B2, "gamma": 0x3B3, "delta": 0x3B4, "epsilon": 0x3B5,
        "varepsilon": 0x3B5, "zeta": 0x3B6, "eta": 0x3B7, "theta": 0x3B8, "vartheta": 0x3D1,
        "iota": 0x3B9, "kappa": 0x3BA, "lambda": 0x3BB, "mu": 0x3BC, "nu": 0x3BD, "xi": 0x3BE,
        "pi": 0x3C0, "rho": 0x3C1, "sigma": 0x3C3, "tau": 0x3C4, "upsilon": 0x3C5, "phi": 0x3C6,
        "varphi": 0x3C6, "chi": 0x3C7, "psi": 0x3C8, "omega": 0x3C9, "Gamma": 0x393,
        "Delta": 0x394, "Theta": 0x398, "Lambda": 0x39B, "Xi": 0x39E, "Pi": 0x3A0, "Sigma": 0x3A3,
        "Upsilon": 0x3A5, "Phi": 0x3A6, "Psi": 0x3A8, "Omega": 0x3A9,
    }.items()
}  # fmt: skip
_LATEX_SYMBOLS = {
    **_GREEK,
    "times": "×", "cdot": "·", "div": "÷", "pm": "±", "mp": "∓", "le": "≤", "leq": "≤",
    "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈", "sim": "~", "equiv": "≡",
    "infty": "∞", "sum": "∑", "prod": "∏", "int": "∫", "oint": "∮", "partial": "∂", "nabla": "∇",
    "in": "∈", "notin": "∉", "subset": "⊂", "cup": "∪", "cap": "∩", "forall": "∀", "exists": "∃",
    "neg": "¬", "land": "∧", "lor": "∨", "degree": "°", "circ": "°", "prime": "′", "ldots": "…",
    "cdots": "…", "dots": "…", "percent": "%", "to": " ", "rightarrow": " ", "Rightarrow": " ",
    "leftarrow": " ", "Leftarrow": " ", "implies": " ", "iff": " ", "mapsto": " ",
    "quad": " ", "qquad": " ", "angle": "∠", "perp": "⊥", "parallel": "∥", "triangle": "△",
}  # fmt: skip
_LATEX_FUNCTIONS = _words(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min sup inf det "
    "gcd mod arg deg dim ker"
)
_LATEX_ONE_ARG_KEEP = _words(
    "text textbf textit textrm texttt mathrm mathbf mathit mathsf mathtt mathbb mathcal mathfrak "
    "operatorname boldsymbol bm vec hat bar tilde dot ddot overline underline overrightarrow "
    "widehat widetilde mbox emph"
)
_LATEX_DROP = _words(
    "left right big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr displaystyle textstyle limits "
    "nolimits nonumber notag label tag"
)
_LATEX_ARGS = {"frac": 2, "dfrac": 2, "tfrac": 2, "cfrac": 2, "binom": 2, "sqrt": 1}
#: Commands recognised outside math delimiters (elsewhere a backslash is just dropped).
_LATEX_BARE = frozenset(_LATEX_SYMBOLS) | frozenset(_LATEX_ARGS) | _LATEX_ONE_ARG_KEEP


def _latex_group(src: str, i: int) -> tuple[str, int]:
    """The argument at ``src[i:]`` (a braced group, a command or one character) and the index after it."""
    while i < len(src) and src[i] == " ":
        i += 1
    if i >= len(src):
        return "", i
    if src[i] == "{":
        depth = 0
        for k in range(i, len(src)):
            if src[k] == "{" and (k == 0 or src[k - 1] != "\\"):
                depth += 1
            elif src[k] == "}" and src[k - 1] != "\\":
                depth -= 1
                if depth == 0:
                    return src[i + 1 : k], k + 1
        return src[i + 1 :], len(src)
    if src[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.?)", src[i:])
        assert m is not None
        return m.group(0), i + len(m.group(0))
    return src[i], i + 1


def _latex_to_text(src: str) -> str:
    """Plain text for a LaTeX math fragment (delimiters already removed)."""
    out: list[str] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.?)", src[i:])
            assert m is not None
            name = m.group(1)
            i += len(m.group(0))
            if name in ("frac", "dfrac", "tfrac", "cfrac", "binom"):
                a, i = _latex_group(src, i)
                b, i = _latex_group(src, i)
                sep = " " if name == "binom" else "/"
                out.append(f"{_wrap(_latex_to_text(a))}{sep}{_wrap(_latex_to_text(b))}")
            elif name == "sqrt":
                while i < len(src) and src[i] == " ":
                    i += 1
                if i < len(src) and src[i] == "[":
                    close = src.find("]", i)
                    i = len(src) if close < 0 else close + 1
                a, i = _latex_group(src, i)
                out.append("√" + _wrap(_latex_to_text(a)))
            elif name in _LATEX_ONE_ARG_KEEP:
                a, i = _latex_group(src, i)
                out.append(_latex_to_text(a) if not name.startswith("text") else a)
            elif name in ("begin", "end"):
                _, i = _latex_group(src, i)
                out.append(" ")
            elif name in _LATEX_SYMBOLS:
                out.append(_LATEX_SYMBOLS[name])
            elif name in _LATEX_FUNCTIONS:
                out.append(f" {name} ")
            elif name == "\\":
                out.append("; ")
            elif name in ("%", "$", "&", "#", "{", "}", "_"):
                out.append(name)
            elif name in (",", ";", ":", "!", " ") or name in _LATEX_DROP:
                out.append(" ")
            # any other command: dropped, its arguments are read as plain groups
        elif c in "^_":
            arg, i = _latex_group(src, i + 1)
            text = _latex_to_text(arg).strip()
            if c == "^" and text and all(ch in _SUPERSCRIPTABLE for ch in text):
                out.append(text.translate(_SUPERSCRIPT))
            else:
                out.append(text)
        elif c in "{}":
            i += 1
        elif c in "&~":
            out.append(" ")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _wrap(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and not text.isalnum() and not re.fullmatch(r"[\d.,]+", text):
        return f"({text})"
    return text


# ======================================================================================================
# the writer: whitespace, pauses and line ends
# ======================================================================================================


class _Writer:
    """Collects cleaned text: collapses spaces, places pauses, ends each line with a stop."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._last = ""  # last character written on the current line ("" at its start)
        self._cjk = False  # the current line has CJK text
        self._space = False  # a space is pending
        self._pause = False  # a comma-like pause is pending

    def take(self) -> str:
        out = "".join(self._parts)
        self._parts.clear()
        return out

    def text(self, s: str) -> None:
        for c in s:
            self.char(c)

    def char(self, c: str) -> None:
        if not c:
            return
        if c.isspace():
            if self._last:
                self._space = True
            return
        last = self._last
        if c in "，,、" and last and last in _PAUSE_AFTER_PUNCT:
            return  # no doubled pauses
        if self._pause:
            self._pause = False
            if c not in _PAUSE_AFTER_PUNCT and c not in CLOSERS:
                wide = self._cjk or is_wide(last) or is_wide(c)
                self._parts.append("，" if wide else ",")
                last = self._last = "，" if wide else ","
                self._space = not wide
        if self._space:
            self._space = False
            if not (
                (is_wide(last) and is_wide(c)) or c in _NO_SPACE_BEFORE or last in _NO_SPACE_AFTER
            ):
                self._parts.append(" ")
        self._parts.append(c)
        self._last = c
        if _is_cjk(c):
            self._cjk = True

    def pause(self) -> None:
        """A comma-like pause, written only if more text follows on this line."""
        if self._last and self._last not in _PAUSE_AFTER_PUNCT:
            self._pause = True

    def end_line(self) -> None:
        """End the current line: add a stop if it says something and has none, then a newline."""
        self._space = self._pause = False
        if not self._last:
            return
        if self._last not in _PAUSE_AFTER_PUNCT:
            self._parts.append("。" if self._cjk else ".")
        self._parts.append("\n")
        self._last = ""
        self._cjk = False


# ======================================================================================================
# the cleaner: block structure line by line, inline constructs within a line
# ======================================================================================================

_NEED = "need"  # a construct cannot be decided before more text arrives
_MAX_SPAN = 300  # farthest a closing delimiter is looked for; beyond it the opener is literal

_FENCE_OPEN = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")
_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_SETEXT = re.compile(r"^ {0,3}=+[ \t]*$")
_TASK_BOX = re.compile(r"\[[ xX]\][ \t]")
_URL = re.compile(
    r"(?:https?://|ftp://|www\.)[^\s<>\"'`\u3000-\u303f\u3400-\u9fff\uac00-\ud7af\uff00-\uffef]*",
    re.IGNORECASE,
)
_URL_PREFIXES = ("http://", "https://", "ftp://", "www.")
_HTML_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]*)?/?>")
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto):[^\s<>]*>", re.IGNORECASE)
_MONEY = re.compile(r"\$\d[\d,]*(?:\.\d+)?(?:[kKmMbB]|万|亿)?(?![\w.^_{])")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]{2,8});")
_PAUSE_TAGS = frozenset({"br", "p", "div", "li", "tr", "td", "th", "hr"})
_ARROWS = ("<=>", "<->", "-->", "==>", "->", "=>", "<-", "→", "⇒", "←", "⇐", "↔", "⇔")
_COMPARISONS = {"<=": "≤", ">=": "≥", "!=": "≠"}


class StreamingCleaner:
    """Incremental cleaner: ``feed`` raw deltas, get the cleaned text that is final so far.

    What :meth:`feed` returns for the deltas of a text, followed by :meth:`finish`, is the same whatever the
    split, and, stripped, equals :func:`sanitize` of the whole text. After :meth:`finish` the cleaner starts over.
    """

    def __init__(self) -> None:
        self._w = _Writer()
        self._line = ""  # the current, incomplete source line
        self._pos = 0  # how much of it was consumed
        self._started = False  # its block kind is known and its body is being consumed
        self._scanned = 0  # how much of the line was searched for token boundaries
        self._limit = 0  # index after its last boundary character: tokens before it are complete
        self._fence: tuple[str, int] | None = None  # inside a fenced code block: (char, length)
        self._math: str | None = None  # inside a display math block: its closer
        self._math_text: list[str] = []

    def feed(self, text: str) -> str:
        """Take the next delta; return the cleaned text it completes (possibly empty)."""
        self._line += text
        while (nl := self._line.find("\n")) >= 0:
            line = self._line[:nl]
            self._line = self._line[nl + 1 :]
            self._complete_line(line)
            self._pos = self._scanned = self._limit = 0
            self._started = False
        self._partial_line()
        return self._w.take()

    def finish(self) -> str:
        """End of the text: return the rest (an unclosed construct is read as plain text), and start over."""
        line, self._line = self._line, ""
        if line or self._started:
            self._complete_line(line)
        if self._math is not None:  # an unclosed display block: say what it held
            self._emit_math("\n".join(self._math_text))
        self._fence = self._math = None
        self._math_text = []
        self._pos = self._scanned = self._limit = 0
        self._started = False
        return self._w.take()

    # --- lines ---------------------------------------------------------------------------------

    def _complete_line(self, line: str) -> None:
        if self._fence is not None:
            char, length = self._fence
            stripped = line.strip()
            if stripped and set(stripped) == {char} and len(stripped) >= length:
                self._fence = None
            return
        if self._math is not None:
            end = line.find(self._math)
            if end < 0:
                self._math_text.append(line)
                return
            self._math_text.append(line[:end])
            closer = self._math
            self._math = None
            self._emit_math("\n".join(self._math_text))
            self._math_text = []
            self._body(line, end + len(closer), final=True)
            self._w.end_line()
            return
        if not self._started:
            start = self._block_start(line, complete=True)
            if start is None:
                return  # the line was handled as a block of its own
            assert start != _NEED
            self._pos = int(start)
            self._started = True
        self._pos = self._body(line, self._pos, final=True)
        self._w.end_line()

    def _partial_line(self) -> None:
        if self._fence is not None or self._math is not None or not self._line:
            return
        if not self._started:
            start = self._block_start(self._line, complete=False)
            if start is None or start == _NEED:
                return
            self._pos = int(start)
            self._started = True
        line = self._line
        for k in range(len(line) - 1, self._scanned - 1, -1):  # only what arrived since last time
            if is_token_break(line[k]):
                self._limit = k + 1
                break
        self._scanned = len(line)
        if _ends_with_mark(line) or _ends_with_word_pause(line):
            # "you?", "it;", "question," and "Note:" are complete: a plain character reads only its
            # neighbours, and the mark (or a closing quote after it) reads none; a construct still open
            # (a URL, link, code span, math, the "!" of "![" or "!=") is held back by its own handler.
            self._limit = len(line)
        self._pos = self._body(line, self._pos, final=False, limit=max(self._limit, self._pos))
        if self._pos == self._limit < len(line) and _starts_after_stop(line, self._limit):
            # "Paris. It": the segmenter needs the character after ". " to know that a sentence ends
            # there (not "etc. and"). The first character of the word still arriving is written as
            # itself whatever follows, unless it may open a URL ("W" of "Www.", "H" of "Http://").
            self._pos = self._body(line, self._pos, final=False, limit=self._pos + 1)

    def _block_start(self, line: str, *, complete: bool) -> int | str | None:
        """Classify a line by its start: the body's start index, _NEED, or None for a whole-line block.

        Whole-line blocks (fences, display math, rules, table rows) are only decided on complete lines.
        """
        i = 0
        while True:  # indentation and blockquote markers
            while i < len(line) and line[i] in " \t":
                i += 1
            if i < len(line) and line[i] == ">":
                i += 1
                continue
            break
        rest = line[i:]
        if not rest:
            if complete:
                self._w.end_line()
                return None
            return _NEED
        c = rest[0]
        if c in "`~":
            run = len(rest) - len(rest.lstrip(c))
            if run >= 3:
                if not complete:
                    return _NEED
                m = _FENCE_OPEN.match(rest)
                if m and not (c == "`" and "`" in m.group(2)):
                    self._w.end_line()
                    self._fence = (c, run)
                    return None
            elif run == len(rest) and not complete:
                return _NEED
        if c == "|":
            if not complete:
                return _NEED
            if not _TABLE_SEP.match(rest):
                self._table_row(rest)
            return None
        if rest[:2] in ("$$", "\\[") or (len(rest) == 1 and c in "$\\"):
            if not complete:
                return _NEED
            if rest[:2] in ("$$", "\\["):
                self._display_math(rest)
                return None
        if c in "-*_=" and not complete and set(rest) <= {c, " ", "\t"}:
            return _NEED  # a rule or setext underline, or a list marker
        if complete and (_HR.match(line) or _SETEXT.match(line) or _TABLE_SEP.match(line)):
            self._w.end_line()
            return None
        if complete and "|" in rest and _TABLE_SEP.match(rest):
            return None
        if c == "#":
            run = len(rest) - len(rest.lstrip("#"))
            if run == len(rest):
                if not complete:
                    return _NEED
                return None if run <= 6 else i
            if run <= 6 and rest[run] in " \t":
                return i + run
            return i
        if c in "-*+•·":
            if len(rest) == 1:
                return _NEED if not complete else None
            if rest[1] in " \t":
                return self._after_marker(line, i + 1, complete=complete)
            return i
        if c.isdigit():
            digits = len(rest) - len(rest.lstrip("0123456789"))
            if digits == len(rest):
                return i if complete else _NEED
            if digits <= 9 and rest[digits] in ".)、":
                if digits + 1 == len(rest):
                    return i if complete else _NEED
                if rest[digits + 1] in " \t" or rest[digits] == "、":
                    body = self._after_marker(line, i + digits + 1, complete=complete)
                    if body is None or body == _NEED:
                        return body
                    self._w.text(rest[:digits])
                    self._w.pause()
                    return body
            return i
        return i

    def _after_marker(self, line: str, i: int, *, complete: bool) -> int | str | None:
        """The body start after a list marker (skipping spaces and a task box), or _NEED."""
        while i < len(line) and line[i] in " \t":
            i += 1
        rest = line[i:]
        if not complete and (not rest or (rest[0] == "[" and len(rest) < 4)):
            return _NEED
        if _TASK_BOX.match(rest):
            i += 3
        return i

    def _table_row(self, row: str) -> None:
        cells = row.strip().strip("|").split("|")
        for k, cell in enumerate(cells):
            if k:
                self._w.pause()
            self._body(cell, 0, final=True)
        self._w.end_line()

    def _display_math(self, rest: str) -> None:
        closer = "$$" if rest.startswith("$$") else "\\]"
        body = rest[2:]
        end = body.find(closer)
        self._w.end_line()
        if end >= 0:
            self._emit_math(body[:end])
            self._body(body, end + 2, final=True)
            self._w.end_line()
        else:
            self._math = closer
            self._math_text = [body]

    def _emit_math(self, src: str) -> None:
        self._w.text(_filter_text(_latex_to_text(src)))
        self._w.end_line()

    # --- inline --------------------------------------------------------------------------------

    def _body(self, line: str, pos: int, *, final: bool, limit: int = 0) -> int:
        """Consume ``line[pos:]`` as far as it is decided; return the new position.

        Unless ``final``, plain text is consumed only up to ``limit`` (the end of the last complete
        token); a construct starting before it is consumed once it is complete.
        """
        n = len(line)
        i = pos
        w = self._w
        while i < n and (final or i < limit):
            c = line[i]
            handler = _CONSTRUCTS.get(c)
            if handler is None and c in "hHwWfF" and (i == 0 or not _word_char(line[i - 1])):
                handler = StreamingCleaner._url
            if handler is not None:
                result = handler(self, line, i, final)
                if result == _NEED:
                    break
                if result is not None:
                    i = int(result)
                    continue
            w.text(_plain(c, line[i - 1] if i else "", line[i + 1] if i + 1 < n else ""))
            i += 1
        return i

    def _inline_text(self, text: str) -> None:
        self._body(text, 0, final=True)

    @staticmethod
    def _find_close(
        line: str, start: int, closer: str, final: bool, window_end: int | None = None
    ) -> int | str | None:
        """Index of ``closer`` in ``line[start:window_end]`` (default ``start + _MAX_SPAN``).

        _NEED if it may still arrive (the window is not all there yet), None if it is not there.
        """
        stop = start + _MAX_SPAN if window_end is None else window_end
        end = line.find(closer, start, stop)
        if end >= 0 and end + len(closer) <= stop:
            return end
        if final or len(line) >= stop:
            return None
        return _NEED

    def _code_span(self, line: str, i: int, final: bool) -> int | str | None:
        run = len(line) - i - len(line[i:].lstrip("`"))
        if i + run == len(line) and not final:
            return _NEED
        k = i + run
        while True:
            end = self._find_close(line, k, "`" * run, final, i + run + _MAX_SPAN)
            if end is None or end == _NEED:
                return i + run if end is None else _NEED
            end = int(end)
            after = end + run
            if after < len(line) and line[after] == "`":
                k = after
                while k < len(line) and line[k] == "`":
                    k += 1
                continue
            if after == len(line) and not final:
                return _NEED
            self._w.text(_filter_text(_URL.sub(" ", line[i + run : end])))
            return after

    def _link(self, line: str, i: int, final: bool) -> int | str | None:
        image = line[i] == "!"
        if image:
            if i + 1 >= len(line):
                return None if final else _NEED
            if line[i + 1] != "[":
                return None
            i += 1
        close = self._find_close(line, i + 1, "]", final)
        if close is None or close == _NEED:
            return close
        close = int(close)
        text = line[i + 1 : close]
        if close + 1 >= len(line) and not final:
            return _NEED
        nxt = line[close + 1] if close + 1 < len(line) else ""
        if text.startswith("^"):
            return close + 1  # a footnote reference
        end = close + 1
        if nxt == "(":
            depth = 0
            found = None
            for k in range(close + 1, min(len(line), close + 1 + _MAX_SPAN)):
                if line[k] == "(":
                    depth += 1
                elif line[k] == ")":
                    depth -= 1
                    if depth == 0:
                        found = k
                        break
            if found is None:
                if not final and len(line) - close - 1 < _MAX_SPAN:
                    return _NEED
                return None
            end = found + 1
        elif nxt == "[":
            ref = self._find_close(line, close + 2, "]", final)
            if ref == _NEED:
                return _NEED
            if ref is not None:
                end = int(ref) + 1
        elif not image:
            return None  # [text] alone: brackets are dropped, the text is read
        if not image:
            self._inline_text(text)
        return end

    def _math_span(self, line: str, i: int, final: bool) -> int | str | None:
        n = len(line)
        if i + 1 >= n:
            return None if final else _NEED
        if line[i + 1] == "$":
            end = self._find_close(line, i + 2, "$$", final)
            if end is None or end == _NEED:
                return i + 2 if end is None else _NEED
            self._w.text(_filter_text(_latex_to_text(line[i + 2 : int(end)])))
            return int(end) + 2
        if line[i + 1].isspace():
            return None
        money = _MONEY.match(line, i)
        if money is not None:  # "$20 per month", "$5, $10": currency unless an operator follows
            k = money.end()
            while k < n and line[k] == " ":
                k += 1
            if k == n and not final:
                return _NEED
            if k == n or line[k] not in "+-*/=^_\\<>$":
                return None
        k = i + 1
        while True:
            end = self._find_close(line, k, "$", final, i + 1 + _MAX_SPAN)
            if end is None:
                return None
            if end == _NEED:
                return _NEED
            end = int(end)
            if end + 1 >= n and not final:
                return _NEED
            ok = not line[end - 1].isspace() and line[end - 1] != "\\" and end > i + 1
            if ok and not (end + 1 < n and line[end + 1].isdigit()):
                self._w.text(_filter_text(_latex_to_text(line[i + 1 : end])))
                return end + 1
            k = end + 1

    def _backslash(self, line: str, i: int, final: bool) -> int | str | None:
        n = len(line)
        if i + 1 >= n:
            return None if final else _NEED
        nxt = line[i + 1]
        if nxt in "([":
            closer = "\\)" if nxt == "(" else "\\]"
            end = self._find_close(line, i + 2, closer, final)
            if end is None or end == _NEED:
                return i + 1 if end is None else _NEED
            self._w.text(_filter_text(_latex_to_text(line[i + 2 : int(end)])))
            return int(end) + 2
        if nxt.isascii() and nxt.isalpha():
            m = re.match(r"[A-Za-z]+", line[i + 1 :])
            assert m is not None
            name = m.group(0)
            end = i + 1 + len(name)
            if end == n and not final:
                return _NEED
            if name not in _LATEX_BARE:
                self._w.char(" ")
                return i + 1  # not LaTeX we know: drop the backslash, read the word
            args = _LATEX_ARGS.get(name, 1 if name in _LATEX_ONE_ARG_KEEP else 0)
            for _ in range(args):
                k = end
                while k < n and line[k] == " ":
                    k += 1
                if k < n and line[k] == "[" and name == "sqrt":
                    close = self._find_close(line, k, "]", final)
                    if close == _NEED:
                        return _NEED
                    k = int(close) + 1 if close is not None else k
                if k >= n:
                    if not final:
                        return _NEED
                    break
                if line[k] == "{":
                    depth = 0
                    stop = None
                    for j in range(k, min(n, k + _MAX_SPAN)):
                        if line[j] == "{":
                            depth += 1
                        elif line[j] == "}":
                            depth -= 1
                            if depth == 0:
                                stop = j
                                break
                    if stop is None:
                        if not final and n - k < _MAX_SPAN:
                            return _NEED
                        break
                    end = stop + 1
                else:
                    end = k + 1
            self._w.text(_filter_text(_latex_to_text(line[i:end])))
            return end
        if nxt == "\\":
            return i + 2
        self._w.text(_plain(nxt, line[i - 1] if i else "", line[i + 2] if i + 2 < n else ""))
        return i + 2  # an escaped character stands for itself

    def _angle(self, line: str, i: int, final: bool) -> int | str | None:
        arrow = self._arrow(line, i, final)
        if arrow is not None:
            return arrow
        n = len(line)
        if i + 1 >= n:
            return None if final else _NEED
        if not (line[i + 1].isascii() and (line[i + 1].isalpha() or line[i + 1] in "/!")):
            return None
        end = self._find_close(line, i + 1, ">", final)
        if end is None or end == _NEED:
            return end
        candidate = line[i : int(end) + 1]
        if _AUTOLINK.fullmatch(candidate) or candidate.startswith("<!--"):
            return int(end) + 1
        m = _HTML_TAG.fullmatch(candidate)
        if m is None:
            return None
        if m.group(1).lower() in _PAUSE_TAGS:
            self._w.pause()
        return int(end) + 1

    def _arrow(self, line: str, i: int, final: bool) -> int | str | None:
        rest = line[i : i + 3]
        if (
            len(rest) < 3
            and not final
            and any(a.startswith(rest) and a != rest for a in _ARROWS + tuple(_COMPARISONS))
        ):
            return _NEED
        for arrow in _ARROWS:
            if line.startswith(arrow, i):
                self._w.char(" ")
                return i + len(arrow)
        for op, symbol in _COMPARISONS.items():
            if line.startswith(op, i):
                self._w.text(symbol)
                return i + len(op)
        return None

    def _dashes(self, line: str, i: int, final: bool) -> int | str | None:
        arrow = self._arrow(line, i, final)
        if arrow is not None:
            return arrow
        run = len(line) - i - len(line[i:].lstrip("-"))
        if i + run == len(line) and not final:
            return _NEED
        if run >= 2:
            self._w.pause()
            return i + run
        return None

    def _star(self, line: str, i: int, final: bool) -> int | str | None:
        n = len(line)
        prev = line[i - 1] if i else ""
        nxt = line[i + 1] if i + 1 < n else ""
        if prev.isdigit() and nxt.isdigit():
            self._w.text("×")
            return i + 1
        if prev == " " and i >= 2 and line[i - 2].isdigit() and nxt == " ":
            if i + 2 >= n:
                return None if final else _NEED
            if line[i + 2].isdigit():
                self._w.text("×")
                return i + 1
        return i + 1  # emphasis

    def _caret(self, line: str, i: int, final: bool) -> int | str | None:
        prev = line[i - 1] if i else ""
        m = re.match(r"\^(?:\{([0-9+\-n]{1,8})\}|([0-9]{1,8}|[+\-][0-9]{1,8}))", line[i:])
        if prev.isalnum() and m is not None:
            self._w.text((m.group(1) or m.group(2)).translate(_SUPERSCRIPT))
            return i + len(m.group(0))
        return i + 1

    def _pipe(self, line: str, i: int, final: bool) -> int | str | None:
        self._w.pause()
        return i + 1

    def _entity(self, line: str, i: int, final: bool) -> int | str | None:
        m = _ENTITY.match(line, i)
        if m is None:
            return None
        text = html.unescape(m.group(0))
        if len(text) == 1:
            nxt = line[m.end()] if m.end() < len(line) else ""
            text = _plain(text, line[i - 1] if i else "", nxt)
        self._w.text(text)
        return m.end()

    def _equals(self, line: str, i: int, final: bool) -> int | str | None:
        return self._arrow(line, i, final)

    def _bang(self, line: str, i: int, final: bool) -> int | str | None:
        if line.startswith("!=", i):
            return self._arrow(line, i, final)
        return self._link(line, i, final)

    def _url(self, line: str, i: int, final: bool) -> int | str | None:
        m = _URL.match(line, i)
        if m is None:
            return None
        end = m.end()
        if end == len(line) and not final:
            return _NEED
        url = m.group(0)
        if url.lower() in _URL_PREFIXES:
            return None
        # Trailing punctuation belongs to the sentence, and an unbalanced ")" to the text around.
        trimmed = url
        while trimmed and trimmed[-1] in ".,;:!?*_~'\")]}":
            if trimmed[-1] == ")" and trimmed.count("(") >= trimmed.count(")"):
                break
            trimmed = trimmed[:-1]
        self._w.char(" ")
        return i + max(len(trimmed), 1)


def _word_char(c: str) -> bool:
    return c.isalnum() or c in "@._-/"


def _ends_with_mark(line: str) -> bool:
    """True when ``line`` ends with ``?``, ``!`` or ``;`` (then maybe closing quotes and brackets)."""
    stripped = line.rstrip("\"')]")
    return bool(stripped) and stripped[-1] in "?!;"


#: A "." that may end a sentence, maybe then closing quotes or emphasis, then whitespace.
_STOP_THEN_SPACE = re.compile(r"\.[" + re.escape("".join(sorted(CLOSERS)) + "*_~") + r"]*\s+\Z")


def _starts_after_stop(line: str, i: int) -> bool:
    """True when the token at ``line[i:]`` follows ``. `` and its first character can be written now.

    That character is a letter, a digit or an opening ``"``, ``'`` or ``(``: outside a construct it is
    written as itself whatever follows (:func:`_plain` reads no neighbour of these), and no construct opens
    with it, except a letter that may start a URL (``www.``, ``http://``, ``ftp://``; the URL handler drops
    the whole address), which is written only once the word can no longer be one (``Here``, ``We``).
    """
    if not _STOP_THEN_SPACE.search(line, max(0, i - 8), i):
        return False
    c = line[i]
    if c not in "\"'(" and unicodedata.category(c)[0] not in "LN":
        return False
    if c in "hHwWfF":
        held = line[i:].lower()
        return not any(p.startswith(held) or held.startswith(p) for p in _URL_PREFIXES)
    return True


_SCHEME_TAIL = re.compile(r"(?:https?|ftp)\Z", re.IGNORECASE)


def _ends_with_word_pause(line: str) -> bool:
    """True when ``line`` ends with ``,`` or ``:`` right after a letter (maybe then emphasis: ``**Sure**,``).

    Not after a URL scheme (``https:``): once ``//`` follows, the URL handler drops its word, so that word is
    held. Not after a digit either: ``1,`` may be ``1,000``, and the segmenter waits for the next character
    there anyway.
    """
    if len(line) < 2 or line[-1] not in ",:":
        return False
    word = line[:-1].rstrip("*_~")
    if not word or not word[-1].isalpha():
        return False
    return line[-1] == "," or _SCHEME_TAIL.search(word, max(0, len(word) - 5)) is None


_CONSTRUCTS: dict[str, Callable[[StreamingCleaner, str, int, bool], int | str | None]] = {
    "`": StreamingCleaner._code_span,
    "[": StreamingCleaner._link,
    "!": StreamingCleaner._bang,
    "$": StreamingCleaner._math_span,
    "\\": StreamingCleaner._backslash,
    "<": StreamingCleaner._angle,
    "-": StreamingCleaner._dashes,
    "=": StreamingCleaner._equals,
    ">": StreamingCleaner._arrow,
    "*": StreamingCleaner._star,
    "^": StreamingCleaner._caret,
    "|": StreamingCleaner._pipe,
    "&": StreamingCleaner._entity,
    "→": StreamingCleaner._arrow,
    "⇒": StreamingCleaner._arrow,
    "←": StreamingCleaner._arrow,
    "⇐": StreamingCleaner._arrow,
    "↔": StreamingCleaner._arrow,
    "⇔": StreamingCleaner._arrow,
}
