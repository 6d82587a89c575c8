"""The web pages in headless Chromium against a real gateway (simulated upstream): chat, audio, VLM, keys.

Each test drives a page the way a person would (type, hold the talk button, pick a file) and reads what the
page shows: the conversation, the transcript and answer, the event inspector, the audio element's state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .support import PICTURE, QUESTION_WAV, Gateway, new_context, watch

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser

#: The seed's audio events, in the order a turn sends them (``tts_started`` may come before or after the first
#: ``chat_chunk``; ``audio_stream`` data interleaves with later chunks).
AUDIO_ORDER = [
    "connected",
    "packet_ack",
    "transcription_started",
    "chat_started",
    "chat_chunk",
    "audio_stream",
    "chat_tts_complete",
    "audio_complete",
]
VLM_ORDER = [
    "connected",
    "packet_ack",
    "transcription_started",
    "vlm_chat_started",
    "vlm_chat_chunk",
    "audio_stream",
    "vlm_chat_tts_complete",
]


def received(page: Page) -> list[str]:
    """The names of the events the page received, in arrival order (from its event inspector)."""
    names: list[str] = page.eval_on_selector_all(
        "#inspector tbody tr[data-dir='in']", "rows => rows.map(r => r.dataset.event)"
    )
    return names


def assert_in_order(names: list[str], expected: list[str]) -> None:
    """Every name of ``expected`` occurs in ``names``, first occurrences in that order."""
    firsts = []
    for name in expected:
        assert name in names, f"{name} never arrived; got {names}"
        firsts.append(names.index(name))
    assert firsts == sorted(firsts), (
        f"events out of order: {list(zip(expected, firsts, strict=True))}"
    )


def hold_to_talk(page: Page, seconds: float) -> None:
    """Press the talk button, keep it pressed until the page has recorded ``seconds`` of audio, release."""
    page.hover("#talk")
    page.mouse.down()
    page.wait_for_function(
        f"Number(document.querySelector('#talk').dataset.seconds || 0) >= {seconds}"
    )
    page.mouse.up()


def audio_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(
        """() => {
          const a = document.querySelector('#player');
          const end = (r) => (r.length ? r.end(r.length - 1) : 0);
          return {currentTime: a.currentTime, buffered: end(a.buffered), played: end(a.played),
                  duration: a.duration, error: a.error && a.error.message, paused: a.paused};
        }"""
    )
    return state


def assert_audio_played(page: Page) -> None:
    """The answer's MP3 was decoded (buffered > 0 s) and played: currentTime advanced past 0.3 s."""
    page.wait_for_function(
        "(() => { const a = document.querySelector('#player');"
        " return a.buffered.length > 0 && a.buffered.end(0) > 0 && a.currentTime > 0.3; })()"
    )
    state = audio_state(page)
    assert state["error"] is None, state
    assert state["buffered"] > 0.3, state
    assert state["played"] > 0.3, state


def latency(page: Page, name: str) -> str:
    return page.inner_text(f"[data-latency='{name}']").strip()


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- index, badge, contract


def test_index_links_to_the_pages_and_shows_the_simulated_badge(
    context: BrowserContext, gateway: Gateway, artifacts: Path
) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto("/web/")
    for name in ("chat", "audio", "vlm", "realtime"):
        assert page.get_attribute(f"#link-{name}", "href") == f"{name}.html"
    badge = page.locator("[data-upstream-badge]")
    badge.wait_for(state="visible")
    assert badge.inner_text() == "SIMULATED"
    page.click("#link-audio")
    page.wait_for_url("**/web/audio.html")
    page.locator("[data-upstream-badge]:has-text('SIMULATED')").wait_for()
    shoot(page, artifacts, "index")
    assert not problems.errors, problems.report()


def test_pages_and_contract_are_served_without_a_key(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        for path in (
            "/web/",
            "/web/chat.html",
            "/web/audio.html",
            "/web/vlm.html",
            "/web/realtime.html",
        ):
            resp = http.get(path)
            assert resp.status_code == 200, path
            assert resp.headers["content-type"].startswith("text/html")
        js = http.get("/web/js/common.js")
        assert js.headers["content-type"].startswith("text/javascript")
        listing = http.get("/schemas/")
        assert listing.status_code == 200
        for name in ("audio.schema.json", "vlm.schema.json", "chat.schema.json", "ts/"):
            assert f'href="{name}"' in listing.text
        schema = http.get("/schemas/audio.schema.json")
        assert schema.headers["content-type"] == "application/json"
        assert schema.json()["$defs"]
        # The API itself still wants the key.
        assert http.get("/v1/models").status_code == 401


# --------------------------------------------------------------------------- chat


def test_chat_turn_streams_into_the_page_and_the_conversation_is_kept(
    context: BrowserContext, artifacts: Path
) -> None:
    page = context.new_page()
    problems = watch(page)
    bodies: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda req: (
            bodies.append(json.loads(req.post_data or "{}"))
            if req.url.endswith("/v1/chat/completions")
            else None
        ),
    )
    page.goto("/web/chat.html")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    models = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert models and all(models), models

    page.fill("#prompt", "Hello! Please introduce yourself.")
    page.press("#prompt", "Enter")
    first = page.locator(".msg.assistant").first
    first.wait_for()
    page.wait_for_selector(".msg.assistant[data-finish]")
    answer = first.inner_text().strip()
    assert answer and answer != "(empty answer)"
    deltas: list[str] = page.eval_on_selector_all(
        "#inspector tbody tr[data-event='chunk'] .d",
        "ds => ds.map(d => d.textContent).filter(t => t.startsWith('\"')).map(t => JSON.parse(t))",
    )
    assert len(deltas) >= 2, "the answer did not stream in pieces"
    streamed = "".join(deltas)
    assert received(page)[-1] == "[DONE]"
    assert latency(page, "first_token").endswith(("ms", "s"))
    assert latency(page, "total").endswith(("ms", "s"))

    page.fill("#prompt", "And what can you do?")
    page.press("#prompt", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant[data-finish]').length === 2")
    assert page.locator(".msg.user").count() == 2
    assert not page.locator(".msg.error").count()
    assert len(bodies) == 2
    second = bodies[1]
    assert second["stream"] is True
    assert second.get("model") in models
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert second["messages"][1]["content"] == streamed
    shoot(page, artifacts, "chat")
    assert not problems.errors, problems.report()


# --------------------------------------------------------------------------- audio


def test_audio_turn_from_the_fake_microphone(context: BrowserContext, artifacts: Path) -> None:
    """A turn spoken into the (fake) microphone: the seed's events in order, the transcript and the answer
    shown, the answer's MP3 decoded and playing, the latencies measured.

    It starts by barging in: an audio file is sent first, and holding the talk button while that answer
    streams interrupts it (the page cancels the turn and ignores its late events); then the spoken turn runs.
    """
    page = context.new_page()
    problems = watch(page)
    page.goto("/web/audio.html")
    page.locator("[data-upstream-badge]:has-text('SIMULATED')").wait_for()

    page.set_input_files("#file", str(QUESTION_WAV))
    page.wait_for_selector("#inspector tr[data-event='audio_stream']", timeout=60_000)
    hold_to_talk(page, 3.0)
    page.wait_for_selector("#inspector tr.turn[data-turn='2']")
    page.wait_for_function(
        "document.querySelector('#status').textContent.startsWith('Done')", timeout=90_000
    )

    turns: list[list[str]] = page.eval_on_selector_all(
        "#inspector tbody tr",
        """rows => { const turns = [[]];
                     for (const r of rows) {
                       if (r.dataset.turn) turns.push([]);
                       else if (r.dataset.dir === 'in' || r.dataset.dir === 'note') turns.at(-1).push(r.dataset.event);
                     }
                     return turns.slice(1); }""",
    )
    assert len(turns) == 2, turns
    first, spoken = turns
    # The file's answer was still streaming when the talk button went down (unless it had already ended).
    if "audio_complete" not in first:
        assert "barge-in" in first, first
    assert "error" not in first and "error" not in spoken, page.inner_text("#error")
    events = [name for name in spoken if not name.endswith("(stale)")]
    assert_in_order(["connected", *events] if "connected" not in events else events, AUDIO_ORDER)
    assert events.index("tts_started") < events.index("audio_stream")
    assert events[-1] == "audio_complete"

    assert page.inner_text("#transcript").strip(), "no transcript shown"
    assert page.inner_text("#answer").strip(), "no answer shown"
    for name in ("upload", "recognition", "first_token", "first_audio", "total"):
        assert latency(page, name) != "–", f"{name} latency not measured"
    assert_audio_played(page)
    shoot(page, artifacts, "audio")
    assert not problems.errors, problems.report()


# --------------------------------------------------------------------------- VLM


def test_vlm_turn_with_an_image_file(context: BrowserContext, artifacts: Path) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto("/web/vlm.html")
    page.locator("[data-upstream-badge]:has-text('SIMULATED')").wait_for()

    page.set_input_files("#image-file", str(PICTURE))
    page.wait_for_selector("#preview:not([hidden])")
    assert int(page.get_attribute("#image-info", "data-bytes") or 0) == PICTURE.stat().st_size
    page.wait_for_function("document.querySelector('#preview').naturalWidth > 0")

    hold_to_talk(page, 3.0)
    page.wait_for_selector("#inspector tr[data-event='vlm_chat_tts_complete']", timeout=60_000)
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('Done')")

    names = received(page)
    assert_in_order(names, VLM_ORDER)
    assert "vlm_complete" in names
    assert "error" not in names, page.inner_text("#error")
    acks = page.eval_on_selector_all(
        "#inspector tbody tr[data-event='packet_ack'] .d",
        "ds => ds.map(d => JSON.parse(d.textContent).type)",
    )
    assert acks[0] == "image" and acks[-1] == "audio", acks
    sent = page.eval_on_selector_all(
        "#inspector tbody tr[data-dir='out']", "rows => rows.map(r => r.dataset.event)"
    )
    assert sent[-1] == "end"
    assert page.inner_text("#transcript").strip()
    assert page.inner_text("#answer").strip()
    assert_audio_played(page)
    shoot(page, artifacts, "vlm")
    assert not problems.errors, problems.report()


def test_vlm_asks_for_an_image_first(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/web/vlm.html")
    page.locator("[data-upstream-badge]").wait_for(state="visible")
    hold_to_talk(page, 0.5)
    page.wait_for_selector("#error:not([hidden])")
    assert "image" in page.inner_text("#error").lower()
    assert not page.locator("#inspector tr[data-dir='out']").count()


# --------------------------------------------------------------------------- keys


def test_wrong_key_shows_a_clear_error(browser: Browser, gateway: Gateway, artifacts: Path) -> None:
    context = new_context(browser, gateway, "sk-wrong")
    try:
        page = context.new_page()
        problems = watch(page)
        page.goto("/web/chat.html")
        # The page asks for the key as soon as the gateway refuses the stored one.
        page.wait_for_selector("#key-dialog[open]")
        assert "Wrong or missing gateway key" in page.inner_text("#key-dialog [data-key-message]")
        page.click("[data-key-cancel]")

        page.fill("#prompt", "Hello?")
        page.press("#prompt", "Enter")
        error = page.locator(".msg.error")
        error.wait_for()
        assert "Wrong or missing gateway key" in error.inner_text()
        assert page.locator(".msg.assistant").count() == 0
        page.click("[data-key-cancel]")
        shoot(page, artifacts, "wrong-key-chat")

        page.goto("/web/audio.html")
        page.wait_for_selector("#key-dialog[open]")
        page.click("[data-key-cancel]")
        hold_to_talk(page, 1.0)
        page.wait_for_selector("#error:not([hidden])")
        assert "Wrong or missing gateway key" in page.inner_text("#error")
        shoot(page, artifacts, "wrong-key-audio")

        # Setting the right key through the dialog makes the page work.
        page.click("[data-key-button]")
        page.fill("#key-dialog input[name=key]", gateway.key)
        page.click("#key-dialog button[type=submit]")
        assert page.evaluate("localStorage.getItem('qwen-gateway.key')") == gateway.key
        assert not problems.errors, problems.report()
    finally:
        context.close()


def test_phone_layout_has_no_horizontal_scroll(
    browser: Browser, gateway: Gateway, artifacts: Path
) -> None:
    context = new_context(
        browser,
        gateway,
        gateway.key,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    try:
        page = context.new_page()
        for name in ("index", "chat", "audio", "vlm"):
            page.goto(f"/web/{'' if name == 'index' else name + '.html'}")
            page.locator("[data-upstream-badge]").wait_for(state="visible")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name}: {overflow}px of horizontal scroll on a phone"
            shoot(page, artifacts, f"phone-{name}")
    finally:
        context.close()


def test_vlm_camera_snapshot_becomes_the_image(context: BrowserContext) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto("/web/vlm.html")
    page.click("#camera-button")
    page.wait_for_function(
        "(() => { const v = document.querySelector('#camera'); return !v.hidden && v.videoWidth > 0; })()"
    )
    page.click("#snap")
    page.wait_for_selector("#preview:not([hidden])")
    page.wait_for_function("document.querySelector('#preview').naturalWidth > 0")
    assert page.inner_text("#image-info").startswith("camera")
    assert int(page.get_attribute("#image-info", "data-bytes") or 0) > 1000
    assert page.locator("#camera").is_hidden()
    assert not problems.errors, problems.report()
