"""The pages' shared ES modules, run in Chromium as the pages load them (served by the gateway at /web/js/)."""

from __future__ import annotations

import base64
import io
import wave
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.browser


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.goto("/web/")
    return page


def test_packets_follow_the_seed_contract(page: Page) -> None:
    packets: list[dict[str, Any]] = page.evaluate(
        """async () => {
          const { packetize } = await import('/web/js/common.js');
          const bytes = new Uint8Array(20000).map((_, i) => i % 251);
          return packetize(bytes, 8192);
        }"""
    )
    assert [(p["seq"], p["total"]) for p in packets] == [(1, 3), (2, 3), (3, 3)]
    decoded = [base64.b64decode(p["data"], validate=True) for p in packets]
    assert [len(d) for d in decoded] == [8192, 8192, 20000 - 2 * 8192]
    assert b"".join(decoded) == bytes(i % 251 for i in range(20000))


def test_an_empty_upload_is_one_empty_packet(page: Page) -> None:
    packets = page.evaluate(
        """async () => (await import('/web/js/common.js')).packetize(new Uint8Array(0), 8192)"""
    )
    assert packets == [{"seq": 1, "total": 1, "data": ""}]


def test_base64_round_trip_of_large_buffers(page: Page) -> None:
    same = page.evaluate(
        """async () => {
          const { toBase64, fromBase64 } = await import('/web/js/common.js');
          const bytes = new Uint8Array(300000).map((_, i) => (i * 7) % 256);
          const back = fromBase64(toBase64(bytes));
          return back.length === bytes.length && back.every((b, i) => b === bytes[i]);
        }"""
    )
    assert same is True


def test_recordings_are_16khz_mono_wav(page: Page) -> None:
    """The WAV the pages upload: a 0.5 s 440 Hz tone, resampled from 48 kHz, read back with Python's wave."""
    data = page.evaluate(
        """async () => {
          const { encodeWav, floatToInt16, resample } = await import('/web/js/media.js');
          const { toBase64 } = await import('/web/js/common.js');
          const src = new Float32Array(24000).map((_, i) => 0.5 * Math.sin(2 * Math.PI * 440 * i / 48000));
          return toBase64(encodeWav(floatToInt16(resample(src, 48000, 16000)), 16000));
        }"""
    )
    with wave.open(io.BytesIO(base64.b64decode(data))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == 8000
        frames = w.readframes(w.getnframes())
    samples = [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, 400, 2)]
    assert max(samples) > 15000 and min(samples) < -15000  # the tone survived at about half scale
    assert max(abs(s) for s in samples) < 16500


def test_events_are_parsed_from_their_single_key(page: Page) -> None:
    events = page.evaluate(
        """async () => {
          const { parseEvent } = await import('/web/js/common.js');
          return [
            parseEvent('{"chat_chunk": {"chunk": "a", "full_response": "a"}}'),
            parseEvent('{"audio_stream": {"event": "finished"}}'),
            parseEvent('not json'),
          ].map(e => [e.name, e.body]);
        }"""
    )
    assert events[0] == ["chat_chunk", {"chunk": "a", "full_response": "a"}]
    assert events[1] == ["audio_stream", {"event": "finished"}]
    assert events[2][0] == "(not json)"


def test_the_key_lives_in_local_storage(page: Page) -> None:
    result = page.evaluate(
        """async () => {
          const m = await import('/web/js/common.js');
          m.setKey('sk-one');
          const stored = [m.getKey(), m.authHeaders().Authorization, new URL(m.wsUrl('/v1/chat/audio')).search];
          m.setKey('');
          return [...stored, m.getKey(), Object.keys(m.authHeaders()).length, m.wsUrl('/v1/chat/vlm')];
        }"""
    )
    assert result[0] == "sk-one"
    assert result[1] == "Bearer sk-one"
    assert result[2] == "?token=sk-one"
    assert result[3] == ""
    assert result[4] == 0
    assert result[5].startswith("ws://127.0.0.1:") and result[5].endswith("/v1/chat/vlm")
