"""Every JSON example of the seed README, extracted from the committed copy in ``seed/``.

The README's JSON blocks carry ``//`` comments (stripped here) and the placeholder ``"base64..."`` where real
base64 goes (replaced by a valid base64 string, since the contract requires base64 there). The two envelope
templates under the audio endpoint's server messages are left out, as the issue says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = Path(__file__).parent / "seed" / "qwen-api-README.md"

#: What replaces the seed's ``"base64..."`` placeholder: base64 of b"RIFF".
BASE64_STAND_IN = "UklGRg=="


@dataclass(frozen=True)
class Example:
    """One example: where it comes from, what it is, and its JSON value."""

    id: str
    kind: str  # chat-request, chat-response, chat-chunk, health, audio-client, audio-server, ...
    value: Any

    @property
    def text(self) -> str:
        return json.dumps(self.value, ensure_ascii=False)


def strip_comments(text: str) -> str:
    """Remove ``//`` comments that are outside JSON strings."""
    out: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _replace_placeholders(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _replace_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_placeholders(v) for v in value]
    return BASE64_STAND_IN if value == "base64..." else value


def _blocks(markdown: str) -> list[tuple[str, str, str, str]]:
    """(section header, bold label, language, body) of every fenced block."""
    blocks = []
    section = label = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section, label = line.lstrip("#").strip(), ""
        elif line.startswith("**"):
            label = line.strip("*: ")
        elif line.startswith("```"):
            lang = line[3:].strip()
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append((section, label, lang, "\n".join(body)))
        i += 1
    return blocks


def _is_template(value: Any) -> bool:
    return isinstance(value, dict) and ("event_type" in value or "message_type" in value)


def load() -> tuple[list[Example], list[Any]]:
    """(the examples, the envelope templates that were left out)."""
    examples: list[Example] = []
    templates: list[Any] = []
    counters: dict[str, int] = {}

    def add(kind: str, value: Any, where: str) -> None:
        counters[kind] = counters.get(kind, 0) + 1
        examples.append(
            Example(f"{kind}#{counters[kind]} ({where})", kind, _replace_placeholders(value))
        )

    for section, label, lang, body in _blocks(SEED.read_text(encoding="utf-8")):
        if "/v1/chat/completions" in section:
            if lang == "json":
                value = json.loads(strip_comments(body))
                add("chat-request" if "messages" in value else "chat-response", value, label)
            else:
                for line in body.splitlines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        add("chat-chunk", json.loads(line[len("data: ") :]), label)
        elif section.startswith("WebSocket") and lang == "json":
            channel = "audio" if "/v1/chat/audio" in section else "vlm"
            direction = "client" if "客户端到服务器" in label else "server"
            value = json.loads(strip_comments(body))
            if _is_template(value):
                templates.append(value)
            else:
                add(f"{channel}-{direction}", value, label)
        elif "/health" in section and lang == "json":
            add("health", json.loads(body), label)
        elif lang == "bash" and "curl" in body:
            match = re.search(r"-d '(\{.*\})'", body, re.S)
            assert match, "the curl example has no -d body"
            add("chat-request", json.loads(match.group(1)), "curl")
    return examples, templates


EXAMPLES, TEMPLATES = load()


def of_kind(kind: str) -> list[Example]:
    return [e for e in EXAMPLES if e.kind == kind]
