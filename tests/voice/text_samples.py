"""Text samples shared by the cleaner's and the segmenter's tests: realistic answers and generators."""

from __future__ import annotations

import random
import re
import unicodedata

from hypothesis import strategies as st

# --------------------------------------------------------------------------------------------------
# realistic answers, as chat models write them
# --------------------------------------------------------------------------------------------------

ZH_INSTALL = """好的！下面是在 Windows 上安装 **Python 3.12** 的步骤 😊：

## 一、下载安装包

1. 打开官网 [python.org](https://www.python.org/downloads/)，点击「Downloads」。
2. 选择 *Windows installer (64-bit)*，文件大约 25.6 MB。
3. 运行安装程序时，**务必勾选** `Add Python to PATH`！

## 二、验证安装

打开命令提示符，输入：

```bash
python --version
pip --version
```

如果显示 `Python 3.12.1`，说明安装成功 ✅。

> 💡 提示：国内用户可以使用清华镜像 https://pypi.tuna.tsinghua.edu.cn/simple 加速下载。

有问题随时问我～
"""

ZH_INSTALL_SPOKEN = """好的！下面是在 Windows 上安装 Python 3.12 的步骤：
一、下载安装包。
1，打开官网 python.org，点击「Downloads」。
2，选择 Windows installer (64-bit)，文件大约 25.6 MB。
3，运行安装程序时，务必勾选 Add Python to PATH！
二、验证安装。
打开命令提示符，输入：
如果显示 Python 3.12.1，说明安装成功。
提示：国内用户可以使用清华镜像加速下载。
有问题随时问我。"""

ZH_TABLE = """### 三款手机对比 📱

| 型号 | 价格 | 续航 |
|:---|---:|:---:|
| 小米 14 | ¥3,999 | 约 1.5 天 |
| 华为 Mate 60 | ¥5,499 | 约 2 天 |
| iPhone 15 | ¥5,999 | 约 1 天 |

总结：如果预算有限，**小米 14** 性价比最高；追求续航选华为。价格截至 2024-01-01，仅供参考。
"""

ZH_TABLE_SPOKEN = """三款手机对比。
型号，价格，续航。
小米 14，¥3,999，约 1.5 天。
华为 Mate 60，¥5,499，约 2 天。
iPhone 15, ¥5,999，约 1 天。
总结：如果预算有限，小米 14 性价比最高；追求续航选华为。价格截至 2024-01-01，仅供参考。"""

ZH_MATH = r"""这道题用勾股定理：$a^2 + b^2 = c^2$。

已知 $a = 3$，$b = 4$，所以：

$$
c = \sqrt{3^2 + 4^2} = \sqrt{25} = 5
$$

另外，概率 $P = \frac{1}{4}$，也就是 25%。圆周率 \(\pi \approx 3.14\)，温度下降了 -2℃，时间是 10:30。
他说：“这太简单了……”我回答：「没错」。
"""

ZH_MATH_SPOKEN = """这道题用勾股定理：a² + b² = c²。
已知 a = 3，b = 4，所以：
c = √(3² + 4²) = √25 = 5.
另外，概率 P = 1/4，也就是 25%。圆周率 π ≈ 3.14，温度下降了 -2℃，时间是 10:30。
他说：“这太简单了……”我回答：「没错」。"""

EN_COFFEE = """# How to Make a Great Cup of Coffee ☕

Sure! Here's a quick guide, e.g. for a standard 12 oz mug. Dr. Smith (a barista since 2010) swears by it...

## What You'll Need
- **Fresh beans**: about 20 g (roughly 3.5 tbsp)
- A grinder, e.g. a burr grinder
- Water at 93.5°C — not boiling!

## Steps
1. Grind the beans to a medium-fine texture.
2. Heat the water to 195-205°F.
3. Brew for 4:00 minutes, then enjoy 🎉🎉.

> **Note:** According to [this study](https://example.com/coffee?ref=chat&id=42), 50% of people prefer it black. See also www.coffee.org.

That costs about $2.50 per cup vs. $5 at a café. Mr. Jones said, "It's worth it." Happy brewing! 👨‍👩‍👧‍👦
"""

EN_COFFEE_SPOKEN = """How to Make a Great Cup of Coffee.
Sure! Here's a quick guide, e.g. for a standard 12 oz mug. Dr. Smith (a barista since 2010) swears by it...
What You'll Need.
Fresh beans: about 20 g (roughly 3.5 tbsp).
A grinder, e.g. a burr grinder.
Water at 93.5°C — not boiling!
Steps.
1, Grind the beans to a medium-fine texture.
2, Heat the water to 195-205°F.
3, Brew for 4:00 minutes, then enjoy.
Note: According to this study, 50% of people prefer it black. See also.
That costs about $2.50 per cup vs. $5 at a café. Mr. Jones said, "It's worth it." Happy brewing!"""

EN_CODE = '''Here's a Python function that computes the factorial:

```python
def factorial(n: int) -> int:
    """Return n!"""
    return 1 if n <= 1 else n * factorial(n - 1)
```

Call it with `factorial(5)` to get **120**. The time complexity is O(n), and for n = 1,000 it still runs in under 1 ms.
Edge cases:
* `n = 0` returns 1
* Negative numbers, e.g. -2, are not supported ~~yet~~.
'''

EN_CODE_SPOKEN = """Here's a Python function that computes the factorial:
Call it with factorial(5) to get 120. The time complexity is O(n), and for n = 1,000 it still runs in under 1 ms.
Edge cases:
n = 0 returns 1.
Negative numbers, e.g. -2, are not supported yet."""

ANSWERS = {
    "zh_install": (ZH_INSTALL, ZH_INSTALL_SPOKEN),
    "zh_table": (ZH_TABLE, ZH_TABLE_SPOKEN),
    "zh_math": (ZH_MATH, ZH_MATH_SPOKEN),
    "en_coffee": (EN_COFFEE, EN_COFFEE_SPOKEN),
    "en_code": (EN_CODE, EN_CODE_SPOKEN),
}

#: What must never reach TTS.
UNSPEAKABLE = re.compile(
    r"[*#`|\[\]{}<>\\^_~]|https?:|www\.|```|\$\$|[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]"
)


def spoken(text: str) -> list[str]:
    """The letters and digits of ``text``, in order (compatibility forms folded: ² is 2)."""
    return [c for c in unicodedata.normalize("NFKC", text) if c.isalnum()]


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(c in it for c in needle)


#: Plain text: no markdown, URL or LaTeX can be formed from it (no 'w', 'h', '/', '\\', '$' ...).
PLAIN = st.lists(
    st.sampled_from(
        [
            *list("abcdegxyzABCXYZ0123456789 你好世界中文。，！？、；：.,!?;:'\"“”「」()-%…\n"),
            "😀",
            "👨\u200d👩\u200d👧",
            "🇨🇳",
            "1️⃣",
            "✅",
            "©",
            "\t",
        ]
    ),
    max_size=120,
).map("".join)

#: Markdown-ish text: fragments of every construct, mixed with anything.
TOKENS = [
    "**", "*", "_", "__", "~~", "`", "```", "\n```\n", "```py\n", "#", "## ", "\n- ", "\n1. ", "\n> ",
    "[", "](", ")", "]", "![", "|", "\n| a | b |\n", "\n|---|---|\n", "$", "$$", "\n$$\n", "^", "{", "}",
    "<", ">", "<br>", "</b>", "&amp;", "&", "->", "=>", "<=", "---", "http://a.b/c?d=1 ", "https://x.yz",
    "www.q.com", "😀", "👨\u200d👩\u200d👧", "🇨🇳", "3.14", "1,000", "50%", "-2", "10:30", "e.g. ",
    "Dr. ", "...", "……", "。", "，", "!", "?", ".", " ", "\n", "\n\n", "中文", "word", "X", "9",
]  # fmt: skip
MARKDOWN = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=40).map(
    "".join
)
MARKDOWN_NO_BACKSLASH = MARKDOWN.map(lambda s: s.replace("\\", ""))


def split_points(text: str, seed: int, max_piece: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    total = 0
    while total < len(text):
        n = rng.randint(1, max_piece)
        sizes.append(n)
        total += n
    return sizes or [1]
