"""What the browser tests share: the test assets, the gateway handle, browser contexts, page watching."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(__file__).resolve().parent / "assets"
QUESTION_WAV = ASSETS / "question.wav"
PICTURE = ASSETS / "house.png"
GATEWAY_KEY = "sk-browser-test-key"
KEY_STORAGE = "qwen-gateway.key"


@dataclass
class Gateway:
    """A running gateway subprocess."""

    base_url: str
    key: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(repr=False)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class PageProblems:
    """What the page complained about (uncaught errors, console errors)."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(["page errors:", *self.errors, "console errors:", *self.console])


def new_context(browser: Browser, gateway: Gateway, key: str | None, **kw: Any) -> BrowserContext:
    """A fresh browser profile on the gateway, with ``key`` (if any) already in local storage."""
    context = browser.new_context(
        base_url=gateway.base_url,
        viewport=kw.pop("viewport", {"width": 1280, "height": 860}),
        **kw,
    )
    context.set_default_timeout(30_000)
    context.grant_permissions(["microphone", "camera"], origin=gateway.base_url)
    if key is not None:
        context.add_init_script(f"localStorage.setItem({KEY_STORAGE!r}, {key!r});")
    return context


def watch(page: Page) -> PageProblems:
    problems = PageProblems()
    page.on("pageerror", lambda exc: problems.errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: problems.console.append(msg.text) if msg.type == "error" else None,
    )
    return problems
