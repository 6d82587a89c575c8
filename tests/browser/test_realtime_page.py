"""The realtime page (``/web/realtime.html``) in headless Chromium.

Chromium's fake microphone plays a WAV made with the simulator's speech synthesiser: speech, 1.5 s of silence,
speech again, then a long silence (Chromium loops the file; the test stops the session after two answers).

- Against the gateway (simulated upstream): two spoken turns found by the server VAD, each with the user's
  transcript, a streamed answer and its audio played on the page's AudioContext; no ``error`` event.
- Page-level, with the WebSocket answered by the test itself (Playwright's ``route_web_socket``): the tool round
  trip (the gateway's simulator runs in the gateway's own process and cannot be scripted from here, so the
  model's tool call is played by the test) and barge-in (playback stops at once, the truncate carries the
  milliseconds actually played, late audio of the cut item is dropped).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import itertools
import json
import re
import threading
import time
import typing
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, ValidationError

from qwen_gateway.simulator import Simulator, SimulatorConfig
from qwen_gateway.simulator.audio import synthesize
from qwen_gateway.voice.vad import SpeechDetector, SpeechStarted, SpeechStopped, VadSettings

from .conftest import CHROMIUM_ARGS
from .support import QUESTION_WAV, Gateway, new_context, watch

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, WebSocketRoute

pytestmark = pytest.mark.browser

WAV_RATE = 16000
FIRST_QUESTION = "今天天气怎么样"  # 1.75 s of speech
SECOND_QUESTION = "现在几点了"  # 1.25 s
GAP_SECONDS = 1.5
TAIL_SECONDS = 12.0
#: How long a page-level wait may take before the test fails (not a measurement: a bound on a hang).
WAIT_S = 30.0
PCM_RATE = 24000
UPSTREAM_KEY = "sk-upstream-browser-test"
SCRIPTED_KEY = "sk-scripted-gateway-key"


def _models(union: Any) -> dict[str, type[BaseModel]]:
    """The official SDK's event models by their ``type``."""
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


#: What the page sends, and what the test plays as the server, must parse as the ``openai`` SDK's models.
CLIENT_EVENTS = _models(RealtimeClientEvent)
SERVER_EVENTS = _models(RealtimeServerEvent)
USAGE = {"type": "duration", "seconds": 1.1}
SESSION = {"type": "realtime", "model": "qwen-plus", "output_modalities": ["audio"]}


def speech_wav(path: Path) -> Path:
    """Speech, a 1.5 s pause, speech again, a long silence: 16 kHz mono 16-bit WAV."""
    silence = bytes(2 * round(WAV_RATE * GAP_SECONDS))
    tail = bytes(2 * round(WAV_RATE * TAIL_SECONDS))
    pcm = (
        bytes(2 * WAV_RATE // 4)
        + synthesize(FIRST_QUESTION, WAV_RATE)
        + silence
        + synthesize(SECOND_QUESTION, WAV_RATE)
        + tail
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(WAV_RATE)
        w.writeframes(pcm)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium whose fake microphone plays the two-question WAV (this module's own browser)."""
    from playwright.sync_api import sync_playwright

    wav = speech_wav(tmp_path_factory.mktemp("realtime-audio") / "two-questions.wav")
    args = [
        f"--use-file-for-fake-audio-capture={wav}" if a.endswith(str(QUESTION_WAV)) else a
        for a in CHROMIUM_ARGS
    ]
    assert any(str(wav) in a for a in args)
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path, args=args, headless=True, timeout=60_000
        )
        try:
            yield b
        finally:
            b.close()


def open_page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/web/realtime.html")
    page.wait_for_selector("body[data-models]")
    return page


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def answers(page: Page) -> list[dict[str, Any]]:
    """The answers the page shows: text, status, and how much of their audio was received and played."""
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#conversation .msg.assistant",
        """els => els.map(e => ({text: e.textContent, status: e.dataset.status || null,
                 item: e.dataset.itemId || null, played: Number(e.dataset.playedMs || 0),
                 audio: Number(e.dataset.audioMs || 0), truncated: e.dataset.truncatedMs ?? null}))""",
    )
    return rows


def user_transcripts(page: Page) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        "#conversation .msg.user[data-done]", "els => els.map(e => e.textContent)"
    )
    return texts


def explain(page: Page) -> str:
    """What the page shows, for a failure message: its error, its answers, its last events."""
    rows = page.eval_on_selector_all(
        "#inspector tbody tr[data-event]",
        "rows => rows.slice(-60).map(r => `${r.dataset.dir} ${r.dataset.event} ${r.dataset.count || ''}`)",
    )
    error = page.inner_text("#error") if page.locator("#error").is_visible() else None
    return (
        f"error: {error}\nanswers: {answers(page)}\nusers: {user_transcripts(page)}\nevents: {rows}"
    )


def wait_until(page: Page, what: str, js: str, timeout_ms: float = 60_000) -> None:
    """Wait for ``js`` to hold in the page (a bound on a hang, not a measurement); fail saying what the page
    shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, timeout=timeout_ms)
    except PlaywrightTimeout:
        pytest.fail(f"{what} never happened\n{explain(page)}", pytrace=False)


def received(page: Page) -> list[str]:
    names: list[str] = page.eval_on_selector_all(
        "#inspector tbody tr[data-dir='in']", "rows => rows.map(r => r.dataset.event)"
    )
    return names


# --------------------------------------------------------------------------- against the gateway


def test_two_spoken_turns_are_heard(context: BrowserContext, artifacts: Path) -> None:
    page = open_page(context)
    problems = watch(page)
    page.click("#session")
    # Two answers finished and each heard (its transcript shown, its audio played on the AudioContext), or an
    # error shown: whichever comes first.
    wait_until(
        page,
        "two answers heard",
        """() => !document.querySelector('#error').hidden ||
                 [...document.querySelectorAll('#conversation .msg.assistant[data-status]')]
                   .filter(e => e.textContent && Number(e.dataset.playedMs || 0) > 0).length >= 2""",
        timeout_ms=90_000,
    )
    assert page.locator("#error").is_hidden(), explain(page)
    page.click("#session")  # stop before the looping WAV asks again
    page.wait_for_selector("#session[aria-pressed='false']")
    shoot(page, artifacts, "realtime")

    names = received(page)
    assert "error" not in names, names
    for name in (
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.done",
    ):
        assert name in names, f"{name} never arrived: {names}"
    assert names.count("input_audio_buffer.speech_started") >= 2, names
    users = user_transcripts(page)
    assert len(users) >= 2 and all(t.strip() for t in users[:2]), users
    heard = [a for a in answers(page) if a["text"] and a["played"] > 0]
    assert len(heard) >= 2, answers(page)
    assert all(a["audio"] >= a["played"] > 0 for a in heard), heard
    # The page sent its microphone as 24 kHz PCM16 appends, after the session.update.
    sent: list[str] = page.eval_on_selector_all(
        "#inspector tbody tr[data-dir='out']", "rows => rows.map(r => r.dataset.event)"
    )
    assert sent[0] == "session.update", sent
    assert "input_audio_buffer.append" in sent, sent
    for latency in ("transcript", "first_audio"):
        assert page.inner_text(f"[data-latency='{latency}']").strip().endswith(("ms", "s"))
    assert not problems.errors, problems.report()


# --------------------------------------------------------------------------- a tool call scripted upstream


@dataclass
class ScriptedGateway:
    """A gateway served in a thread of this process, in front of a simulator the test can script."""

    gateway: Gateway
    sim: Simulator
    loop: asyncio.AbstractEventLoop

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the gateway's event loop (the simulator's state lives there) and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=WAIT_S)


@pytest.fixture(scope="module")
def scripted(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[ScriptedGateway]:
    """The subprocess gateway's simulator cannot be reached from a test, so this test serves its own gateway
    (in a thread, as tests/api does) in front of a simulator whose tool calls it scripts."""
    from qwen_gateway.app import create_app
    from qwen_gateway.config import load_settings
    from qwen_gateway.server import serving
    from qwen_gateway.services import open_services

    started: concurrent.futures.Future[ScriptedGateway] = concurrent.futures.Future()
    data_dir = tmp_path_factory.mktemp("scripted-gateway")

    async def serve(stop: asyncio.Event) -> None:
        config = SimulatorConfig(api_key=UPSTREAM_KEY, tts_realtime_factor=0.2)
        async with Simulator(config, host="127.0.0.1", port=0) as sim:
            base = load_settings(dict(sim.env), dotenv=None, data_dir=data_dir)
            settings = dataclasses.replace(
                base, qwen_api_key=UPSTREAM_KEY, api_keys=(SCRIPTED_KEY,)
            )
            async with open_services(settings) as services:
                app = create_app(services.settings, services)
                async with serving(app, services.settings) as base_url:
                    gw = Gateway(base_url, SCRIPTED_KEY, artifacts / "gateway.log", proc=None)
                    started.set_result(ScriptedGateway(gw, sim, asyncio.get_running_loop()))
                    await stop.wait()

    stop_holder: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def run() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            stop_holder.append((asyncio.get_running_loop(), stop))
            try:
                await serve(stop)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise

        asyncio.run(main())

    thread = threading.Thread(target=run, name="scripted-gateway", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=60)
    finally:
        if stop_holder:
            loop, stop = stop_holder[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


def test_a_tool_call_of_the_model_runs_on_the_page_and_the_answer_goes_on(
    browser: Browser, scripted: ScriptedGateway, artifacts: Path
) -> None:
    """The model (the simulator, scripted) calls ``calculate`` on the first spoken question; the page runs it,
    sends ``function_call_output`` and ``response.create``; the model gets the result and the answer is heard."""
    scripted.call(lambda: scripted.sim.set_tool_call("calculate", '{"expression": "12 * 7"}'))
    context = new_context(browser, scripted.gateway, scripted.gateway.key)
    try:
        page = open_page(context)
        problems = watch(page)
        page.click("#session")
        wait_until(
            page, "the tool call", "() => !!document.querySelector('.msg.tool[data-output]')"
        )
        tool = page.locator(".msg.tool[data-output]")
        assert json.loads(tool.get_attribute("data-output") or "") == {
            "expression": "12 * 7",
            "result": 84,
        }
        # The answer after the tool call is heard (then the WAV's second question may cut it short).
        wait_until(
            page,
            "an answer heard after the tool call",
            """() => { const tool = document.querySelector('.msg.tool');
                 let el = tool.nextElementSibling;
                 for (; el; el = el.nextElementSibling)
                   if (el.matches('.msg.assistant[data-status]') && Number(el.dataset.playedMs) > 0) return true;
                 return !document.querySelector('#error').hidden; }""",
        )
        page.click("#session")
        assert page.locator("#error").is_hidden(), explain(page)
        sent: list[str] = page.eval_on_selector_all(
            "#inspector tbody tr[data-dir='out']", "rows => rows.map(r => r.dataset.event)"
        )
        assert "conversation.item.create" in sent and "response.create" in sent, sent
        assert "response.function_call_arguments.done" in received(page)
        # The model's next request carried the page's result as the tool message of that call.
        requests = scripted.call(lambda: list(scripted.sim.log.chat_requests))
        tool_messages = [
            m
            for r in requests
            for m in r.messages
            if isinstance(m, dict) and m.get("role") == "tool"
        ]
        assert tool_messages, [r.messages for r in requests]
        assert json.loads(tool_messages[0]["content"])["result"] == 84
        shoot(page, artifacts, "realtime-tool-call")
        assert not problems.errors, problems.report()
    finally:
        context.close()


# --------------------------------------------------------------------------- the page alone


class FakeRealtime:
    """The server side of the page's WebSocket, played by the test: records what the page sends (and whether
    each event parses as the ``openai`` SDK's ``RealtimeClientEvent``); what it plays must parse as the SDK's
    ``RealtimeServerEvent``."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sent: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.ws: WebSocketRoute | None = None
        self.url = ""
        page.route_web_socket(re.compile(r".*/v1/realtime(\?.*)?$"), self._connect)

    def _connect(self, ws: WebSocketRoute) -> None:
        self.ws = ws
        self.url = ws.url
        ws.on_message(self._received)
        self.send("session.created", session=SESSION)

    def _received(self, message: str | bytes) -> None:
        event = json.loads(message)
        self.sent.append(event)
        model = CLIENT_EVENTS.get(event.get("type"))
        try:
            if model is None:
                raise ValueError("not an event of the SDK")
            model.model_validate(event)
        except (ValidationError, ValueError) as exc:
            self.invalid.append(f"{event.get('type')}: {exc}")

    def send(self, type_: str, **fields: Any) -> None:
        assert self.ws is not None, "the page did not connect"
        event = {"type": type_, "event_id": f"evt_{time.monotonic_ns()}", **fields}
        SERVER_EVENTS[type_].model_validate(event)
        self.ws.send(json.dumps(event))

    def types(self) -> list[str]:
        return [m.get("type", "") for m in self.sent]

    def wait_for(self, what: str, predicate: Callable[[], bool]) -> None:
        """Let Playwright deliver the page's messages until ``predicate`` holds."""
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"the page never {what}; it sent {self.types()}", pytrace=False)
            self.page.wait_for_timeout(20)

    def wait_sent(self, type_: str, count: int = 1) -> list[dict[str, Any]]:
        self.wait_for(f"sent {count} {type_}", lambda: self.types().count(type_) >= count)
        return [m for m in self.sent if m.get("type") == type_]


def start(page: Page) -> FakeRealtime:
    server = FakeRealtime(page)
    page.click("#session")
    server.wait_sent("session.update")
    server.send("session.updated", session=SESSION)
    return server


def user_turn(server: FakeRealtime, item: str, transcript: str) -> None:
    server.send("input_audio_buffer.speech_started", item_id=item, audio_start_ms=100)
    server.send("input_audio_buffer.speech_stopped", item_id=item, audio_end_ms=1200)
    server.send("input_audio_buffer.committed", item_id=item, previous_item_id=None)
    server.send(
        "conversation.item.input_audio_transcription.completed",
        item_id=item,
        content_index=0,
        transcript=transcript,
        usage=USAGE,
    )


def spoken_answer(
    server: FakeRealtime, response: str, item: str, text: str, seconds: float, done: bool = True
) -> None:
    """A response that says ``text`` with ``seconds`` of audio (24 kHz PCM16 in 100 ms deltas)."""
    server.send(
        "response.created", response={"id": response, "status": "in_progress", "output": []}
    )
    server.send(
        "response.output_item.added",
        response_id=response,
        output_index=0,
        item={
            "id": item,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        },
    )
    server.send(
        "response.output_audio_transcript.delta",
        response_id=response,
        item_id=item,
        output_index=0,
        content_index=0,
        delta=text,
    )
    pcm = synthesize("你" * int(seconds / 0.25), PCM_RATE)
    step = PCM_RATE // 10 * 2
    for at in range(0, len(pcm), step):
        server.send(
            "response.output_audio.delta",
            response_id=response,
            item_id=item,
            output_index=0,
            content_index=0,
            delta=base64.b64encode(pcm[at : at + step]).decode(),
        )
    if done:
        server.send(
            "response.output_audio_transcript.done",
            response_id=response,
            item_id=item,
            output_index=0,
            content_index=0,
            transcript=text,
        )
        server.send("response.done", response={"id": response, "status": "completed", "output": []})


def test_session_update_declares_vad_formats_and_tools(context: BrowserContext) -> None:
    page = open_page(context)
    problems = watch(page)
    server = start(page)
    update = server.sent[0]
    assert update["type"] == "session.update" and update["event_id"]
    session = update["session"]
    audio = session["audio"]
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    vad = audio["input"]["turn_detection"]
    assert vad["type"] == "server_vad"
    assert vad["create_response"] is True and vad["interrupt_response"] is True
    assert [t["name"] for t in session["tools"]] == ["get_time", "calculate"]
    assert all(
        t["type"] == "function" and t["parameters"]["type"] == "object" for t in session["tools"]
    )
    assert "model=" in server.url
    assert "token=" not in server.url  # the key travels as a subprotocol, never in the URL
    # The microphone streams as appends of 16-bit PCM (whole samples).
    appends = server.wait_sent("input_audio_buffer.append", 3)
    for a in appends:
        pcm = base64.b64decode(a["audio"], validate=True)
        assert pcm and len(pcm) % 2 == 0
    # A run of appends shares one inspector row that counts them, instead of a row each.
    counts = page.eval_on_selector_all(
        "#inspector tr[data-event='input_audio_buffer.append']",
        "rows => rows.map(r => Number(r.dataset.count))",
    )
    assert sum(counts) >= 3 and len(counts) < sum(counts), counts
    page.click("#session")
    page.wait_for_selector("#session[aria-pressed='false']")
    assert not server.invalid, server.invalid
    assert not problems.errors, problems.report()


def test_the_microphone_stream_holds_two_turns_for_the_gateway_vad(context: BrowserContext) -> None:
    """The page's appends (Chromium's fake microphone through the page's capture path) are 24 kHz PCM16 in
    which the gateway's own server VAD finds the WAV's two questions."""
    page = open_page(context)
    server = start(page)
    wanted = 2 * PCM_RATE * 7  # 7 s: a loop's speech, gap, speech and a second of its silence
    pcm = bytearray()

    def enough() -> bool:
        while server.sent and len(pcm) < wanted:
            event = server.sent.pop(0)
            if event["type"] == "input_audio_buffer.append":
                pcm.extend(base64.b64decode(event["audio"]))
        return len(pcm) >= wanted

    server.wait_for("streamed 7 s of microphone audio", enough)
    page.click("#session")
    detector = SpeechDetector(VadSettings(), sample_rate=PCM_RATE)
    events = detector.feed(bytes(pcm))
    starts = [e.audio_start_ms for e in events if isinstance(e, SpeechStarted)]
    stops = [e.audio_end_ms for e in events if isinstance(e, SpeechStopped)]
    assert len(starts) >= 2 and len(stops) >= 1, events
    # The two questions are told apart by the 1.5 s pause between them.
    assert starts[1] - stops[0] >= 1000, events


def test_the_key_goes_as_the_browser_subprotocol(context: BrowserContext, gateway: Gateway) -> None:
    page = open_page(context)
    protocols = page.evaluate(
        "async () => (await import('/web/js/realtime.js')).subprotocols(localStorage.getItem('qwen-gateway.key'))"
    )
    assert protocols == ["realtime", f"openai-insecure-api-key.{gateway.key}"]
    assert page.evaluate("async () => (await import('/web/js/realtime.js')).subprotocols('')") == [
        "realtime"
    ]


def test_tool_round_trip_runs_on_the_page(context: BrowserContext, artifacts: Path) -> None:
    page = open_page(context)
    problems = watch(page)
    server = start(page)
    user_turn(server, "item_u1", "What is 12 times 7, and what time is it?")
    server.send(
        "response.created", response={"id": "resp_1", "status": "in_progress", "output": []}
    )
    calls = [
        ("item_f1", "call_1", "calculate", '{"expression": "12 * 7"}'),
        ("item_f2", "call_2", "get_time", "{}"),
    ]
    for index, (item, call, name, args) in enumerate(calls):
        server.send(
            "response.output_item.added",
            response_id="resp_1",
            output_index=index,
            item={
                "id": item,
                "type": "function_call",
                "call_id": call,
                "name": name,
                "arguments": "",
            },
        )
        server.send(
            "response.function_call_arguments.delta",
            response_id="resp_1",
            item_id=item,
            output_index=index,
            call_id=call,
            delta=args,
        )
        server.send(
            "response.function_call_arguments.done",
            response_id="resp_1",
            item_id=item,
            output_index=index,
            call_id=call,
            name=name,
            arguments=args,
        )
        server.send(
            "response.output_item.done",
            response_id="resp_1",
            output_index=index,
            item={
                "id": item,
                "type": "function_call",
                "call_id": call,
                "name": name,
                "arguments": args,
            },
        )
    page.locator(".msg.tool[data-output]").nth(1).wait_for()
    # Nothing goes back while the response that called the tools is still open.
    assert "conversation.item.create" not in server.types()
    server.send("response.done", response={"id": "resp_1", "status": "completed", "output": []})
    server.wait_sent("response.create")
    types = server.types()
    creates = [m for m in server.sent if m["type"] == "conversation.item.create"]
    assert len(creates) == 2, types
    last_create = max(i for i, t in enumerate(types) if t == "conversation.item.create")
    assert types.index("response.create") > last_create, types
    outputs = {c["item"]["call_id"]: c["item"] for c in creates}
    assert all(o["type"] == "function_call_output" for o in outputs.values())
    calc = json.loads(outputs["call_1"]["output"])
    assert calc == {"expression": "12 * 7", "result": 84}
    clock = json.loads(outputs["call_2"]["output"])
    assert set(clock) == {"timezone", "local", "iso"} and clock["timezone"]
    # The answer that continues is spoken and shown.
    spoken_answer(server, "resp_2", "item_a2", "12 times 7 is 84.", seconds=0.5)
    page.wait_for_function(
        "[...document.querySelectorAll('#conversation .msg.assistant[data-status]')]"
        ".some(e => Number(e.dataset.playedMs || 0) > 0)"
    )
    texts = [a["text"] for a in answers(page)]
    assert texts == ["12 times 7 is 84."], answers(page)
    # Each call runs once, though both its arguments.done and its output_item.done arrived.
    assert page.locator(".msg.tool").count() == 2
    assert page.locator("#error").is_hidden()
    shoot(page, artifacts, "realtime-tools")
    assert not server.invalid, server.invalid
    assert not problems.errors, problems.report()


def test_a_tool_error_goes_back_as_the_output(context: BrowserContext) -> None:
    page = open_page(context)
    result = page.evaluate(
        """async () => {
          const { runTool, calculate } = await import('/web/js/realtime-tools.js');
          return {
            bad: JSON.parse(runTool('calculate', '{"expression": "2 +"}')),
            code: JSON.parse(runTool('calculate', '{"expression": "alert(1)"}')),
            notJson: JSON.parse(runTool('calculate', '{expression')),
            unknown: JSON.parse(runTool('launch', '{}')),
            zone: JSON.parse(runTool('get_time', '{"timezone": "Asia/Shanghai"}', new Date(0))),
            badZone: JSON.parse(runTool('get_time', '{"timezone": "Mars/Olympus"}')),
            precedence: calculate('2 + 3 * 4 ^ 2 / (1 - -1) % 7'),
          };
        }"""
    )
    assert set(result["bad"]) == {"error"}
    assert set(result["code"]) == {"error"}
    assert set(result["notJson"]) == {"error"}
    assert "unknown tool" in result["unknown"]["error"]
    assert result["zone"]["iso"] == "1970-01-01T00:00:00.000Z"
    assert "08:00:00" in result["zone"]["local"]
    assert set(result["badZone"]) == {"error"}
    assert result["precedence"] == 2 + (3 * 4**2 / 2) % 7


def test_speaking_over_an_answer_stops_it_and_truncates_to_what_was_heard(
    context: BrowserContext, artifacts: Path
) -> None:
    page = open_page(context)
    problems = watch(page)
    server = start(page)
    user_turn(server, "item_u1", "Tell me a long story.")
    spoken_answer(server, "resp_1", "item_a1", "Once upon a time", seconds=4.0, done=False)
    page.wait_for_function(
        "Number(document.querySelector('.msg.assistant')?.dataset.playedMs || 0) > 300"
    )
    queued = answers(page)[0]["audio"]
    server.send("input_audio_buffer.speech_started", item_id="item_u2", audio_start_ms=5000)
    (truncate,) = server.wait_sent("conversation.item.truncate")
    assert truncate["item_id"] == "item_a1" and truncate["content_index"] == 0
    heard = truncate["audio_end_ms"]
    assert 300 <= heard < queued, (heard, queued)
    # Playback stopped at once: nothing left to play, what counts as heard is what the truncate says.
    assert page.evaluate("document.querySelector('#conversation').dataset.playing") == "0"
    page.wait_for_function(
        f"document.querySelector('.msg.assistant').dataset.truncatedMs === '{heard}'"
    )
    # The cut answer's late audio is dropped; the server's cancel and the next turn follow.
    spoken = answers(page)[0]
    for _ in range(3):
        server.send(
            "response.output_audio.delta",
            response_id="resp_1",
            item_id="item_a1",
            output_index=0,
            content_index=0,
            delta=base64.b64encode(bytes(4800)).decode(),
        )
    server.send("response.done", response={"id": "resp_1", "status": "cancelled", "output": []})
    server.send(
        "conversation.item.truncated", item_id="item_a1", content_index=0, audio_end_ms=heard
    )
    server.send("input_audio_buffer.speech_stopped", item_id="item_u2", audio_end_ms=6000)
    server.send(
        "conversation.item.input_audio_transcription.completed",
        item_id="item_u2",
        content_index=0,
        transcript="Actually, just say hi.",
        usage=USAGE,
    )
    spoken_answer(server, "resp_2", "item_a2", "Hi!", seconds=0.5)
    page.wait_for_function(
        "Number(document.querySelectorAll('.msg.assistant')[1]?.dataset.playedMs || 0) > 0"
    )
    first, second = answers(page)
    assert first["status"] == "cancelled" and first["audio"] == spoken["audio"]
    assert first["played"] == heard and first["truncated"] == str(heard)
    assert second["text"] == "Hi!" and second["status"] == "completed"
    assert user_transcripts(page) == ["Tell me a long story.", "Actually, just say hi."]
    # Only one truncate: the second answer was not interrupted.
    assert server.types().count("conversation.item.truncate") == 1
    shoot(page, artifacts, "realtime-barge-in")
    assert not server.invalid, server.invalid
    assert not problems.errors, problems.report()


def test_an_error_event_is_shown_and_the_session_goes_on(context: BrowserContext) -> None:
    page = open_page(context)
    server = start(page)
    server.send(
        "error",
        error={
            "type": "invalid_request_error",
            "code": "unknown_event",
            "message": "Unknown event type",
            "param": None,
            "event_id": "evt_page_7",
        },
    )
    page.wait_for_selector("#error:not([hidden])")
    text = page.inner_text("#error")
    assert "Unknown event type" in text and "evt_page_7" in text and "unknown_event" in text
    assert page.get_attribute("#session", "aria-pressed") == "true"


def test_a_wrong_key_is_named(browser: Browser, gateway: Gateway) -> None:
    ctx = new_context(browser, gateway, "sk-wrong")
    try:
        page = ctx.new_page()
        page.goto("/web/realtime.html")
        page.wait_for_selector("body[data-models]")
        page.evaluate("document.querySelector('#key-dialog')?.close()")
        page.click("#session")
        page.wait_for_selector("#error:not([hidden])")
        assert "key" in page.inner_text("#error").lower()
        assert page.get_attribute("#session", "aria-pressed") == "false"
    finally:
        ctx.close()


def test_the_player_schedules_chunks_back_to_back(context: BrowserContext) -> None:
    page = open_page(context)
    result = page.evaluate(
        """async () => {
          const { PcmPlayer } = await import('/web/js/pcm-player.js');
          const player = new PcmPlayer(24000);
          await player.open();
          for (let i = 0; i < 5; i++) player.enqueue('item_1', new Int16Array(2400).fill(1000));
          const segments = player.items.get('item_1').segments.map(s => [s.at, s.dur]);
          const queued = player.queuedMs('item_1');
          const playing = player.playing;
          const heard = player.stop();
          player.enqueue('item_1', new Int16Array(2400));  // a cut item's late chunk is dropped
          const after = { queued: player.queuedMs('item_1'), playing: player.playing };
          await player.close();
          return { segments, queued, playing, heard, after, gaps: player.gaps, rate: 24000 };
        }"""
    )
    segments = result["segments"]
    assert len(segments) == 5
    assert all(dur == pytest.approx(0.1) for _, dur in segments)
    # Each chunk starts where the previous one ends: no gap, no overlap.
    for (at, dur), (nxt, _) in itertools.pairwise(segments):
        assert nxt == pytest.approx(at + dur, abs=1e-9)
    assert result["gaps"] == 0
    assert result["queued"] == pytest.approx(500)
    assert result["playing"] is True
    assert result["heard"]["itemId"] == "item_1"
    assert 0 <= result["heard"]["playedMs"] <= 500
    assert result["after"] == {"queued": 500, "playing": False}
