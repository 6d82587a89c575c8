"""Text for speech, the segmenter: cleaned answers cut into TTS segments while they stream."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_gateway.voice.cleaner import is_speakable, sanitize
from qwen_gateway.voice.segmenter import SpeechSegmenter

from .text_samples import (
    ANSWERS,
    EN_COFFEE,
    MARKDOWN,
    PLAIN,
    UNSPEAKABLE,
    ZH_INSTALL,
    split_points,
    spoken,
)


def stream(text: str, sizes: list[int], seg: SpeechSegmenter | None = None) -> list[str]:
    """Feed ``text`` in pieces of the given sizes (cycled) and flush; return all segments."""
    seg = seg or SpeechSegmenter()
    out: list[str] = []
    i = 0
    k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        out += seg.feed(text[i : i + size])
        i += size
        k += 1
    return out + seg.flush()


# --------------------------------------------------------------------------------------------------
# the segmenter
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ANSWERS))
@pytest.mark.parametrize("sizes", [[1], [3], [1, 2, 5, 11], [10_000]])
def test_segments_of_realistic_answers(name: str, sizes: list[int]) -> None:
    raw, expected = ANSWERS[name]
    segments = stream(raw, sizes)
    whole = stream(raw, [10_000])
    assert segments == whole  # for these answers the cuts do not depend on the deltas
    assert spoken("".join(segments)) == spoken(expected)
    for s in segments:
        assert s == s.strip() and is_speakable(s)
        assert len(s) <= 100
        assert not UNSPEAKABLE.search(s)
        assert "\n" not in s


def test_segments_cut_at_sentence_ends() -> None:
    segments = stream(ZH_INSTALL, [2])
    assert segments == [
        "好的！下面是在 Windows 上安装 Python 3.12 的步骤：",
        "一、下载安装包。1，打开官网 python.org，点击「Downloads」。",
        "2，选择 Windows installer (64-bit)，文件大约 25.6 MB。",
        "3，运行安装程序时，务必勾选 Add Python to PATH！",
        "二、验证安装。打开命令提示符，输入：",
        "如果显示 Python 3.12.1，说明安装成功。",
        "提示：国内用户可以使用清华镜像加速下载。",
        "有问题随时问我。",
    ]
    english = stream(EN_COFFEE, [4])
    assert english[:4] == [
        "How to Make a Great Cup of Coffee.",
        "Sure! Here's a quick guide, e.g. for a standard 12 oz mug.",
        "Dr. Smith (a barista since 2010) swears by it...",
        "What You'll Need.",
    ]
    assert 'Mr. Jones said, "It\'s worth it."' in english


def test_first_segment_is_short_and_comes_early() -> None:
    seg = SpeechSegmenter(min_chars=12, max_chars=100, first_min_chars=6)
    assert seg.feed("好的，") == []  # too short to stand alone
    assert seg.feed("我来帮你看看这个问题，") == ["好的，我来帮你看看这个问题，"]
    # later segments wait for a sentence end, not a comma
    assert seg.feed("首先，我们需要确认，") == []
    assert seg.feed("你的系统版本。然后") == ["首先，我们需要确认，你的系统版本。"]
    assert seg.flush() == ["然后。"]


def test_short_sentences_are_joined() -> None:
    seg = SpeechSegmenter(min_chars=10, max_chars=100, first_min_chars=2)
    out = seg.feed("好。对。是的。没问题，我们开始吧。嗯。")
    out += seg.flush()
    assert out == ["好。对。", "是的。没问题，我们开始吧。", "嗯。"]


def test_long_text_without_sentence_end_is_cut_at_pauses() -> None:
    seg = SpeechSegmenter(min_chars=10, max_chars=40, first_min_chars=5)
    text = "这是一个很长很长的句子，" * 10
    out = seg.feed(text)
    assert out, "segments come out before the end of the answer"
    out += seg.flush()
    assert all(len(s) <= 40 for s in out)
    assert "".join(out) == text


def test_long_text_without_any_pause_is_cut_but_not_inside_numbers_or_words() -> None:
    seg = SpeechSegmenter(min_chars=5, max_chars=30, first_min_chars=5)
    words = " ".join(["3.14159", "1,000,000", "hello", "world"] * 10)
    out = seg.feed(words) + seg.flush()
    assert all(len(s) <= 30 for s in out)
    assert " ".join(out) == words + "."
    for s in out:
        for token in s.rstrip(".").split():
            assert token in ("3.14159", "1,000,000", "hello", "world")
    cjk = "中" * 95
    out = SpeechSegmenter(max_chars=40).feed(cjk)
    assert out and all(len(s) <= 40 for s in out)


@pytest.mark.parametrize(
    ("pieces", "held"),
    [
        (["圆周率约等于 3."], "3."),  # a number that may continue
        (["It costs 1,"], "1,"),
        (["This is **bol"], "bol"),  # emphasis not closed yet, word still arriving
        (["请看[文档](https://exa"], "文档"),  # a link still arriving
        (["见 https://example"], "example"),  # a URL still arriving
        (["好的。\n| 型号 | 价"], "型号"),  # a table row
        (["好的。\n```python\nprint('hi')\n"], "print"),  # an unclosed code block
        (["公式 $x^"], "x"),  # inline math not closed
        (["It is 10:"], "10:"),
    ],
)
def test_incomplete_constructs_are_held_back(pieces: list[str], held: str) -> None:
    seg = SpeechSegmenter(min_chars=1, max_chars=100, first_min_chars=1)
    out: list[str] = []
    for p in pieces:
        out += seg.feed(p)
    assert held not in "".join(out) + seg.pending


def test_held_constructs_complete_correctly() -> None:
    cases = [
        (["圆周率约等于 3.", "14159。"], "圆周率约等于 3.14159。"),
        (["这是**重", "点**内容。"], "这是重点内容。"),
        (["This is **bol", "d** text. Ok"], "This is bold text. Ok."),
        (["请看[文档](https://exa", "mple.com/a)。"], "请看文档。"),
        (["见 https://exa", "mple.com/x 。好"], "见。好。"),
        (["| 型号 | 价", "格 |\n"], "型号，价格。"),
        (["好的。\n```py", "thon\nprint('hi')\n`", "``\n后面。"], "好的。后面。"),
        (["公式 $x^", "2$。"], "公式 x²。"),
        (["It is 10:", "30 now. Ok"], "It is 10:30 now. Ok."),
        (["He paid $", "5. Then"], "He paid $5. Then."),
    ]
    for pieces, expected in cases:
        seg = SpeechSegmenter(min_chars=1, max_chars=100, first_min_chars=1)
        out: list[str] = []
        for p in pieces:
            out += seg.feed(p)
        out += seg.flush()
        assert " ".join(out).replace("。 ", "。").replace("， ", "，") == expected, (pieces, out)


def test_a_period_ends_a_sentence_only_where_it_should() -> None:
    seg = SpeechSegmenter(min_chars=1, max_chars=200, first_min_chars=1)
    text = (
        "Pi is 3.14 and e.g. this is fine. Dr. Who met Mr. Smith at 5 p.m. today. "
        "Visit example.com later. Wait... what? The U.S. economy grew. Version 2.0 is out. Done"
    )
    out = seg.feed(text) + seg.flush()
    assert out == [
        "Pi is 3.14 and e.g. this is fine.",
        "Dr. Who met Mr. Smith at 5 p.m. today.",
        "Visit example.com later.",
        "Wait... what?",
        "The U.S. economy grew.",
        "Version 2.0 is out.",
        "Done.",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    seg = SpeechSegmenter(min_chars=2, max_chars=100, first_min_chars=4)
    out = seg.feed("他说：“走吧。”她问：「真的吗？！」我说") + seg.flush()
    assert out == ["他说：“走吧。”", "她问：「真的吗？！」", "我说。"]


def test_flush_starts_over() -> None:
    seg = SpeechSegmenter()
    assert seg.feed("第一个回答的内容，有点长的句子。") == ["第一个回答的内容，"]
    seg.feed("\n```\n未闭合的代码")
    assert seg.flush() == ["有点长的句子。"]
    assert seg.pending == ""
    # a new answer is not inside the previous answer's code block
    assert seg.feed("新的回答，说点什么。") + seg.flush() == ["新的回答，说点什么。"]


def test_punctuation_only_segments_are_dropped() -> None:
    seg = SpeechSegmenter(min_chars=1, max_chars=100, first_min_chars=1)
    out = seg.feed("😀。\n！！\n🎉🎉\n真的。") + seg.flush()
    assert out == ["真的。"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_chars": 0},
        {"min_chars": 60, "max_chars": 100},
        {"first_min_chars": 0},
        {"max_chars": 1},
    ],
)
def test_rejects_bad_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SpeechSegmenter(**kwargs)


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(max_size=200), MARKDOWN),
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 20),
    first_min=st.integers(1, 10),
    min_chars=st.integers(1, 15),
    max_chars=st.integers(30, 120),
)
def test_any_text_any_split_never_crashes_and_says_the_same(
    text: str, seed: int, max_piece: int, first_min: int, min_chars: int, max_chars: int
) -> None:
    seg = SpeechSegmenter(min_chars, max_chars, first_min_chars=first_min)
    segments = stream(text, split_points(text, seed, max_piece), seg)
    for s in segments:
        assert s and s == s.strip() and is_speakable(s)
        assert len(s) <= max_chars
    assert spoken("".join(segments)) == spoken(sanitize(text))


# --------------------------------------------------------------------------------------------------
# release times: a segment leaves with the delta that brings its sentence end
# --------------------------------------------------------------------------------------------------


def timeline(tokens: list[str], seg: SpeechSegmenter) -> list[tuple[int | str, str]]:
    """Feed ``tokens`` one by one, then flush: each segment with the index of the delta that released it."""
    out: list[tuple[int | str, str]] = []
    for k, token in enumerate(tokens):
        out += [(k, s) for s in seg.feed(token)]
    return out + [("flush", s) for s in seg.flush()]


@pytest.mark.parametrize(
    ("tokens", "released_by", "first"),
    [
        # Chinese, as Qwen tokenises it, and one character per delta
        (["好的", "，", "今天", "天气", "很好", "。", "适合", "出去", "散步", "。"], 5, "好的，今天天气很好。"),
        (list("好的，今天天气很好。适合出去玩。"), 9, "好的，今天天气很好。"),
        (["这个", "问题", "很", "常见", "！", "首先", "，", "检查", "网络", "。"], 4, "这个问题很常见！"),
        (["你", "是", "想", "问", "哪个", "版本", "？", "我", "帮你", "查", "。"], 6, "你是想问哪个版本？"),
        (["你", "是", "想", "问", "哪个", "版本", "?", "我", "帮你", "查", "。"], 6, "你是想问哪个版本?"),
        (["先", "备份", "你的", "数据", "；", "再", "升级", "系统", "。"], 4, "先备份你的数据；"),
        (["他", "说", "：", "“", "这个", "没", "问题", "。", "”", "然后", "走", "了", "。"], 7, "他说：“这个没问题。"),
        # English
        (
            ["Do", " you", " mean", " the", " Python", " version", "?", " If", " so", ",", " run", " it", "."],
            6,
            "Do you mean the Python version?",
        ),
        (["Is", " it", " 3", ".", "14", "?", " Yes", "."], 5, "Is it 3.14?"),
        (["I", " like", " it", ";", " you", " might", " too", "."], 3, "I like it;"),
        (['"', "Are", " you", " coming", " tonight", '?"', " she", " asked", "."], 5, '"Are you coming tonight?"'),
        (["Have", " you", " tried", " restarting", " it", "?\n\n", "It", " often", " helps", "."], 5, "Have you tried restarting it?"),
        # "!" waits for the next character: it may open "![image](...)" or "!="
        (["What", " a", " great", " question", "!", " Let", " me", " explain", "."], 5, "What a great question!"),
        # "." waits for the first character of the next word (3.14, e.g., "vs. the")
        (["The", " answer", " is", " simple", ".", " Just", " wait", "."], 5, "The answer is simple."),
    ],
)  # fmt: skip
def test_first_segment_leaves_with_its_sentence_end(
    tokens: list[str], released_by: int, first: str
) -> None:
    seg = SpeechSegmenter()
    for k, token in enumerate(tokens[:released_by]):
        assert seg.feed(token) == [], (k, token, seg.pending)
    assert seg.feed(tokens[released_by]) == [first]
    rest = [s for t in tokens[released_by + 1 :] for s in seg.feed(t)] + seg.flush()
    assert spoken(first + "".join(rest)) == spoken(sanitize("".join(tokens)))


def test_every_sentence_leaves_with_its_end() -> None:
    tokens = ["好的", "，", "今天", "天气", "很好", "。", "适合", "出去", "散步", "，"]
    tokens += ["记得", "带上", "雨伞", "和", "外套", "！", "”"]
    tokens += ["明天", "可能", "会", "下雨", "吗", "？", "不", "会", "。"]
    assert timeline(tokens, SpeechSegmenter()) == [
        (5, "好的，今天天气很好。"),
        (15, "适合出去散步，记得带上雨伞和外套！"),  # the "”" after it is dropped
        # "明天可能会下雨吗？" is too short to stand alone (min_chars=12): joined to the next
        ("flush", "明天可能会下雨吗？不会。"),
    ]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        # marks and closing quotes after an early cut are dropped, never spoken or sent alone
        (["“", "好的", "！", "”", "走吧", "。"], [(2, "“好的！"), (5, "走吧。")]),
        (["好的", "！", "”", "）", "！", "走吧", "。"], [(1, "好的！"), (6, "走吧。")]),
        (["真的吗", "？", "！", "太好了", "。"], [(1, "真的吗？"), (4, "太好了。")]),
        (["“", "你好", "。", "”", "他说", "。"], [(2, "“你好。"), (5, "他说。")]),
        (["“你好。”他说", "。"], [(0, "“你好。”"), (1, "他说。")]),  # whole: the quote stays
        (["Really", "?", "!", " Yes", "."], [(1, "Really?"), ("flush", "Yes.")]),
        (["Are", " you", " sure", "?", '"', " she", " asked", "."], [(3, "Are you sure?"), ("flush", "she asked.")]),
        (['Are you sure?"', " she", " asked", "."], [(0, 'Are you sure?"'), ("flush", "she asked.")]),
        (["Is", " it", " 3", ".", "14", "?", " Yes", "."], [(5, "Is it 3.14?"), ("flush", "Yes.")]),
        # a URL is removed; a "?" inside an address is not a sentence end, and waits to see what follows
        (
            ["Visit", " https", "://", "example", ".com", "/a", "?", "b", "=", "1", " now", "."],
            [("flush", "Visit now.")],
        ),
        (
            ["Visit", " example", ".com", "/a", "?", "b", "=", "1", " now", "."],
            [("flush", "Visit example.com/a?b=1 now.")],
        ),
        (
            ["Try", " example", ".com", "/a", "?", " Yes", ".", " Ok"],
            [(7, "Try example.com/a?"), (7, "Yes."), ("flush", "Ok.")],
        ),
        (["Is", " x", "=", "1", "?", " No", "."], [(4, "Is x=1?"), ("flush", "No.")]),
        (["Is", " it", " 1", "/", "2", "?", " No", "."], [(5, "Is it 1/2?"), ("flush", "No.")]),
        # "!" is held until the next character: it may open an image or "!="
        (["Wow", "!", "[", "img", "](", "a.png", ")", " ok", "."], [("flush", "Wow ok.")]),
        (["So", " x", "!", "=", "y", " here", "."], [("flush", "So x≠y here.")]),
        (["Great", "!", " Go", "."], [(2, "Great!"), ("flush", "Go.")]),
    ],
)  # fmt: skip
def test_mixed_ends(tokens: list[str], expected: list[tuple[int | str, str]]) -> None:
    assert (
        timeline(tokens, SpeechSegmenter(min_chars=2, max_chars=100, first_min_chars=2)) == expected
    )
    whole = stream("".join(tokens), [10_000], SpeechSegmenter(2, 100, first_min_chars=2))
    assert spoken("".join(whole)) == spoken("".join(s for _, s in expected))


#: Sentences that are long enough to stand alone, each ending with a mark that needs no lookahead.
CJK_SENTENCE = st.builds(
    lambda body, end: body + end,
    st.text(alphabet="你好世界中文今天天气很", min_size=12, max_size=30),
    st.sampled_from(["。", "！", "？", "；", "?", "？！", "。”", "！」"]),
)
EN_SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(st.text(alphabet="abcdegxyzAB", min_size=3, max_size=7), min_size=4, max_size=8),
    st.sampled_from(["?", ";", '?"', "?)"]),
)


@settings(max_examples=200, deadline=None)
@given(
    sentences=st.lists(st.one_of(CJK_SENTENCE, EN_SENTENCE), min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
)
def test_a_complete_sentence_never_waits_for_the_next_delta(
    sentences: list[str], seed: int
) -> None:
    seg = SpeechSegmenter(min_chars=12, max_chars=100, first_min_chars=6)
    said: list[str] = []
    rng = random.Random(seed)
    for k, sentence in enumerate(sentences):
        text = sentence if k == 0 else " " + sentence
        i = 0
        while i < len(text):
            n = rng.randint(1, 4)
            said += seg.feed(text[i : i + n])
            i += n
        # the last delta carried the sentence's end: all of it is out, nothing speakable is held back
        assert spoken("".join(said)) == spoken(sanitize("".join(sentences[: k + 1])))
        assert not is_speakable(seg.pending), seg.pending
    assert all(is_speakable(s) for s in said + seg.flush())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(max_size=200), MARKDOWN, PLAIN),
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 8),
)
def test_any_split_says_what_the_whole_text_says(text: str, seed: int, max_piece: int) -> None:
    whole = stream(text, [len(text) or 1])
    for sizes in ([1], split_points(text, seed, max_piece)):
        segments = stream(text, sizes)
        assert spoken("".join(segments)) == spoken("".join(whole))
        assert all(s and s == s.strip() and is_speakable(s) for s in segments)


# --------------------------------------------------------------------------------------------------
# release times: the first segment's "," or ":" after a word leaves with its mark
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "first_min", "expected"),
    [
        # a "," or ":" after a plain word is never part of a number: the first segment leaves with it
        (["Great", " question", ",", " let", " me", " explain", "."], 6, [(2, "Great question,"), ("flush", "let me explain.")]),
        (["Sure", ",", " here", " is", " how", "."], 4, [(1, "Sure,"), ("flush", "here is how.")]),
        (["Of", " course", ",", " I", " can", " help", "."], 6, [(2, "Of course,"), ("flush", "I can help.")]),
        (["That", "'s", " a", " good", " one", ",", " but", " no", "."], 6, [(5, "That's a good one,"), ("flush", "but no.")]),
        (["Well", "-known", " tools", ",", " like", " git", "."], 6, [(3, "Well-known tools,"), ("flush", "like git.")]),
        (['"', "Sure", ",", " here", " it", " is", "."], 4, [(2, '"Sure,'), ("flush", "here it is.")]),
        (["**", "Great", " question", "**", ",", " let", " me", " explain", "."], 6, [(4, "Great question,"), ("flush", "let me explain.")]),
        (["Yes", ",", "1", " more", " thing", "."], 2, [(1, "Yes,"), ("flush", "1 more thing.")]),  # a pause whatever follows
        (["好的", ",", "我来", "帮你", "看看", "。"], 2, [(1, "好的,"), ("flush", "我来帮你看看。")]),
        (["Note", ":", " restart", " it", " first", "."], 4, [(1, "Note:"), ("flush", "restart it first.")]),
        (["**", "Note", ":", "**", " restart", " it", "."], 4, [(2, "Note:"), ("flush", "restart it.")]),
        (["**", "Tip", "**", ":", " restart", " it", "."], 3, [(3, "Tip:"), ("flush", "restart it.")]),
        (["时间", "是", ":", "10", ":", "30", "。"], 2, [(2, "时间是:"), ("flush", "10:30。")]),
        # after a digit or a word that is not plain, "," and ":" wait for the next character: no pause
        # before a digit (a number, an address, code); so does ":" after a lowercase word (a host, an image)
        (["It", " costs", " 1", ",", "000", " dollars", "."], 4, [("flush", "It costs 1,000 dollars.")]),
        (["Pi", " is", " 3", ",", "14", " here", "."], 2, [("flush", "Pi is 3,14 here.")]),
        (["Meet", " at", " 10", ":", "30", " today", "."], 4, [("flush", "Meet at 10:30 today.")]),
        (["Step", " 3", ",", " then", " go", "."], 4, [(4, "Step 3,"), ("flush", "then go.")]),
        (["Open", " localhost", ":", "8080", " now", "."], 2, [("flush", "Open localhost:8080 now.")]),
        (["Use", " python", ":", "3", ".", "12", " here", "."], 2, [("flush", "Use python:3.12 here.")]),
        (["Here", "'s", " how", ":", " restart", " it", "."], 4, [(5, "Here's how:"), ("flush", "restart it.")]),
        (["Open", " example", ".com", "/a", ",", "1", " now", "."], 2, [("flush", "Open example.com/a,1 now.")]),
        (["Visit", " example", ".com", "/a", ",", "b", " now", "."], 2, [(6, "Visit example.com/a,"), ("flush", "b now.")]),
        (["Call", " f", "(a", ",", "1", ")", " now", "."], 2, [("flush", "Call f(a,1) now.")]),
        (["Call", " `f", "(a", ",", "1", ")`", " now", "."], 2, [("flush", "Call f(a,1) now.")]),
        # a URL scheme is held with its word ("https:" is dropped once "//" follows), and so is the URL
        (
            ["See", " https", ":", "//", "example", ".com", ":", "8080", "/a", ",", "b", " now", ",", " ok", "."],
            2,
            [(12, "See now,"), ("flush", "ok.")],
        ),
        (["Use", " HTTPS", ":", " it", " is", " safe", "."], 2, [(3, "Use HTTPS:"), ("flush", "it is safe.")]),
    ],
)  # fmt: skip
def test_first_segment_pause_after_a_word(
    tokens: list[str], first_min: int, expected: list[tuple[int | str, str]]
) -> None:
    assert timeline(tokens, SpeechSegmenter(12, 100, first_min_chars=first_min)) == expected
    # the same segments as the whole text: the cut does not depend on when the next character comes
    whole = stream("".join(tokens), [10_000], SpeechSegmenter(12, 100, first_min_chars=first_min))
    assert whole == [s for _, s in expected]


#: Words, numbers, addresses and code around "," and ":", to cut in the first segment.
PAUSE_TEXT = st.lists(
    st.sampled_from(
        [
            "Great", "question", "Sure", "Note", "Tip", "localhost", "python", "don't", "well-known",
            "a", "x", "MP3", "1", "000", "10", "30", "3.14", "好的", "时间", "，", "：", ",", ":", ",,",
            ":::", ",.", ",...", ":.", " ", " ", " ", ".", "!", "?", "\n", '"', "“", "**", "_", "(", ")",
            "`", "example.com/a", "f(a", "https", "//", "https://x.y/a,b:c", "www.q.com:8", "$5",
        ]
    ),
    max_size=30,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=PAUSE_TEXT,
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 6),
    first_min=st.integers(1, 8),
)
def test_first_segment_pauses_are_the_same_for_any_split(
    text: str, seed: int, max_piece: int, first_min: int
) -> None:
    # Without "?!;" ends (whose trailing marks an early cut drops), every cut is the same for any split.
    text = text.replace("?", "").replace("!", "")
    whole = stream(text, [len(text) or 1], SpeechSegmenter(12, 100, first_min_chars=first_min))
    for sizes in ([1], split_points(text, seed, max_piece)):
        assert stream(text, sizes, SpeechSegmenter(12, 100, first_min_chars=first_min)) == whole


# --------------------------------------------------------------------------------------------------
# release times: a sentence ending with "." leaves with the first character of the next word
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        # the cleaner writes the first character of the word after ". " as it arrives: one delta after the "."
        (
            ["The", " capital", " of", " France", " is", " Paris", ".", " It", " is", " in", " Europe", "."],
            [(7, "The capital of France is Paris."), ("flush", "It is in Europe.")],
        ),
        (
            ["Sure", " thing", ".", " Here", " is", " how", " to", " do", " it", "."],
            [(3, "Sure thing."), ("flush", "Here is how to do it.")],
        ),
        (["That", " is", " all", ".", " We", " are", " done", "."], [(4, "That is all."), ("flush", "We are done.")]),
        (["Python", " 3", ".", "12", " is", " out", ".", " It", " is", " fast", "."], [(7, "Python 3.12 is out."), ("flush", "It is fast.")]),
        (["He", " left", " early", ".", ' "', "Bye", '"', " he", " said", "."], [(4, "He left early."), ("flush", '"Bye" he said.')]),
        (["It", " is", " **done", ".**", " Next", " step", "."], [(4, "It is done."), ("flush", "Next step.")]),
        (["I", " ate", " five", ".", " 3", " were", " left", "."], [(4, "I ate five."), ("flush", "3 were left.")]),
        (["That", " is", " all", ".", " ", "We", " go", "."], [(5, "That is all."), ("flush", "We go.")]),
        # a letter that may open a URL waits until the word cannot be one
        (["That", " is", " all", ".", " H", "ere", " we", " go", "."], [(5, "That is all."), ("flush", "Here we go.")]),
        (["All", " done", ".", " www", ".site", ".com", " has", " more", "."], [("flush", "All done. has more.")]),
        (["All", " done", ".", " Https", "://", "x", ".io", " is", " it", "."], [("flush", "All done. is it.")]),
        # not a sentence end, whenever the next character comes
        (["Pi", " is", " 3", ".", "14", " and", " more", "."], [("flush", "Pi is 3.14 and more.")]),
        (["Use", " it", " e", ".g", ".", " this", " way", "."], [("flush", "Use it e.g. this way.")]),
        (["Ask", " Mr", ".", " Smith", " now", "."], [("flush", "Ask Mr. Smith now.")]),
        (["See", " example", ".com", " for", " more", "."], [("flush", "See example.com for more.")]),
        (["I", " like", " pears", " etc", ".", " and", " more", "."], [("flush", "I like pears etc. and more.")]),
        (["The", " U", ".S", ".", " Army", " is", " big", "."], [("flush", "The U.S. Army is big.")]),
        (["Wait", "...", " What", " now", "?"], [(4, "Wait... What now?")]),
        (["Wait", "...", " what", " now", "."], [("flush", "Wait... what now.")]),
    ],
)  # fmt: skip
def test_a_period_sentence_leaves_with_the_next_words_first_character(
    tokens: list[str], expected: list[tuple[int | str, str]]
) -> None:
    assert timeline(tokens, SpeechSegmenter()) == expected
    whole = stream("".join(tokens), [10_000], SpeechSegmenter())
    assert whole == [s for _, s in expected]


#: English sentences ending with ".", long enough to stand alone: words that open no URL (no "h", "w",
#: "f") and are no abbreviation ("Dec.", "vs.": no "c", "s").
PERIOD_SENTENCE = st.builds(
    lambda first, words: " ".join([first, *words]) + ".",
    st.builds(
        lambda c, s: c + s,
        st.sampled_from("ABDEGXYZ"),
        st.text(alphabet="abdegxyz", min_size=2, max_size=6),
    ),
    st.lists(st.text(alphabet="abdegxyz", min_size=3, max_size=7), min_size=4, max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(sentences=st.lists(PERIOD_SENTENCE, min_size=2, max_size=5), seed=st.integers(0, 2**32))
def test_a_period_sentence_waits_only_for_the_next_words_first_character(
    sentences: list[str], seed: int
) -> None:
    seg = SpeechSegmenter(min_chars=12, max_chars=100, first_min_chars=6)
    said: list[str] = []
    rng = random.Random(seed)

    def feed(text: str) -> None:
        i = 0
        while i < len(text):
            n = rng.randint(1, 4)
            said.extend(seg.feed(text[i : i + n]))
            i += n

    feed(sentences[0])
    for k, sentence in enumerate(sentences[1:], 1):
        feed(" " + sentence[0])  # the delta that ends with the next sentence's first letter
        assert spoken("".join(said)) == spoken(sanitize("".join(sentences[:k]))), seg.pending
        feed(sentence[1:])
    assert spoken("".join(said + seg.flush())) == spoken(sanitize(" ".join(sentences)))


# --------------------------------------------------------------------------------------------------
# properties: the segments are the cleaned text, cut where the text (not the deltas) says
# --------------------------------------------------------------------------------------------------

#: The stops that release a segment the moment they arrive, so that marks after them are dropped.
STOPS_AT_ONCE = "。！？；｡!?;"


def is_subsequence(needle: str, haystack: str) -> bool:
    it = iter(haystack)
    return all(c in it for c in needle)


def non_space(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(max_size=200), MARKDOWN, PLAIN, PAUSE_TEXT),
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 12),
    first_min=st.integers(1, 10),
    min_chars=st.integers(1, 15),
    max_chars=st.integers(30, 120),
)
def test_segments_are_the_cleaned_text_less_spaces_and_marks(
    text: str, seed: int, max_piece: int, first_min: int, min_chars: int, max_chars: int
) -> None:
    # Joined, the segments are sanitize(text) in order, less whitespace and some punctuation (a leading
    # pause, the marks after a stop that left at once, punctuation-only pieces): nothing added or moved.
    seg = SpeechSegmenter(min_chars, max_chars, first_min_chars=first_min)
    said = "".join(stream(text, split_points(text, seed, max_piece), seg))
    clean = sanitize(text)
    assert is_subsequence(non_space(said), non_space(clean))
    assert spoken(said) == spoken(clean)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(max_size=200), MARKDOWN, PLAIN, PAUSE_TEXT),
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 12),
    first_min=st.integers(1, 10),
    min_chars=st.integers(1, 15),
    max_chars=st.integers(30, 120),
)
def test_without_stops_that_leave_at_once_any_split_gives_the_same_segments(
    text: str, seed: int, max_piece: int, first_min: int, min_chars: int, max_chars: int
) -> None:
    # Every undecided boundary waits for the text that decides it, so the cuts depend on the text alone;
    # only a stop released at once (its later marks dropped) depends on where a delta ends.
    text = "".join(c for c in text if c not in STOPS_AT_ONCE)

    def cut(sizes: list[int]) -> list[str]:
        return stream(text, sizes, SpeechSegmenter(min_chars, max_chars, first_min_chars=first_min))

    whole = cut([len(text) or 1])
    for sizes in ([1], split_points(text, seed, max_piece)):
        assert cut(sizes) == whole
