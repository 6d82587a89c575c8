"""The simulator's built-in replies and the tokenizer that streams them.

Replies look like real LLM output — markdown headings, lists, **bold**, a table, a code block, emoji, URLs, numbers
such as 3.14, 1,000 and 50% — so a gateway's text sanitiser and sentence splitter meet what Qwen really sends.
The choice is deterministic: the same prompt always gets the same reply.
"""

from __future__ import annotations

import functools
import re
import zlib

__all__ = ["count_tokens", "pick_reasoning", "pick_reply", "tokenize"]

TEXT_ZH: tuple[str, ...] = (
    "## 你好！👋\n\n"
    "我是 qwen-gateway 内置的 **DashScope 模拟器**，在没有配置 API key 时代替通义千问回答。我可以帮你：\n\n"
    "1. 回答问题、解释概念；\n"
    "2. 写作与翻译，例如把 1,000 字的文章压缩成 3 句话；\n"
    "3. 编写和调试代码。\n\n"
    "更多信息请访问 https://tongyi.aliyun.com 。有什么我可以帮你的吗？😊",
    "### 常见数学常数\n\n"
    "| 名称 | 符号 | 近似值 |\n"
    "|------|------|--------|\n"
    "| 圆周率 | π | 3.14 |\n"
    "| 自然常数 | e | 2.718 |\n\n"
    "**小贴士**：圆的面积公式是 S = πr²。半径为 2 米的圆，面积约为 12.56 平方米。"
    "据统计，大约 50% 的同学第一次会把直径当成半径 📐！",
    "当然可以！下面是一个用 Python 计算斐波那契数列的例子：\n\n"
    "```python\n"
    "def fib(n: int) -> int:\n"
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n"
    "```\n\n"
    "- 时间复杂度：**O(n)**\n"
    "- 空间复杂度：O(1)\n\n"
    "调用 `fib(10)` 会返回 55。🚀 参考文档：https://docs.python.org/zh-cn/3/tutorial/",
    "好的，没问题！今天杭州晴，气温 18~25°C，湿度约 50%，很适合去西湖边散步 🌤️。",
)

TEXT_EN: tuple[str, ...] = (
    "# Hello! 👋\n\n"
    "I'm the **DashScope simulator** built into qwen-gateway, answering in Qwen's place because no API key is set. Here's what I can do:\n\n"
    "- Answer questions and explain ideas\n"
    "- Summarize long texts (say, 1,000 words into 3 sentences)\n"
    "- Write and review code\n\n"
    "Learn more at https://qwenlm.github.io/. How can I help you today? 😊",
    "## Quick comparison\n\n"
    "| Plan | Price | Discount |\n"
    "|------|-------|----------|\n"
    "| Basic | $9.99 | 0% |\n"
    "| Pro | $19.99 | 50% |\n\n"
    "**Note:** π is roughly 3.14, and 1,000 ms make one second. ✅",
    "Sure! Here's a small JavaScript function:\n\n"
    "```js\n"
    "function greet(name) {\n"
    "  return `Hello, ${name}!`;\n"
    "}\n"
    "```\n\n"
    "1. Save it as `greet.js`.\n"
    "2. Run it with *Node.js* 18 or later.\n\n"
    "See https://developer.mozilla.org/ for details. 🚀",
    "Sure thing! It's 25°C and sunny in Hangzhou today ☀️ — perfect for a walk by West Lake.",
)

VISION_ZH: tuple[str, ...] = (
    "## 图片描述\n\n"
    "图中是一只**金毛犬** 🐕 坐在草地上，旁边有一个穿红色外套的小女孩。\n\n"
    "- 背景：蓝天和几棵树；\n"
    "- 光线：午后的阳光，大约 50% 的画面处于阴影中。\n\n"
    "整体氛围温馨、愉快。",
    "这张图片里有一张桌子，上面放着 3 本书和一杯咖啡 ☕。书名看起来是《三体》，旁边的便签写着“明天 9:30 开会”。",
)

VISION_EN: tuple[str, ...] = (
    "## What I see\n\n"
    "A **golden retriever** 🐕 is sitting on the grass next to a little girl in a red coat.\n\n"
    "- Background: blue sky and a few trees\n"
    "- Lighting: afternoon sun, with about 50% of the frame in shade\n\n"
    "The mood is warm and cheerful.",
    'The picture shows a desk with 3 books and a cup of coffee ☕. A sticky note says "Meeting at 9:30 tomorrow".',
)

REASONING_ZH = (
    "用户在问一个问题。我需要先弄清楚他真正想知道什么，"
    "然后给出清晰、有条理的回答，最好配上列表和一个例子。"
)
REASONING_EN = (
    "The user is asking a question. I should work out what they really need, "
    "then give a clear, well-structured answer with a short list and an example."
)

_POOLS = {
    (False, True): TEXT_ZH,
    (False, False): TEXT_EN,
    (True, True): VISION_ZH,
    (True, False): VISION_EN,
}
_HAS_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def _key(prompt: str) -> int:
    return zlib.crc32(prompt.encode("utf-8"))


def pick_reply(prompt: str, *, vision: bool = False, index: int = 0) -> str:
    """The corpus reply for ``prompt`` (Chinese when the prompt has Chinese); ``index`` varies it for ``n``."""
    chinese = bool(_HAS_CJK.search(prompt))
    pool = _POOLS[(vision, chinese)]
    return pool[(_key(prompt) + index) % len(pool)]


def pick_reasoning(prompt: str) -> str:
    """The ``reasoning_content`` streamed before the answer when thinking is on."""
    return REASONING_ZH if _HAS_CJK.search(prompt) else REASONING_EN


_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
    r"|[ \t]*[A-Za-z\u00c0-\u024f]+(?:'[A-Za-z]+)?"
    r"|[ \t]*[0-9]+"
    r"|\n+"
    r"|[ \t]+"
    r"|(?:[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF]"
    r"[\uFE0F\u200D\U0001F3FB-\U0001F3FF]*)+"
    r"|.",
    re.S,
)


@functools.lru_cache(maxsize=256)
def tokenize(text: str) -> tuple[str, ...]:
    """Split ``text`` into LLM-like tokens (a Chinese character, a word with its leading space, a digit run,
    an emoji cluster, one symbol). Joining the tokens gives ``text`` back."""
    return tuple(m.group() for m in _TOKEN.finditer(text))


def count_tokens(text: str) -> int:
    """Token count of ``text`` (for usage figures)."""
    return len(tokenize(text)) if len(text) < 4096 else len(_TOKEN.findall(text))
