"""Text for speech, the cleaner: LLM answers made speakable, whole and while they stream."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_gateway.voice.cleaner import StreamingCleaner, is_speakable, sanitize

from .text_samples import (
    ANSWERS,
    MARKDOWN_NO_BACKSLASH,
    PLAIN,
    TOKENS,
    UNSPEAKABLE,
    is_subsequence,
    split_points,
    spoken,
)

# --------------------------------------------------------------------------------------------------
# sanitize: table-driven
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ANSWERS))
def test_realistic_answers(name: str) -> None:
    raw, expected = ANSWERS[name]
    assert sanitize(raw) == expected
    assert not UNSPEAKABLE.search(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # markdown
        ("# Title", "Title."),
        ("###### 六级标题 ###", "六级标题。"),
        ("####### not a heading", "not a heading."),
        ("#hashtag here", "hashtag here."),
        ("**bold** and *italic* and __strong__ and _em_", "bold and italic and strong and em."),
        ("~~删除~~保留", "删除保留。"),
        ("- item one\n- item two", "item one.\nitem two."),
        ("* 苹果\n+ 香蕉\n• 橙子", "苹果。\n香蕉。\n橙子。"),
        ("  - nested\n    1. deeper", "nested.\n1, deeper."),
        ("- [ ] todo\n- [x] done", "todo.\ndone."),
        ("1. 第一步\n2) 第二步", "1，第一步。\n2，第二步。"),
        ("> quoted text\n> > nested", "quoted text.\nnested."),
        ("before\n\n---\n***\n___\n\nafter", "before.\nafter."),
        ("Title\n=====\nbody", "Title.\nbody."),
        ("[the docs](https://a.b/c_(d)) here", "the docs here."),
        ("![logo](https://a.b/logo.png) 图片", "图片。"),
        ("[文档][ref] 和脚注[^1]", "文档和脚注。"),
        ("[just brackets] stay", "just brackets stay."),
        ("<https://a.b> and <b>bold</b><br/>next", "and bold, next."),
        ("a &amp; b &lt; c&nbsp;d", "a & b < c d."),
        ("use `pip install -U qwen`", "use pip install -U qwen."),
        ("``code with ` tick``", "code with tick."),
        ("```\ncode\n```\n~~~\nmore code\n~~~\nafter", "after."),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a, b.\n1, 2."),
        ("a | b", "a, b."),
        # URLs
        ("见 https://example.com/a?b=1&c=2。", "见。"),
        ("visit www.example.org, then", "visit, then."),
        ("(see https://x.org/path).", "(see)."),
        ("email me at bob@example.com", "email me at bob@example.com."),
        # emoji and pictographs
        ("太棒了🎉🎉！", "太棒了！"),
        ("family 👨‍👩‍👧‍👦 flag 🇨🇳 keycap 1️⃣ ok ✅ ❌ ★", "family flag keycap 1 ok."),
        ("©2024 Acme™", "2024 Acme."),
        # LaTeX
        ("$x^2$", "x²."),
        (r"$\frac{a}{b}$ 和 $\frac{a+1}{b}$", "a/b 和 (a+1)/b。"),
        (r"\frac{1}{2} of \alpha", "1/2 of α."),
        (r"$$\sum_{i=1}^{n} i = \frac{n(n+1)}{2}$$", "∑i=1ⁿ i = (n(n+1))/2."),
        (r"$10^{-3}$ m and $e^{i\pi}$", "10⁻³ m and eiπ."),
        (r"\[ \sqrt[3]{8} = 2 \]", "√8 = 2."),
        (r"$\text{speed} = \dfrac{d}{t}$", "speed = d/t."),
        (r"\(a \times b \leq c\)", "a × b ≤ c."),
        ("$$\n\\begin{aligned}\nx &= 1 \\\\\ny &= 2\n\\end{aligned}\n$$", "x = 1; y = 2."),
        # currency and numbers
        ("costs $5 and $10, or $2.50/month", "costs $5 and $10, or $2.50/month."),
        ("约 ¥3,999 或 €20", "约 ¥3,999 或 €20。"),
        (
            "3.14 1,000 50% -2 2024-01-01 10:30 1/2 10~20",
            "3.14 1,000 50% -2 2024-01-01 10:30 1/2 10~20.",
        ),
        ("x^2 and 10^6", "x² and 10⁶."),
        ("2*3=6, 2 * 3 = 6", "2×3=6, 2 × 3 = 6."),
        ("a -> b => c → d", "a b c d."),
        ("a <= b >= c != d", "a ≤ b ≥ c ≠ d."),
        ("snake_case and __init__", "snake case and init."),
        ("C:\\Users\\me \\n", "C: Users me n."),
        # punctuation and pauses
        ("嗯……好吧...那就这样。", "嗯……好吧...那就这样。"),
        ("他说：「你好」，“再见”。", "他说：「你好」，“再见”。"),
        ("Hello , world !", "Hello, world!"),
        ("中 文 之 间", "中文之间。"),
        ("line one\nline two!\n\n\nline three:", "line one.\nline two!\nline three:"),
        (
            "# T\r\n- a\r\n---\r\n```\r\ncode\r\n```\r\n| a | b |\r\n|---|---|\r\nok\r\n",
            "T.\na.\na, b.\nok.",
        ),
        ("", ""),
        ("😀🎉", ""),
        ("```\nunclosed code block", ""),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected


def test_is_speakable() -> None:
    assert is_speakable("你")
    assert is_speakable("a")
    assert is_speakable("3")
    assert not is_speakable("。，!?…")
    assert not is_speakable("")


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_no_speakable_character_of_plain_text_is_lost(text: str) -> None:
    assert spoken(sanitize(text)) == spoken(text)


@settings(max_examples=300, deadline=None)
@given(MARKDOWN_NO_BACKSLASH)
def test_sanitising_only_removes_speakable_characters(text: str) -> None:
    # Without LaTeX commands (which may add α, √ ...), every letter/digit said was in the input, in order.
    assert is_subsequence(spoken(sanitize(text)), spoken(text))


@settings(max_examples=200, deadline=None)
@given(
    prose=st.lists(
        st.text(alphabet="abc你好 123。，", min_size=1, max_size=10), min_size=1, max_size=5
    ),
    removed=st.lists(
        st.sampled_from(
            [
                "\n```\ncode()\n```\n",
                " https://x.org/p?q=1 ",
                "😀",
                "👩\u200d💻",
                "🇯🇵",
                "**",
                "\n## ",
                "\n- ",
                "~~",
                "`",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_prose_around_removed_constructs_is_kept(prose: list[str], removed: list[str]) -> None:
    text = "".join(p + r for p, r in zip(prose, removed + [""] * len(prose), strict=False))
    kept = "".join(prose)
    assert spoken(sanitize(text)) == spoken(kept)


#: Ends of words that are released without lookahead, and the constructs that must still hold them.
MARKS = [
    "?", "!", ";", '?"', "?)", "?]", "!=", "![", "[a](b?)", "`c?`", "$5", "$x", "&amp", "2*", "x^",
    "http://a.b/c?d=1", "www.x.y?", "example.com/a?", "<a?>", "\\", "--", "“", "”",
    # words ending with "," or ":" are released too; a URL scheme is held until "//" shows what it is
    "a,", "Note:", "**a**,", "**b:**", "x_,", "https:", "HTTP:", "ftp:", "//", "$5k,", "\\frac,",
    "\\text:", "[a,", "&amp,", "x^n,", "`a,", "$x:", "<a,", ":smile:", "10:", "1,",
    # the first character of a word after ". " is written at once, unless it may open a URL
    ". ", ".  ", '." ', ".** ", ".) ", "H", "W", "F", "Http", "https://a.b", "www.c.d", "ftp://e",
    "Www", "Here", '"', "(", "'", "é", "3", "[", "`", "$", "**",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(st.one_of(st.sampled_from(TOKENS + MARKS), st.text(max_size=3)), max_size=50).map(
        "".join
    ),
    seed=st.integers(0, 2**32),
    max_piece=st.integers(1, 6),
)
def test_the_cleaner_writes_the_same_text_for_any_split(
    text: str, seed: int, max_piece: int
) -> None:
    cleaner = StreamingCleaner()
    out = []
    i = 0
    for size in split_points(text, seed, max_piece):
        out.append(cleaner.feed(text[i : i + size]))
        i += size
    assert ("".join(out) + cleaner.finish()).strip() == sanitize(text)
