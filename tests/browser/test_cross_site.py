"""A keyless gateway (``qwen-gateway serve --simulate`` with no key: open on loopback) in a real browser.

A page of another site, open in the same browser, must not be able to use it: its fetches cannot reach the chat
(no CORS preflight passes, and a "simple" text/plain POST is refused before any upstream call), its WebSocket
handshakes are refused, stored objects need a signed link. A page of an origin listed in ``QG_CORS_ORIGINS``
can (which also shows that the attack pages below really run). The gateway's own pages keep working, and the
object links it hands out open.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import _clean_env, _free_port, _stop, _wait_healthy
from .support import QUESTION_WAV, REPO, Gateway, new_context, watch

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.browser


class _Blank(BaseHTTPRequestHandler):
    """Serves an empty HTML page at every path: the other site."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title><p>nothing to see</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def other_site() -> Iterator[int]:
    """The port of a plain web server on 127.0.0.1 (reachable as 127.0.0.1 and as localhost: two origins)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def open_gateway(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path, other_site: int
) -> Iterator[Gateway]:
    """The gateway as a user starts it without keys, with one origin of the other site listed in
    ``QG_CORS_ORIGINS`` (``http://localhost:<port>``; ``http://127.0.0.1:<port>`` stays unlisted)."""
    port = _free_port()
    log_path = artifacts / "gateway-open.log"
    cmd = [
        sys.executable,
        "-m",
        "qwen_gateway",
        "serve",
        "--simulate",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path_factory.mktemp("open-gateway-data")),
        "--env-file",
        "",
        "--log-level",
        "WARNING",
    ]
    env = _clean_env()
    env["QG_CORS_ORIGINS"] = f"http://localhost:{other_site}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    gw = Gateway(base_url=f"http://127.0.0.1:{port}", key="", log_path=log_path, proc=proc)
    try:
        _wait_healthy(gw)
        yield gw
    finally:
        _stop(proc)


@pytest.fixture
def own_context(browser: Browser, open_gateway: Gateway) -> Iterator[BrowserContext]:
    ctx = new_context(browser, open_gateway, None)
    try:
        yield ctx
    finally:
        ctx.close()


#: Run in a page of the other site: everything it might try against the gateway at ``gw``.
ATTEMPTS = """async ({gw, objectPath}) => {
  const ws = gw.replace('http', 'ws');
  const body = JSON.stringify({model: 'qwen-plus', messages: [{role: 'user', content: 'spend my quota'}]});
  const attempt = async (f) => { try { return await f(); } catch (e) { return 'blocked: ' + e.name; } };
  const socket = (path) => new Promise((resolve) => {
    const s = new WebSocket(ws + path);
    s.onmessage = (m) => { resolve('message: ' + m.data); s.close(); };
    s.onclose = (e) => resolve('closed: ' + e.code);
  });
  return {
    // A "simple request": no preflight, the browser sends it whatever the gateway's CORS says.
    simplePost: await attempt(async () => {
      const r = await fetch(gw + '/v1/chat/completions', {method: 'POST', body});
      return 'read: ' + r.status + ' ' + (await r.text());
    }),
    jsonPost: await attempt(async () => {
      const r = await fetch(gw + '/v1/chat/completions',
        {method: 'POST', body, headers: {'Content-Type': 'application/json'}});
      return 'read: ' + r.status + ' ' + (await r.text());
    }),
    object: await attempt(async () => {
      const r = await fetch(gw + objectPath);
      return 'read: ' + r.status;
    }),
    audio: await socket('/v1/chat/audio'),
    vlm: await socket('/v1/chat/vlm'),
  };
}"""


@dataclass
class Wire:
    """What went between the browser and the gateway, from Chromium's network layer (DevTools protocol): also
    the answers a page is not allowed to read, and WebSocket handshakes that failed."""

    #: (method, path, status, response headers) of each HTTP exchange, preflights included
    http: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)
    #: path -> handshake outcome ("101", or Chromium's error message)
    websockets: dict[str, str] = field(default_factory=dict)

    def statuses(self, method: str, prefix: str) -> list[int]:
        return [st for m, path, st, _ in self.http if m == method and path.startswith(prefix)]


def _attempt_from(
    browser: Browser, origin: str, gw: Gateway, object_path: str
) -> tuple[dict[str, str], Wire]:
    """Open a page of ``origin`` and run :data:`ATTEMPTS` against ``gw``: what the page got, and the wire."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        wire = Wire()
        requests: dict[str, tuple[str, str]] = {}
        sockets: dict[str, str] = {}

        def sent(p: dict[str, Any]) -> None:
            url = p["request"]["url"]
            if url.startswith(gw.base_url):
                requests[p["requestId"]] = (p["request"]["method"], url[len(gw.base_url) :])

        seen: set[str] = set()

        def answer(request_id: str, status: int, headers: dict[str, str]) -> None:
            if request_id in requests and request_id not in seen:
                seen.add(request_id)
                method, path = requests[request_id]
                wire.http.append((method, path, status, {k.lower(): v for k, v in headers.items()}))

        def answered(p: dict[str, Any]) -> None:
            answer(p["requestId"], p["statusCode"], p["headers"])

        def received(p: dict[str, Any]) -> None:
            answer(p["requestId"], p["response"]["status"], p["response"]["headers"])

        def ws_path(p: dict[str, Any]) -> str:
            return sockets.get(p["requestId"], "?")

        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", sent)
        # Chromium reports a response through either event (a response the page may not read often only
        # through the first): the first to come counts.
        cdp.on("Network.responseReceivedExtraInfo", answered)
        cdp.on("Network.responseReceived", received)
        cdp.on(
            "Network.webSocketCreated",
            lambda p: sockets.__setitem__(p["requestId"], p["url"].split("/", 3)[3]),
        )
        cdp.on(
            "Network.webSocketHandshakeResponseReceived",
            lambda p: wire.websockets.__setitem__(ws_path(p), str(p["response"]["status"])),
        )
        cdp.on(
            "Network.webSocketFrameError",
            lambda p: wire.websockets.setdefault(ws_path(p), p["errorMessage"]),
        )
        page.goto(f"{origin}/attack.html")
        results: dict[str, str] = page.evaluate(
            ATTEMPTS, {"gw": gw.base_url, "objectPath": object_path}
        )
        # DevTools reports responses on its own schedule, possibly after the page's promise settled: wait until
        # the wire shows both handshakes (at most 10 s).
        for _ in range(200):
            if {"v1/chat/audio", "v1/chat/vlm"} <= wire.websockets.keys():
                break
            page.wait_for_timeout(50)
        page.wait_for_timeout(200)  # and whatever else is still on its way
        return results, wire
    finally:
        ctx.close()


def _stored_object_path(page: Page, gw: Gateway) -> tuple[str, str]:
    """Run a spoken turn on the gateway's own audio page; the signed link of the stored upload
    (``transcription_started.oss_url``) and its bare path."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
    page.goto("/web/audio.html")
    page.locator("[data-upstream-badge]:has-text('SIMULATED')").wait_for()
    page.set_input_files("#file", str(QUESTION_WAV))
    page.wait_for_function(
        "document.querySelector('#status').textContent.startsWith('Done')", timeout=90_000
    )
    events = [json.loads(f) for f in frames if f.startswith("{")]
    names = [next(iter(e)) for e in events]
    assert "audio_complete" in names, names
    (started,) = [e["transcription_started"] for e in events if "transcription_started" in e]
    link = started["oss_url"]
    assert link.startswith(f"{gw.base_url}/objects/audio/") and "token=" in link, link
    return link, link[len(gw.base_url) :].split("?", 1)[0]


def test_another_site_cannot_use_the_open_gateway(
    browser: Browser, own_context: BrowserContext, open_gateway: Gateway, other_site: int
) -> None:
    # The gateway's own page works, without a key: a spoken turn over its WebSocket, and the link it gave.
    page = own_context.new_page()
    problems = watch(page)
    link, object_path = _stored_object_path(page, open_gateway)
    assert page.evaluate("async (u) => (await fetch(u)).status", link) == 200
    assert not problems.errors, problems.report()

    # The other site (an origin not listed in QG_CORS_ORIGINS): the page can neither read nor reach anything.
    results, wire = _attempt_from(
        browser, f"http://127.0.0.1:{other_site}", open_gateway, object_path
    )
    assert results == {
        "simplePost": "blocked: TypeError",
        "jsonPost": "blocked: TypeError",
        "object": "blocked: TypeError",
        "audio": "closed: 1006",  # no event ever came
        "vlm": "closed: 1006",
    }, results
    # What the gateway answered: the text/plain POST refused before any upstream call; the JSON POST never
    # sent (its preflight got no CORS approval); the bare object path refused; both handshakes refused.
    # (About one run in six, Chromium's DevTools reports no event at all for the text/plain POST whose answer the
    # page may not read; the page's own result above still shows it blocked, and the 415 itself is asserted over
    # plain HTTP in tests/api/test_browser_guard.py.)
    assert wire.statuses("POST", "/v1/chat/completions") in ([415], []), wire
    preflights = [h for m, _, _, h in wire.http if m == "OPTIONS"]
    assert len(preflights) == 1 and "access-control-allow-origin" not in preflights[0], wire
    assert wire.statuses("GET", "/objects/") == [403], wire
    assert wire.websockets == {
        "v1/chat/audio": "Error during WebSocket handshake: Unexpected response code: 403",
        "v1/chat/vlm": "Error during WebSocket handshake: Unexpected response code: 403",
    }, wire

    # The same page under the listed origin: what the other site was refused works (so the attempts above
    # really ran), except what needs more than an origin.
    results, wire = _attempt_from(
        browser, f"http://localhost:{other_site}", open_gateway, object_path
    )
    assert results["simplePost"].startswith("read: 415"), results
    assert results["jsonPost"].startswith("read: 200"), results
    assert json.loads(results["jsonPost"].split(" ", 2)[2])["object"] == "chat.completion"
    assert results["object"] == "read: 403", results  # a listed origin still needs the signed link
    assert results["audio"].startswith('message: {"connected"'), results
    assert results["vlm"].startswith('message: {"connected"'), results
    assert wire.websockets == {"v1/chat/audio": "101", "v1/chat/vlm": "101"}, wire


def test_the_chat_page_works_on_the_open_gateway(own_context: BrowserContext) -> None:
    page = own_context.new_page()
    problems = watch(page)
    page.goto("/web/chat.html")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.fill("#prompt", "Hello!")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant[data-finish]")
    assert page.locator(".msg.assistant").first.inner_text().strip()
    assert not page.locator(".msg.error").count()
    assert not problems.errors, problems.report()
